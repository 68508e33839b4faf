"""The deployment files hang together: what compose builds and mounts exists, Prometheus accepts its
config, and the systemd units start the commands this package installs."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def test_compose_builds_and_mounts_files_that_exist() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"coordinator", "bootstrap", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is missing"
    # The bootstrap node reports to the coordinator service and advertises a scrapeable address.
    command = " ".join(services["bootstrap"]["command"])
    assert "--coordinator=coordinator:50051" in command and "--metrics-advertise=bootstrap:9100" in command


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool (apt install prometheus)")
def test_prometheus_accepts_the_shipped_config() -> None:
    out = subprocess.run(
        ["promtool", "check", "config", str(DEPLOY / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_systemd_units_and_images_run_installed_commands() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for unit, command in (
        ("swarm-node.service", "swarm-node"),
        ("swarm-coordinator.service", "swarm-coordinator"),
    ):
        text = (DEPLOY / "systemd" / unit).read_text()
        assert command in scripts and f"/bin/{command} " in text and "ExecStart=" in text
    assert 'ENTRYPOINT ["swarm-node"]' in (DEPLOY / "Dockerfile.node").read_text()
    assert 'ENTRYPOINT ["swarm-coordinator"]' in (DEPLOY / "Dockerfile.coordinator").read_text()


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined, comments dropped."""
    lines = [line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = " ".join(line[:-1] if line.rstrip().endswith("\\") else line + "\n" for line in lines)
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def _commands(run: str) -> list[list[str]]:
    """The simple commands of a RUN line (split at ``&&`` and ``;``), each as its words."""
    return [shlex.split(part) for part in re.split(r"&&|;", run) if part.strip()]


def _made_for(user: str, path: str, runs: list[str]) -> tuple[bool, bool]:
    """Whether ``runs`` create ``path`` and give it to ``user``."""
    created = owned = False
    for run in runs:
        for words in _commands(run):
            if not words or path not in words[1:]:
                continue
            if words[0] == "mkdir" or (words[0] == "install" and "-d" in words):
                created = True
            if words[0] == "install" and "-o" in words and words[words.index("-o") + 1] == user:
                owned = True
            if words[0] == "chown" and any(
                w.split(":")[0] == user for w in words[1:] if not w.startswith("-")
            ):
                owned = True
    return created, owned


@pytest.mark.parametrize("dockerfile", sorted(DEPLOY.glob("Dockerfile*")), ids=lambda p: p.name)
def test_every_volume_is_made_for_the_user_before_it_is_declared(dockerfile: Path) -> None:
    """Docker creates a VOLUME folder that the image lacks as root's, whatever USER says: the service
    could not write its database or key there. Each stage must make the folder, owned by its user,
    before declaring it."""
    runs: list[str] = []
    user = "root"
    volumes = 0
    for keyword, arguments in _instructions(dockerfile):
        if keyword == "FROM":
            runs, user = [], "root"
        elif keyword == "RUN":
            runs.append(arguments)
        elif keyword == "USER":
            user = arguments.split(":")[0]
        elif keyword == "VOLUME":
            paths = json.loads(arguments) if arguments.startswith("[") else arguments.split()
            for path in paths:
                volumes += 1
                created, owned = _made_for(user, path, runs)
                assert created, f"{dockerfile.name}: VOLUME {path} is not created before it is declared"
                assert owned or user == "root", f"{dockerfile.name}: VOLUME {path} is not owned by {user}"
    assert volumes, f"{dockerfile.name} declares no VOLUME: this test checks nothing there"
