"""A node's data folder (node.home): where it is by default, one node at a time, and --ephemeral."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from node.errors import NodeError
from node.home import default_home, opened_home


def test_the_default_folder_follows_swarm_home_then_xdg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SWARM_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_home() == tmp_path / "xdg" / "swarm"
    monkeypatch.setenv("SWARM_HOME", str(tmp_path / "mine"))
    assert default_home() == tmp_path / "mine"


def test_a_second_node_on_the_same_folder_is_refused_with_one_line(tmp_path: Path) -> None:
    with opened_home(str(tmp_path / "home"), ephemeral=False) as home:
        assert home.kept and home.resume("r.x") == tmp_path / "home" / "runs" / "r.x" / "resume"
        # Another process: flock is per open file, so this is what a second swarm-node would meet.
        code = (
            "import sys; from node.home import opened_home; from node.errors import NodeError\n"
            "try:\n"
            f"    with opened_home({str(tmp_path / 'home')!r}, ephemeral=False): pass\n"
            "except NodeError as e:\n"
            "    print(e); sys.exit(2)\n"
        )
        second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stderr
        assert "in use by another swarm-node" in second.stdout and "--home" in second.stdout
    # Released at exit: the next node opens it.
    with opened_home(str(tmp_path / "home"), ephemeral=False):
        pass


def test_ephemeral_keeps_nothing(tmp_path: Path) -> None:
    with opened_home(None, ephemeral=True) as home:
        assert not home.kept and home.resume("r.x") is None
        home.identity().write_bytes(b"k")
    assert not home.root.exists()


def test_an_unusable_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with (
        pytest.raises(NodeError, match=r"data folder .*--home"),
        opened_home(str(tmp_path / "file" / "home"), ephemeral=False),
    ):
        pass
