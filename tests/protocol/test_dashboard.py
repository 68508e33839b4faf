"""The dashboard, rendered by headless Chromium over a coordinator served in this process, on runs
shaped to show its edge cases: rounds whose member was alone (no compression figure) and a
compression ratio that barely moves (the fp32 codec's, about 1)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.protocol.coordinator_support import Served, pinned, report

CHARTS = ("loss-chart", "throughput-chart", "members-chart", "bytes-chart")
BROWSER_TIMEOUT_S = 120


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


pytestmark = pytest.mark.skipif(chromium() is None, reason="needs Chromium (apt install chromium)")


def render(served: Served, run: str, profile: Path) -> str:
    browser = chromium()
    assert browser is not None
    url = f"http://127.0.0.1:{served.http.port}/?run={pinned(run)}"
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={profile}", "--window-size=1280,1500", "--virtual-time-budget=5000"]  # fmt: skip
    dom = subprocess.run(
        [*flags, "--dump-dom", url], capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S
    )
    assert 'data-loaded="1"' in dom.stdout, dom.stdout[-2000:] + dom.stderr[-2000:]
    return dom.stdout


def chart(dom: str, name: str) -> str:
    svg = re.search(rf'<svg id="{name}".*?</svg>', dom, re.S)
    assert svg is not None, name
    return svg.group(0)


def axis_labels(svg: str, anchor: str) -> list[str]:
    return re.findall(rf'<text[^>]*text-anchor="{anchor}"[^>]*>([^<]*)</text>', svg)


def send(served: Served, run: str, peer: str, rounds: range, ratios: list[float], group_size: int) -> None:
    request = report(peer, rounds)
    request.run_id = pinned(run)
    for r, ratio in zip(request.reports, ratios, strict=True):
        r.compression_ratio, r.group_size, r.time = ratio, group_size, time.time() - 100 + 10 * r.round
    served.client.report(request)


def test_rounds_alone_draw_no_compression_point(served: Served, tmp_path: Path) -> None:
    """Two rounds alone (the member reports compression 0), then four in a pair: the compression
    line has four points, not six dipping to 0."""
    send(served, "churn", "peerA", range(1, 3), [0.0, 0.0], 1)
    for peer in ("peerA", "peerB"):
        send(served, "churn", peer, range(3, 7), [150.0, 152.0, 151.0, 149.0], 2)
    svg = chart(render(served, "churn", tmp_path / "profile"), "bytes-chart")
    compression = re.search(r'<path class="series"[^>]*stroke="var\(--c\)"[^>]*>', svg)
    assert compression is not None, svg[:500]
    assert 'data-points="4"' in compression.group(0)
    assert "0" not in axis_labels(svg, "start")


def test_every_axis_labels_each_tick_differently(served: Served, tmp_path: Path) -> None:
    """The fp32 codec's ratio is about 1 and each round's bytes the same: no axis may read "1.00"
    (or "0.00") on every tick."""
    for peer in ("peerA", "peerB"):
        send(served, "flat", peer, range(1, 6), [1.0001, 1.0003, 1.0002, 1.0004, 1.0001], 2)
    dom = render(served, "flat", tmp_path / "profile")
    for name in CHARTS:
        svg = chart(dom, name)
        for anchor in ("end", "start"):
            labels = axis_labels(svg, anchor)
            assert len(set(labels)) == len(labels), (name, anchor, labels)
    assert len(axis_labels(chart(dom, "bytes-chart"), "start")) == 5
