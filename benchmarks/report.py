"""What every benchmark shares: the machine line, saving a dated result, finding the first node.

record = {"benchmark": "traffic", "date": today(), "machine": machine(), ...}
save(out_dir, f"traffic-{record['date']}", record, render(record))
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import time
from pathlib import Path


def require_plotting() -> None:
    """Exit with the install line now if matplotlib is missing, not after a long run at its plot."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise SystemExit("this benchmark plots its results: pip install -c constraints.txt -e .[bench]")


def today() -> str:
    return dt.date.today().isoformat()


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"


def save(out: str | Path, stem: str, record: dict, markdown: str) -> Path:
    """Write ``<stem>.json`` and ``<stem>.md`` under ``out``; returns the folder."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
    (folder / f"{stem}.md").write_text(markdown)
    return folder


def first_maddr(status: Path, first: subprocess.Popen, timeout_s: float = 240) -> str:
    """The first multiaddr the first node wrote to its status file (``--status-file``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return json.loads(status.read_text())["maddrs"][0]
        except (FileNotFoundError, json.JSONDecodeError, KeyError, IndexError):
            if first.poll() is not None:
                raise RuntimeError(f"the first node exited early; see the logs next to {status}") from None
            time.sleep(0.2)
    raise TimeoutError(f"the first node wrote no address to {status} in {timeout_s} s")
