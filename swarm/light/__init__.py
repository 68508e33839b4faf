"""The light client: pull checkpoints and read a swarm's status with py-libp2p, no torch, no hivemind."""
