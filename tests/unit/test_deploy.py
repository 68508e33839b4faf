"""The deployment files hang together: what compose builds and mounts exists, Prometheus accepts its
config, and the systemd units start the commands this package installs."""

from __future__ import annotations

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
