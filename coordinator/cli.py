"""``swarm-coordinator serve``: the coordinator process (gRPC API, HTTP metrics and dashboard, SQLite).

Imports neither torch nor hivemind. SIGINT/SIGTERM stop it gracefully: the gRPC server refuses new
calls and finishes running ones, and the store is closed. Being killed outright loses nothing it
acknowledged (see ``coordinator.store``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from coordinator.ports import PortInUseError

if TYPE_CHECKING:
    from coordinator.core import ServedRun

logger = logging.getLogger("swarm.coordinator")

EXIT_USAGE = 2
"""A mistake in how the coordinator was started (a setting out of range, a port in use): starting it
again the same way fails the same way. argparse's own status; the systemd unit does not restart on
it (``RestartPreventExitStatus=2``)."""
PORT_FLAGS = {"gRPC": "--grpc-port", "HTTP": "--http-port"}
"""The flag that set each server's port (``PortInUseError.server``)."""

RUNS_ENV = "SWARM_RUN"
"""Where ``--run`` is read from when none is given (containers and units set it)."""
RETENTION_EVERY_S = 60.0
"""How often raw reports past the retention window are folded: the window is at least a minute."""


@dataclass(kw_only=True)
class ServeConfig:
    db: Path
    """SQLite file of the record (created if missing)."""
    runs: tuple[str, ...] = ()
    """The runs served: NAME.PIN (pinned to its creator), NAME.PIN=OWNER_KEY for a closed run."""
    rate_per_address: float = 50.0
    """Writes per second one source address may make (bursts of 10 s of it)."""
    rate_per_run: float = 2000.0
    """Writes per second into one run, all addresses together (bursts of 5 s of it)."""
    max_checkpoint_gb: float = 64.0
    """Checkpoints larger than this (GiB) are refused when announced, and never archived."""
    host: str = "0.0.0.0"
    """Address both servers listen on."""
    grpc_port: int = 50051
    """gRPC port (0: pick a free one)."""
    http_port: int = 9400
    """HTTP port of /metrics, /sd and the dashboard (0: pick a free one)."""
    archive: Path | None = None
    """Download every announced checkpoint here and serve it to the swarm (needs --peer)."""
    peers: tuple[str, ...] = ()
    """Multiaddrs of swarm nodes the archive talks to."""
    archive_keep: int = 3
    """Archived checkpoints kept per run (the newest)."""
    archive_listen: str = "/ip4/0.0.0.0/tcp/31338"
    """Where the archive serves checkpoints to the swarm (libp2p, TCP)."""
    archive_announce: tuple[str, ...] = ()
    """Public multiaddrs of the archive (without /p2p/), when it sits behind a port forward."""
    raw_window_s: float = 3600.0
    """Keep raw round reports this long, then fold them into per-minute rows."""
    downsampled_window_s: float = 30 * 86400.0
    """Keep per-minute rows this long."""
    status_file: Path | None = None
    """Write the real ports here as JSON once serving (tests and scripts read it)."""
    retention_every_s: float = RETENTION_EVERY_S
    """How often the retention pass runs."""
    served: tuple[ServedRun, ...] = field(init=False, default=())
    """``runs``, parsed."""

    @property
    def max_checkpoint_bytes(self) -> int:
        return int(self.max_checkpoint_gb * 2**30)

    def __post_init__(self) -> None:
        from coordinator.core import ServedRun

        if not self.runs:
            raise ValueError(
                f"name the runs to serve: --run NAME.PIN (or ${RUNS_ENV}); `swarm-node run-id NAME --identity"
                " KEY` prints the id of the run that the node with KEY starts"
            )
        self.served = tuple(ServedRun.parse(text) for text in self.runs)
        if not 0 < self.max_checkpoint_gb <= 1 << 20:
            raise ValueError("--max-checkpoint-gb must be in (0, 1048576]")
        if not (self.rate_per_address > 0 and self.rate_per_run > 0):
            raise ValueError("--rate-per-address and --rate-per-run must be positive")
        if self.retention_every_s <= 0:
            raise ValueError("the retention interval must be positive")
        for name in ("grpc_port", "http_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name} must be in [0, 65535]")
        if self.archive is not None and not self.peers:
            raise ValueError("--archive needs at least one --peer to download checkpoints from")
        if self.archive_keep < 1:
            raise ValueError("--archive-keep must be at least 1")


