"""The coordinator's HTTP face: Prometheus metrics, service discovery, the dashboard and its JSON.

- ``/metrics``: the coordinator's registry (``coordinator.metrics``).
- ``/sd``: Prometheus HTTP service discovery: one target group per run, listing the metrics
  endpoints of the online peers: reported in the last minute and did not say they left
  (``deploy/prometheus.yml`` uses it).
- ``/``: the dashboard (one self-contained page, no CDN); ``/api/...``: the JSON it reads.
- ``/healthz``: 200 while the store answers.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import threading
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlparse

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from coordinator.core import Coordinator, CoordinatorError, NotFound
from coordinator.metrics import CoordinatorMetrics
from coordinator.ports import PortInUseError
from coordinator.writes import served_target

logger = logging.getLogger("swarm.coordinator")


def _clean(value: Any) -> Any:
    """JSON has no NaN: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class HttpServer:
    """A threaded HTTP server on its own thread; ``port`` is the real one (pass 0 to pick). Binds
    when built: a port another process holds raises ``PortInUseError``."""

    def __init__(
        self, core: Coordinator, metrics: CoordinatorMetrics, *, host: str = "0.0.0.0", port: int = 0
    ):
        self.core = core
        self.metrics = metrics
        self._dashboard = resources.files("coordinator").joinpath("dashboard.html").read_bytes()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer._get(self)

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("http %s", format % args)

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise PortInUseError(port, "HTTP") from None
            raise
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, forever if it never ran
            self._server.shutdown()
        self._server.server_close()

    # --- routes ---------------------------------------------------------------------------------

    def _get(self, request: BaseHTTPRequestHandler) -> None:
        url = urlparse(request.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path == "/metrics":
                return _send(
                    request, HTTPStatus.OK, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST
                )
            if url.path == "/sd":
                return _json(request, self.service_discovery())
            if url.path in ("/", "/index.html"):
                return _send(request, HTTPStatus.OK, self._dashboard, "text/html; charset=utf-8")
            if url.path == "/healthz":
                self.core.store.runs()
                return _send(request, HTTPStatus.OK, b"ok\n", "text/plain")
            if url.path == "/api/runs":
                return _json(request, self.core.store.runs())
            run_id = query.get("run", "")
            if url.path == "/api/run":
                return _json(request, asdict(self.core.run(run_id)))
            if url.path == "/api/series":
                since = float(query.get("since", "0"))
                return _json(request, [asdict(p) for p in self.core.series(run_id, since)])
            if url.path == "/api/checkpoints":
                return _json(request, [asdict(c) for c in self.core.checkpoints(run_id, 50)])
            if url.path == "/api/peers":
                return _json(request, [asdict(p) for p in self.core.peers(run_id)])
            return _send(request, HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        except NotFound as e:
            return _send(request, HTTPStatus.NOT_FOUND, f"{e}\n".encode(), "text/plain")
        except (CoordinatorError, ValueError) as e:
            return _send(request, HTTPStatus.BAD_REQUEST, f"{e}\n".encode(), "text/plain")

    def service_discovery(self) -> list[dict]:
        """Prometheus HTTP SD: the metrics endpoints of every run's online peers (each the address its
        reports came from, with the port the peer signed: ``coordinator.writes.scrape_target``)."""
        groups = []
        for run_id in self.core.store.runs():
            peers = self.core.store.peers(run_id, online=True)
            targets = sorted({p.metrics_url for p in peers if p.metrics_url and served_target(p.metrics_url)})
            if targets:
                groups.append({"targets": targets, "labels": {"run": run_id}})
        return groups


def _json(request: BaseHTTPRequestHandler, value: Any) -> None:
    _send(request, HTTPStatus.OK, json.dumps(_clean(value)).encode(), "application/json")


def _send(request: BaseHTTPRequestHandler, status: HTTPStatus, body: bytes, content_type: str) -> None:
    request.send_response(status)
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(body)))
    request.send_header("Cache-Control", "no-store")
    request.end_headers()
    request.wfile.write(body)
