"""The node's config: the typed tree (``node.sections``) and where its values come from.

Precedence: TOML file < environment < command line. The environment is read here and nowhere else:
``SWARM_<FLAG>`` for every flag (``SWARM_RUN_ID``, ``SWARM_PEER`` with commas between several
values, ...), and the test hooks' ``SWARM_FAULT`` and ``SWARM_DUMP_DIR``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from node.sections import (
    RUN_DEFAULTS,
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

__all__ = [
    "FLAGS",
    "RUN_DEFAULTS",
    "SECTIONS",
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

# Command-line flag -> (section, field). The environment variable is SWARM_ + the flag in capitals.
FLAGS: dict[str, tuple[str, str]] = {
    "peer": ("network", "peers"),
    "host-maddr": ("network", "host_maddrs"),
    "announce-maddr": ("network", "announce_maddrs"),
    "identity": ("network", "identity"),
    "nat-port-map": ("network", "nat_port_map"),
    "reachability": ("network", "reachability"),
    "auto-relay": ("network", "auto_relay"),
    "relay": ("network", "relays"),
    "max-upload-mbit": ("network", "max_upload_mbit"),
    "credential": ("network", "credential"),
    "revocations": ("network", "revocations"),
    "run-id": ("run", "run_id"),
    "model": ("run", "model"),
    "data": ("run", "data"),
    "codec": ("run", "codec"),
    "sparsity": ("run", "sparsity"),
    "topk": ("run", "topk"),
    "bits": ("run", "bits"),
    "warmup-rounds": ("run", "warmup_rounds"),
    "exact-every": ("run", "exact_every"),
    "seq-len": ("run", "seq_len"),
    "batch-size": ("run", "batch_size"),
    "lr": ("run", "lr"),
    "warmup-steps": ("run", "warmup_steps"),
    "total-steps": ("run", "total_steps"),
    "seed": ("run", "seed"),
    "num-shards": ("run", "num_shards"),
    "run-owner": ("run", "owner_key"),
    "device": ("training", "device"),
    "local-steps": ("training", "local_steps"),
    "round-period": ("training", "round_period_s"),
    "adaptive-rounds": ("training", "adaptive_rounds"),
    "overlap": ("training", "overlap"),
    "max-rounds": ("training", "max_rounds"),
    "until-round": ("training", "until_round"),
    "max-steps": ("training", "max_steps"),
    "micro-batch": ("training", "micro_batch"),
    "threads": ("training", "threads"),
    "gpu-memory-gb": ("training", "gpu_memory_gb"),
    "eval-every": ("training", "eval_every_rounds"),
    "eval-every-s": ("training", "eval_every_s"),
    "eval-local": ("training", "eval_local"),
    "min-group": ("rounds", "min_group"),
    "join-grace": ("rounds", "join_grace_s"),
    "join-timeout": ("rounds", "join_timeout_s"),
    "metrics-port": ("output", "metrics_port"),
    "summary-json": ("output", "summary_json"),
    "status-file": ("output", "status_file"),
    "save-model": ("output", "save_model"),
    "checkpoint-every": ("checkpoints", "every_rounds"),
    "keep-checkpoints": ("checkpoints", "keep"),
    "checkpoint-dir": ("checkpoints", "dir"),
    "resume": ("checkpoints", "resume"),
    "log-level": ("output", "log_level"),
    "coordinator": ("output", "coordinator"),
    "metrics-advertise": ("output", "metrics_advertise"),
    "aggregation": ("defence", "aggregation"),
    "outlier-factor": ("defence", "outlier_factor"),
    "ban-seconds": ("defence", "ban_s"),
    "clip-factor": ("defence", "clip_factor"),
}


def _field_type(section: str, name: str) -> str:
    for f in fields(SECTIONS[section]):
        if f.name == name:
            return str(f.type)
    raise ConfigError(f"[{section}] has no field {name!r}")


def _coerce(section: str, name: str, raw: Any) -> Any:
    """Turn a string (environment) or TOML value into the field's type, with a clear error."""
    kind = _field_type(section, name)
    try:
        if kind.startswith("list"):
            if isinstance(raw, str):
                return [item.strip() for item in raw.split(",") if item.strip()]
            if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
                return raw
            raise TypeError("expected a list of strings")
        if not isinstance(raw, str):
            if kind.startswith("bool") and not isinstance(raw, bool):
                raise TypeError("expected true or false")
            if (kind.startswith("int") and (isinstance(raw, bool) or not isinstance(raw, int))) or (
                kind.startswith("float") and (isinstance(raw, bool) or not isinstance(raw, int | float))
            ):
                raise TypeError(f"expected {kind.split(' ')[0]}")
            return float(raw) if kind.startswith("float") else raw
        if kind.startswith("bool"):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise TypeError("expected true or false")
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        return raw
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[{section}] {name} = {raw!r}: {e}") from None


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
    for flag, (section, name) in FLAGS.items():
        env_name = "SWARM_" + flag.upper().replace("-", "_")
        if env_name in environ:
            merged[section][name] = _coerce(section, name, environ[env_name])
    for flag, raw in cli.items():
        if flag not in FLAGS:
            raise ConfigError(f"unknown option --{flag}")
        section, name = FLAGS[flag]
        merged[section][name] = raw
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
    """The flags of `swarm-node join`, generated from FLAGS so that the CLI and the config agree."""
    parser.add_argument("--config", default=None, help="TOML config file (see deploy/node.example.toml)")
    for flag, (section, name) in FLAGS.items():
        kind = _field_type(section, name)
        help_text = _docstrings(SECTIONS[section]).get(name, "")
        if kind.startswith("list"):
            parser.add_argument(f"--{flag}", action="append", default=argparse.SUPPRESS, help=help_text)
        elif kind.startswith("bool"):
            parser.add_argument(
                f"--{flag}", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
        else:
            caster = int if kind.startswith("int") else float if kind.startswith("float") else str
            parser.add_argument(f"--{flag}", type=caster, default=argparse.SUPPRESS, help=help_text)


def _docstrings(cls: type) -> dict[str, str]:
    """Field docstrings (the string literal after each field), for --help."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    docs: dict[str, str] = {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
        ):
            docs[node.target.id] = str(following.value.value).replace("%", "%%")
    return docs