def serve(config: ServeConfig, stop: threading.Event | None = None) -> None:
    import json
    import sqlite3

    from coordinator.archive import Archiver
    from coordinator.archive_host import ArchiveHost
    from coordinator.core import Coordinator, Limits
    from coordinator.limits import Rate
    from coordinator.metrics import CoordinatorMetrics
    from coordinator.service import GrpcServer
    from coordinator.store import Retention, Store
    from coordinator.web import HttpServer

    stop = stop or threading.Event()
    store = Store(
        config.db,
        Retention(raw_window_s=config.raw_window_s, downsampled_window_s=config.downsampled_window_s),
    )
    grpc_server = http_server = archiver = archive_host = None
    serving = False
    try:
        metrics = CoordinatorMetrics(store)
        if config.archive is not None:
            archiver = Archiver(
                config.archive, config.peers, store, metrics, keep=config.archive_keep,
                max_bytes=config.max_checkpoint_bytes,
            )  # fmt: skip
            archiver.start()
            archive_host = ArchiveHost(
                store, config.archive, listen=config.archive_listen, announce=config.archive_announce
            )
            archive_host.start()
            for run in config.served:  # what a previous life of the coordinator did not finish
                archiver.submit(run.run_id)
        limits = Limits(
            per_address=Rate(rate=config.rate_per_address, burst=10 * config.rate_per_address),
            per_run=Rate(rate=config.rate_per_run, burst=5 * config.rate_per_run),
            max_checkpoint_bytes=config.max_checkpoint_bytes,
        )
        core = Coordinator(
            store, runs=config.served, limits=limits,
            on_checkpoint=archiver.submit if archiver is not None else None,
            on_reject=lambda reason: metrics.rejected.labels(reason=reason).inc(),
        )  # fmt: skip
        grpc_server = GrpcServer(
            core, metrics, host=config.host, port=config.grpc_port,
            archive_pointers=archive_host.wire_pointers if archive_host is not None else None,
        )  # fmt: skip
        http_server = HttpServer(core, metrics, host=config.host, port=config.http_port)
        grpc_server.start()
        http_server.start()
        serving = True
        shown = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
        logger.info(
            "coordinator serving: gRPC %s:%d, dashboard http://%s:%d/, metrics /metrics, service discovery /sd;"
            " record in %s",
            config.host, grpc_server.port, shown, http_server.port, config.db,
        )  # fmt: skip
        if config.status_file is not None:
            tmp = config.status_file.with_suffix(".tmp")
            status: dict[str, object] = {"grpc_port": grpc_server.port, "http_port": http_server.port}
            if archive_host is not None:
                status["archive_maddrs"] = [f"{a}/p2p/{archive_host.peer_name}" for a in archive_host.addrs]
            tmp.write_text(json.dumps(status))
            tmp.replace(config.status_file)
        while not stop.wait(config.retention_every_s):
            try:
                folded = store.apply_retention()
            # A row the store cannot fold (one written before reports were bounded) must not stop
            # the server, nor stop it again after every restart: the raw rows stay, and are served.
            except sqlite3.Error as e:
                logger.error("retention pass failed, trying again in %.0f s: %s", config.retention_every_s, e)
                continue
            if folded:
                logger.info("retention: folded %d raw reports into per-minute rows", folded)
    finally:
        if serving:  # a coordinator that never served stops with its one line of error alone
            logger.info("coordinator stopping")
        if grpc_server is not None:
            grpc_server.stop()
        if http_server is not None:
            http_server.stop()
        if archiver is not None:
            archiver.stop()
        if archive_host is not None:
            archive_host.stop()
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="swarm-coordinator",
        description="The run's record of metrics and checkpoints: a gRPC API, a dashboard, /metrics, SQLite.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser(
        "serve",
        help="run the coordinator",
        description="Serve the gRPC API, the dashboard with /metrics and /sd over HTTP, and the SQLite record.",
    )
    s.add_argument("--db", type=Path, required=True, help="SQLite file of the record (created if missing)")
    s.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="NAME.PIN[=OWNER_KEY]",
        help="a run to serve (repeatable; writes in any other are refused): its id as `swarm-node run-id`"
        " and `swarm-node join` print it (NAME.PIN, or NAME@PIN), pinned to its creator; =OWNER_KEY (hex)"
        f" for a closed run. Default: the runs in ${RUNS_ENV} (separated by spaces or commas)",
    )
    s.add_argument(
        "--rate-per-address",
        type=float,
        default=50.0,
        help="writes per second one source address may make (default 50)",
    )
    s.add_argument(
        "--rate-per-run", type=float, default=2000.0, help="writes per second into one run (default 2000)"
    )
    s.add_argument(
        "--max-checkpoint-gb",
        type=float,
        default=64.0,
        help="refuse announcements of checkpoints larger than this, and archive none (default 64 GiB)",
    )
    s.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    s.add_argument("--grpc-port", type=int, default=50051, help="gRPC port (default 50051; 0 picks one)")
    s.add_argument("--http-port", type=int, default=9400, help="HTTP port (default 9400; 0 picks one)")
    s.add_argument("--archive", type=Path, help="keep a copy of every announced checkpoint here and serve it")
    s.add_argument(
        "--archive-listen",
        default="/ip4/0.0.0.0/tcp/31338",
        help="where the archive serves checkpoints (libp2p)",
    )
    s.add_argument("--archive-announce", action="append", default=[], help="public multiaddr of the archive")
    s.add_argument("--peer", action="append", default=[], help="multiaddr of a swarm node (repeatable)")
    s.add_argument(
        "--archive-keep", type=int, default=3, help="archived checkpoints kept per run (default 3)"
    )
    s.add_argument(
        "--raw-window-s", type=float, default=3600.0, help="keep raw reports this long (default 1 h)"
    )
    s.add_argument(
        "--downsampled-window-s",
        type=float,
        default=30 * 86400.0,
        help="keep per-minute rows (default 30 days)",
    )
    s.add_argument("--status-file", type=Path, help="write the real ports here as JSON once serving")
    s.add_argument(
        "--retention-every-s",
        type=float,
        default=RETENTION_EVERY_S,
        help="how often raw reports past their window are folded (default 60)",
    )
    s.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        runs = args.run or os.environ.get(RUNS_ENV, "").replace(",", " ").split()
        config = ServeConfig(
            db=args.db, runs=tuple(runs), rate_per_address=args.rate_per_address,
            rate_per_run=args.rate_per_run, max_checkpoint_gb=args.max_checkpoint_gb, host=args.host, grpc_port=args.grpc_port, http_port=args.http_port,
            archive=args.archive, peers=tuple(args.peer), archive_keep=args.archive_keep,
            archive_listen=args.archive_listen, archive_announce=tuple(args.archive_announce),
            raw_window_s=args.raw_window_s,
            downsampled_window_s=args.downsampled_window_s, status_file=args.status_file,
            retention_every_s=args.retention_every_s,
        )  # fmt: skip
    except ValueError as e:
        print(f"swarm-coordinator: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve(config, stop)
    except PortInUseError as e:
        print(f"swarm-coordinator: error: port {e.port} is in use ({PORT_FLAGS[e.server]})", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"swarm-coordinator: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
