"""The node's config: the typed tree (``node.sections``) and where its values come from.

Precedence: TOML file < environment < command line. The environment is read here and nowhere else:
``SWARM_<FLAG>`` for every flag (``SWARM_RUN_ID``, ``SWARM_PEER`` with commas between several
values, ...), and the test hooks' ``SWARM_FAULT`` and ``SWARM_DUMP_DIR``.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from node.sections import (
    CheckpointConfig,
    ConfigError,
    FaultConfig,
    NetworkConfig,
    NodeConfig,
    OutputConfig,
    RunConfig,
    TrainingConfig,
)
from swarm.averaging.defence import Defence
from swarm.averaging.timing import RoundTiming
from swarm.run_settings import RunSettings
from swarm.settings import GROUPS, Declared, SettingError, add_flag, coerce, declared, describe_default

__all__ = [
    "FLAGS",
    "SECTIONS",
    "SETTINGS",
    "CheckpointConfig",
    "ConfigError",
    "FaultConfig",
    "NetworkConfig",
    "NodeConfig",
    "OutputConfig",
    "RunConfig",
    "TrainingConfig",
    "add_flags",
    "load_config",
]

SECTIONS: dict[str, type] = {
    "network": NetworkConfig,
    "run": RunConfig,
    "training": TrainingConfig,
    "rounds": RoundTiming,
    "output": OutputConfig,
    "checkpoints": CheckpointConfig,
    "defence": Defence,
}
"""The config file's sections, each a dataclass of settings (``[run]`` adds ``swarm.run_settings``)."""


def settings() -> list[Declared]:
    """Every setting of the node, in its sections' order."""
    items: list[Declared] = []
    for section, cls in SECTIONS.items():
        items += declared(cls, section)
        if cls is RunConfig:
            items += declared(RunSettings, section)
    return items


SETTINGS = {(item.section, item.name): item for item in settings()}
FLAGS = {item.flag: item for item in SETTINGS.values() if item.flag is not None}
"""Command-line flag (without ``--``) -> setting; its environment variable is ``item.env``."""


def _coerce(section: str, name: str, raw: Any) -> Any:
    item = SETTINGS.get((section, name))
    if item is None:
        raise ConfigError(f"[{section}] has no setting {name!r} (see docs/configuration.md)")
    try:
        return coerce(item, raw)
    except SettingError as e:
        raise ConfigError(str(e)) from None


def _parse_fault(spec: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition(":")
        if key == "round":
            values["kill_round"] = int(value)
        elif key == "after_results":
            values["kill_after_results"] = int(value)
        elif key == "diverge":
            values["diverge_round"] = int(value)
        elif key == "misbehave":
            values["misbehave"] = value
        elif key == "ignore_auth":
            values["ignore_auth"] = True
        elif key == "lose_results":
            values["lose_results_round"] = int(value)
        elif key == "factor":
            values["misbehave_factor"] = float(value)
        elif key == "scope" and value in ("group", "process"):
            values["kill_scope"] = value
        else:
            raise ConfigError(f"SWARM_FAULT: cannot parse {item!r}")
    return values


def load_config(
    *, file: str | None, cli: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> NodeConfig:
    """Merge the TOML file, the environment and the command line (``cli`` maps flag names to values)."""
    environ = os.environ if environ is None else environ
    merged: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    if file is not None:
        path = Path(file)
        try:
            document = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path}: {e}") from None
        for section, values in document.items():
            if section not in SECTIONS or not isinstance(values, dict):
                raise ConfigError(
                    f"config file {path}: unknown section [{section}] (known: {', '.join(SECTIONS)})"
                )
            for name, raw in values.items():
                merged[section][name] = _coerce(section, name, raw)
    for item in FLAGS.values():
        if item.env is not None and item.env in environ:
            merged[item.section][item.name] = _coerce(item.section, item.name, environ[item.env])
    for flag, raw in cli.items():
        if flag not in FLAGS:
            raise ConfigError(f"unknown option --{flag}")
        merged[FLAGS[flag].section][FLAGS[flag].name] = raw
    run_id = merged["run"].pop("run_id", None)
    merged["run"] = {"given": merged["run"], **({} if run_id is None else {"run_id": run_id})}
    fault = _parse_fault(environ.get("SWARM_FAULT", ""))
    if environ.get("SWARM_DUMP_DIR"):
        fault["dump_dir"] = environ["SWARM_DUMP_DIR"]
    try:
        return NodeConfig(
            **{section: SECTIONS[section](**values) for section, values in merged.items()},
            fault=FaultConfig(**fault),
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of ``swarm-node join``, grouped as GROUPS, each with its choices and default."""
    parser.add_argument(
        "--config", default=None, metavar="FILE", help="TOML config file (see docs/configuration.md)"
    )
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    for item in FLAGS.values():
        help_text = (item.meta.help + describe_default(item)).replace("%", "%%")
        add_flag(groups[item.meta.group], item, default=argparse.SUPPRESS, help=help_text)
