"""What a node checks before it starts anything, so that a mistake in how it was started is one
line and exit status 2 within seconds, not a traceback once the host, the DHT and the model are up.

    check_before_start(config) -> device    the model, the data, whether they fit, the device
The addresses are checked by ``node.network.start_host`` (with hivemind's multiaddr parser), the
metrics port where ``node.runner`` binds it first thing, the run's settings against the swarm's by
``node.agreement`` once the swarm answers.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from node.errors import NodeError
from node.sections import NodeConfig
from node.trainer import check_precision, pick_device
from swarm.data.corpus import DataError, check_sources
from swarm.models.build import ModelError, check_fits, resolve_model


def check_before_start(config: NodeConfig) -> torch.device:
    """The device to train on, once the model and data this node was given are known to work.

    A joiner adopts the run's model, data and sequence length, so only what it set itself is
    checked here (it must match the run's anyway); the node starting the run checks its defaults too.
    """
    run = config.run
    values = run.explicit() if config.network.peers else asdict(run.resolved())
    try:
        if "data" in values:
            check_sources(values["data"])
        if "model" in values:
            source = resolve_model(values["model"])
            if "seq_len" in values:
                check_fits(source, seq_len=values["seq_len"])
    except DataError as e:
        raise NodeError(f"--data {e}") from None
    except ModelError as e:
        raise NodeError(str(e)) from None
    device = pick_device(config.training.device)
    check_precision(config.training.precision, device)
    return device
