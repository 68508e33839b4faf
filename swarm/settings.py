"""Settings declared once: a dataclass field carries everything known about the setting.

    sparsity: float = setting(0.1, group="codec", above=0, at_most=1, help="...")

The field's annotation is its type and the first argument its default; the rest (help, group,
choices, bounds, flag name) sits in the field's metadata. From these declarations alone come the
command-line flags and their ``--help`` groups, the ``SWARM_*`` environment variables, the TOML
keys, the validation of every source (the DHT run spec included) and ``docs/configuration.md``.

    declared(cls, section) -> [Declared]     the settings of one config section
    check(obj, section)                        validate (and normalise) a section's values
    coerce(item, raw)                          a TOML value or an environment string, typed
    add_flag(parser, item, ...)                its command-line flag, typed, with its choices
    describe_default(item)                     " (default: X; range)" for --help and the docs

Pure and stdlib only: ``swarm-node --help``, the light client and the coordinator import it.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

METADATA_KEY = "swarm.setting"
KINDS = ("bool", "int", "float", "str", "list")
_KIND_WORDS = {"bool": "true or false", "int": "a whole number", "float": "a number", "str": "a string"}
GROUPS = {
    "network": "Network: how this node reaches the swarm and is reached",
    "run": "Run: what the swarm trains (set by the node that starts the run; joiners adopt it)",
    "training": "Training: how this node trains and evaluates",
    "codec": "Codec: how rounds compress what they exchange (run-level)",
    "rounds": "Rounds: group size and deadlines of the averaging rounds",
    "checkpoints": "Checkpoints: what this node publishes, keeps and resumes from",
    "coordinator": "Coordinator: where rounds are reported",
    "security": "Security: identity, closed runs and defences against hostile peers",
    "volunteer": "Volunteer controls: how much of this machine the node uses, and when it leaves",
    "output": "Output: metrics, logs and files this node writes",
}
"""The headings settings are listed under, in ``--help`` and docs/configuration.md, in this order."""


class SettingError(ValueError):
    """A setting's value that cannot work; the message names the setting."""


@dataclass(frozen=True, kw_only=True)
class Setting:
    """What a field's declaration says beyond its type and default."""

    help: str
    group: str
    """The heading of ``--help`` and of docs/configuration.md it is listed under."""
    flag: str | None = ""
    """The command-line flag without ``--``: "" for the field's name with dashes, None for a
    setting of the config file only (no flag, no environment variable)."""
    choices: tuple[Any, ...] = ()
    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None
    also: tuple[Any, ...] = ()
    """Values accepted outside the bounds (such as 0 for "off")."""
    pattern: str | None = None
    """A regular expression a string (or each string of a list) must match in full."""
    max_chars: int | None = None
    max_items: int | None = None
    only_with: tuple[str, Any] | None = None
    """(other setting, value): setting this one makes sense only where the other has that value."""
    metavar: str | None = None


def setting(default: Any = MISSING, *, factory: Any = MISSING, **meta: Any) -> Any:
    """A dataclass field declaring a setting; ``meta`` are the fields of ``Setting``."""
    metadata = {METADATA_KEY: Setting(**meta)}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Declared:
    """One setting as the sources see it."""

    section: str
    name: str
    kind: str
    """One of KINDS."""
    optional: bool
    """None is a value (unset)."""
    container: type | None
    """list or tuple for a kind of "list"."""
    default: Any
    meta: Setting

    @property
    def flag(self) -> str | None:
        if self.meta.flag is None:
            return None
        return self.meta.flag or self.name.replace("_", "-")

    @property
    def env(self) -> str | None:
        return None if self.flag is None else "SWARM_" + self.flag.upper().replace("-", "_")

    @property
    def label(self) -> str:
        """How errors name it: the flag, or the config file's section and key."""
        return f"--{self.flag}" if self.flag is not None else f"[{self.section}] {self.name}"

    def bounds(self) -> str:
        """The accepted range in words, empty when there is none."""
        low = f"at least {_num(self.meta.at_least)}" if self.meta.at_least is not None else ""
        low = f"above {_num(self.meta.above)}" if self.meta.above is not None else low
        high = f"at most {_num(self.meta.at_most)}" if self.meta.at_most is not None else ""
        high = f"below {_num(self.meta.below)}" if self.meta.below is not None else high
        words = " and ".join(part for part in (low, high) if part)
        if words and self.meta.also:
            words += ", or " + " or ".join(_num(v) for v in self.meta.also)
        return words


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _kind(annotation: Any) -> tuple[str, bool, type | None]:
    text = str(annotation).replace(" ", "")
    optional = text.endswith("|None")
    text = text.removesuffix("|None")
    if text in ("list[str]", "tuple[str,...]"):
        return "list", optional, list if text.startswith("list") else tuple
    if text not in KINDS:
        raise TypeError(f"a setting cannot have the type {annotation!r}")
    return text, optional, None


