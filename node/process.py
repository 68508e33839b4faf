"""Process set-up of a node: malloc arenas, the GPU memory cap, logging, and the signals a user sends.

SIGINT, SIGTERM   stop after the current step (a second one leaves at once)
SIGUSR1, SIGUSR2  pause and resume local training (``swarm-node pause`` / ``resume``)
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable

import torch

from node.sections import NodeConfig
from swarm.metrics import NodeMetrics

logger = logging.getLogger("swarm.node")

MALLOC_ARENAS = 2
M_ARENA_MAX = -8
"""mallopt's parameter number for the arena cap (glibc malloc.h)."""
EXIT_ON_SECOND_SIGNAL = 130
"""The exit status of a node told twice to stop (128 + SIGINT, as a shell reports it)."""
NOISY_LOGGERS = ("hivemind", "transformers")
"""Libraries whose INFO lines drown the node's own: warnings and above only."""


def limit_malloc_arenas(count: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (M_ARENA_MAX). glibc gives threads their own arenas, up to 8 per
    core, and each keeps what it once held: in the soak, every long-lived node's main process took
    one ~150 MB step at a random time and kept it. A node's threads (training, the round loop's
    helpers, metrics, the reporter) do not need separate arenas. False where it does not apply."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        return bool(ctypes.CDLL(name).mallopt(M_ARENA_MAX, count))
    except (OSError, AttributeError):
        return False


def cap_gpu_memory(device: torch.device, gigabytes: float | None) -> None:
    """Cap torch's allocator on ``device`` at ``gigabytes`` (the micro-batch search then fits under it)."""
    if gigabytes is None:
        return
    if device.type != "cuda":
        logger.info("--gpu-memory-gb %.1f has no effect: training on %s", gigabytes, device)
        return
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, gigabytes * 1e9 / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    logger.info("GPU memory capped at %.1f GB of %.1f GB", fraction * total / 1e9, total / 1e9)


def set_up_logging(config: NodeConfig) -> None:
    logging.basicConfig(
        level="DEBUG" if config.output.verbose else config.output.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


class Controls:
    """What the user's signals set, read by the event loop and by the training thread."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.stop_thread = threading.Event()
        self.paused = threading.Event()
        """Set by SIGUSR1 (``swarm-node pause``), cleared by SIGUSR2: no local steps meanwhile; the
        node stays a member of the rounds (owner of its shards, its unsent work still goes out)."""
        self._on_stop: list[Callable[[], None]] = []

    def on_stop(self, hook: Callable[[], None]) -> None:
        """Also call ``hook`` when asked to stop (the averager hurries a round still forming)."""
        self._on_stop.append(hook)

    def request_stop(self) -> None:
        self.stop.set()
        self.stop_thread.set()
        for hook in self._on_stop:
            hook()


def handle_signals(controls: Controls, metrics: NodeMetrics) -> None:
    """Install the handlers of SIGINT/SIGTERM (a graceful stop) and SIGUSR1/SIGUSR2 (pause, resume)
    on the running loop."""
    loop = asyncio.get_running_loop()

    def graceful() -> None:
        if controls.stop.is_set():
            logger.warning("second signal: leaving now")
            os._exit(EXIT_ON_SECOND_SIGNAL)
        logger.info("stopping after the current step (signal again to leave at once)")
        controls.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, graceful)

    def pause(paused: bool) -> None:
        if paused == controls.paused.is_set():
            return
        if paused:
            controls.paused.set()
            logger.info("paused: no local training until resumed; still a member of the rounds")
        else:
            controls.paused.clear()
            logger.info("resumed local training")
        metrics.paused.set(1 if paused else 0)

    loop.add_signal_handler(signal.SIGUSR1, pause, True)
    loop.add_signal_handler(signal.SIGUSR2, pause, False)
