"""The coordinator (``swarm-coordinator``): tracks checkpoints and metrics; no torch, no hivemind.

An empty shell for now: its gRPC service, SQLite store and dashboard come with the coordinator issue.
"""