def declared(cls: type, section: str) -> list[Declared]:
    """The settings ``cls`` declares (its fields made with ``setting``), in declaration order."""
    items = []
    for f in fields(cls):
        meta = f.metadata.get(METADATA_KEY)
        if meta is None:
            continue
        kind, optional, container = _kind(f.type)
        if meta.group not in GROUPS:
            raise TypeError(f"setting {f.name!r} names an unknown group {meta.group!r}")
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        items.append(Declared(section, f.name, kind, optional, container, default, meta))
    return items


def validate(item: Declared, value: Any) -> Any:
    """``value`` checked against the declaration, normalised (an int where a float is declared)."""
    if value is None:
        if item.optional:
            return None
        raise SettingError(f"{item.label} needs a value")
    value = _typed(item, value)
    meta = item.meta
    if meta.choices and value not in meta.choices:
        raise SettingError(f"{item.label} must be one of {', '.join(map(_num, meta.choices))}, got {value!r}")
    if item.kind in ("int", "float") and not _in_bounds(meta, value):
        raise SettingError(f"{item.label} must be {item.bounds()}, got {_num(value)}")
    strings = value if item.kind == "list" else [value] if item.kind == "str" else []
    for text in strings:
        if meta.max_chars is not None and len(text) > meta.max_chars:
            raise SettingError(f"{item.label} is longer than {meta.max_chars} characters")
        if meta.pattern is not None and not re.fullmatch(meta.pattern, text):
            raise SettingError(f"{item.label} has a malformed value {text!r}")
    if item.kind == "list" and meta.max_items is not None and len(value) > meta.max_items:
        raise SettingError(f"{item.label} takes at most {meta.max_items} values, got {len(value)}")
    return value


def _in_bounds(meta: Setting, value: float) -> bool:
    return value in meta.also or not (
        (meta.at_least is not None and not value >= meta.at_least)
        or (meta.above is not None and not value > meta.above)
        or (meta.at_most is not None and not value <= meta.at_most)
        or (meta.below is not None and not value < meta.below)
    )


def _typed(item: Declared, value: Any) -> Any:
    kind = item.kind
    if kind == "list":
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            assert item.container is not None
            return item.container(value)
        raise SettingError(f"{item.label} must be a list of strings, got {value!r}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
    elif isinstance(value, bool):
        pass  # bool is an int subclass: never a number here
    elif kind == "int" and isinstance(value, int):
        return value
    elif kind == "float" and isinstance(value, int | float):
        if math.isfinite(value):
            return float(value)
        raise SettingError(f"{item.label} must be a finite number, got {value!r}")
    elif kind == "str" and isinstance(value, str):
        return value
    raise SettingError(f"{item.label} must be {_KIND_WORDS[kind]}, got {value!r}")


def check(obj: Any, section: str) -> None:
    """Validate every declared setting of ``obj`` in place (frozen dataclasses included)."""
    for item in declared(type(obj), section):
        normalised = validate(item, getattr(obj, item.name))
        object.__setattr__(obj, item.name, normalised)


def coerce(item: Declared, raw: Any) -> Any:
    """A TOML value, or an environment variable's string, as the setting's type (then validated).

    Lists are comma-separated in the environment; booleans read 1/0, true/false, yes/no, on/off.
    """
    if isinstance(raw, str) and item.kind != "str":
        text = raw.strip()
        try:
            if item.kind == "list":
                raw = [part.strip() for part in text.split(",") if part.strip()]
            elif item.kind == "bool":
                truth = {"1": True, "true": True, "yes": True, "on": True}
                falsity = {"0": False, "false": False, "no": False, "off": False}
                raw = {**truth, **falsity}[text.lower()]
            elif item.kind == "int":
                raw = int(text)
            elif item.kind == "float":
                raw = float(text)
        except (KeyError, ValueError):
            raise SettingError(f"{item.label} = {raw!r}: expected {_KIND_WORDS[item.kind]}") from None
    return validate(item, raw)


def add_flag(parser: argparse._ActionsContainer, item: Declared, *, default: Any, help: str) -> None:
    """``--<flag>`` of ``item`` on ``parser`` (or one of its groups): typed, with its choices."""
    flag = f"--{item.flag}"
    if item.kind == "list":
        parser.add_argument(flag, action="append", metavar=item.meta.metavar, default=default, help=help)
    elif item.kind == "bool":
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help)
    else:
        parser.add_argument(
            flag,
            type={"int": int, "float": float, "str": str}[item.kind],
            choices=item.meta.choices or None,
            metavar=item.meta.metavar or (None if item.meta.choices else item.kind.upper()),
            default=default,
            help=help,
        )


def describe_default(item: Declared) -> str:
    """`` (default: X)`` for --help and the docs, with the accepted range; empty where unhelpful."""
    default = item.default
    if item.kind == "list":
        default = ", ".join(default)
    elif item.kind == "bool":
        default = "on" if default else "off"
    parts = []
    if default not in (None, ""):
        parts.append(f"default: {default}")
    if item.bounds():
        parts.append(item.bounds())
    return f" ({'; '.join(parts)})" if parts else ""
