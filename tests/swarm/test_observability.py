"""A live swarm seen from outside: a real Prometheus (Debian's package) and the dashboard in Chromium.

One coordinator and two real nodes serve both tests. Prometheus runs ``deploy/prometheus.yml`` as
shipped, with only the coordinator's address filled in: it must find the nodes through the
coordinator's service discovery and answer queries for the swarm's metrics. Headless Chromium
loads the dashboard and the test reads the rendered page: charts drawn from data, checkpoint rows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.client import CoordinatorClient
from swarm.dht.records import pinned_run_id
from swarm.peer_names import peer_from_name
from tests.swarm.conftest import Swarm, make_identity
from tests.swarm.test_coordinator import COMMON, NAME, CoordinatorProcess, poll

pytestmark = pytest.mark.swarm
ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


class Live:
    def __init__(self, swarm: Swarm, coordinator: CoordinatorProcess, run: str):
        self.swarm = swarm
        self.coordinator = coordinator
        self.run = run
        """The run's full id (its name pinned to node a's key)."""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    workdir = tmp_path_factory.mktemp("observability")
    key = workdir / "a.key"
    run = pinned_run_id(NAME, peer_from_name(make_identity(key)))
    coordinator = CoordinatorProcess(workdir, run)
    swarm = Swarm(workdir)
    try:
        args = [*COMMON, "--codec", "cocktail", "--coordinator", coordinator.address]
        a = swarm.start("a", *args, identity=key)
        swarm.start("b", "--peer", swarm.first_maddr(a), *args)
        assert swarm.run_id(a) == run
        with CoordinatorClient(coordinator.address) as client:

            def ready():
                try:
                    return client.run_info(run).round >= 4 and len(client.checkpoints(run)) >= 1
                except Exception:
                    return False

            poll("4 reported rounds and a checkpoint", ready, 300)
        yield Live(swarm, coordinator, run)
    finally:
        swarm.reap()
        coordinator.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="needs Debian's prometheus (apt install prometheus)"
)
def test_prometheus_discovers_the_nodes_through_the_coordinator(live: Live, tmp_path: Path) -> None:
    coordinator = f"127.0.0.1:{live.coordinator.http_port}"
    config = (ROOT / "deploy" / "prometheus.yml").read_text().replace("coordinator:9400", coordinator)
    config = config.replace("scrape_interval: 15s", "scrape_interval: 1s").replace(
        "refresh_interval: 30s", "refresh_interval: 1s"
    )
    (tmp_path / "prometheus.yml").write_text(config)
    port = free_port()
    with open(tmp_path / "prometheus.log", "w") as log:
        process = subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/v1"
    try:

        def targets_up():
            try:
                active = get_json(f"{api}/targets")["data"]["activeTargets"]
            except Exception:
                return None
            nodes = [t for t in active if t["labels"]["job"] == "swarm-nodes" and t["health"] == "up"]
            ups = [t for t in active if t["health"] == "up"]
            return active if len(nodes) == 2 and len(ups) == 3 else None

        active = poll("Prometheus scraping both nodes and the coordinator", targets_up, 120)
        node_targets = sorted(t["labels"]["instance"] for t in active if t["labels"]["job"] == "swarm-nodes")
        with CoordinatorClient(live.coordinator.address) as client:
            assert node_targets == sorted(p.metrics_url for p in client.peers(live.run))
        assert all(t["labels"].get("run") == live.run for t in active if t["labels"]["job"] == "swarm-nodes")

        def query(expr: str) -> list[dict]:
            answer = get_json(f"{api}/query?query={urllib.parse.quote(expr)}")
            assert answer["status"] == "success", answer
            return answer["data"]["result"]

        rounds = poll(
            "the nodes' swarm_round in Prometheus", lambda: (r := query("swarm_round")) and len(r) == 2 and r
        )
        assert all(float(r["value"][1]) >= 4 for r in rounds)
        online = poll(
            "swarm_run_members_online", lambda: query(f'swarm_run_members_online{{run="{live.run}"}}')
        )
        assert float(online[0]["value"][1]) == 2
        assert float(query(f'swarm_run_latest_checkpoint_round{{run="{live.run}"}}')[0]["value"][1]) >= 3
        assert float(query(f'swarm_run_samples_total{{run="{live.run}"}}')[0]["value"][1]) > 0
        assert float(query("sum(swarm_samples_total)")[0]["value"][1]) > 0
        loop_cpu = query("swarm_loop_cpu_seconds_total")  # the averaging's CPU, per node
        assert len(loop_cpu) == 2 and all(float(r["value"][1]) > 0 for r in loop_cpu)
        idle = query("swarm_training_idle_seconds_total")  # training stood still between rounds
        assert len(idle) == 2 and all(float(r["value"][1]) > 0 for r in idle)
        # --local-steps: rounds follow no period; the gauge is the measured time between rounds,
        # not the unused base period (5 s)
        periods = [float(r["value"][1]) for r in query("swarm_round_period_seconds")]
        assert len(periods) == 2 and all(p > 0 and p != 5.0 for p in periods), periods
    finally:
        process.terminate()
        process.wait(timeout=30)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(chromium() is None, reason="needs Chromium (apt install chromium)")
def test_the_dashboard_shows_the_live_swarm_in_chromium(live: Live, tmp_path: Path) -> None:
    browser = chromium()
    assert browser is not None
    url = f"http://127.0.0.1:{live.coordinator.http_port}/?run={live.run}"
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1500", "--virtual-time-budget=15000"]  # fmt: skip
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert 'data-loaded="1"' in dom, dom[-2000:]
    assert 'id="error"></span>' in dom, "the page reported an error"
    # Every chart has a series drawn from several points.
    for chart in ("loss-chart", "throughput-chart", "members-chart", "bytes-chart"):
        svg = re.search(rf'<svg id="{chart}".*?</svg>', dom, re.S)
        assert svg is not None, chart
        points = [int(n) for n in re.findall(r'class="series"[^>]*data-points="(\d+)"', svg.group(0))]
        assert points and max(points) >= 3, (chart, svg.group(0)[:300])
        for anchor in ("end", "start"):  # left and right axes: no two ticks read the same
            labels = re.findall(rf'<text[^>]*text-anchor="{anchor}"[^>]*>([^<]*)</text>', svg.group(0))
            assert len(set(labels)) == len(labels), (chart, anchor, labels)
    # The checkpoint table lists the announced checkpoints with both members as providers.
    with CoordinatorClient(live.coordinator.address) as client:
        announced = client.checkpoints(live.run)
        peers = client.peers(live.run)
    table = re.search(r'<table id="checkpoints">.*?</table>', dom, re.S)
    assert table is not None
    rows = re.findall(r"<tr><td>(\d+)</td><td>\d+</td>.*?</tr>", table.group(0), re.S)
    assert {int(r) for r in rows} >= {c.round for c in announced[1:]}, (rows, [c.round for c in announced])
    assert announced[-1].manifest_hash[:12] in table.group(0)
    members = re.search(r'<table id="peers">.*?</table>', dom, re.S)
    assert members is not None and all(p.peer_id[-6:] in members.group(0) for p in peers)
    # Keep a screenshot for the docs.
    shot = tmp_path / "dashboard.png"
    subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
    if os.environ.get("SWARM_UPDATE_SCREENSHOT"):  # how docs/dashboard.png is made
        shutil.copy(shot, DOCS / "dashboard.png")
