"""The run-level settings: what every member of a run trains with, declared once.

The node that starts a run publishes these values (with the hashes that pin its model, data and
initial weights) as the run spec in the DHT (``swarm.dht.records.RunSpec``, which extends this
class); a joiner adopts them, and any of them it set itself must agree. One declaration per
setting (``swarm.settings``) gives its flag, environment variable, TOML key under ``[run]``, its
checks for a node's own config and for a spec read from the DHT, and its line in
docs/configuration.md.

To add a run setting, add a field here, then use it where it matters (``spec.<name>``): nothing else.
Its default must be the behaviour from before it existed: a spec written by an earlier version
lacks it and reads as the default.
"""

from __future__ import annotations

from dataclasses import dataclass

from swarm.settings import Declared, check, declared, setting

CODECS = ("fp32", "fp16", "cocktail")
"""The averaging codecs (``swarm.compression.registry`` builds them)."""
BITS = (2, 4, 8)
MAX_TEXT = 512
"""Longest string in a run spec (a model name, a data path, a key)."""


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """Every run-level setting, with its default (the values of a run started without options)."""

    model: str = setting(
        "tiny",
        group="run",
        max_chars=MAX_TEXT,
        metavar="PRESET|DIR",
        help="Model preset (tiny, small, base) or a local model folder.",
    )
    data: tuple[str, ...] = setting(
        ("stdlib",),
        group="run",
        max_chars=MAX_TEXT,
        max_items=64,
        metavar="PATH",
        help="Training data, repeatable: stdlib (the embedded corpus) or local text, JSONL or "
        "Parquet files and folders, or a datasets folder (save_to_disk). Local data is tokenized once "
        "by the run's first node and served to the others.",
    )
    data_field: str = setting(
        "text",
        group="run",
        max_chars=128,
        pattern=r"^[A-Za-z0-9_.-]+$",
        metavar="NAME",
        help="The field of JSONL, Parquet and datasets records that holds the text (a list of "
        "{role, content} messages is rendered with the tokenizer's chat template).",
    )
    codec: str = setting(
        "fp32",
        group="codec",
        choices=CODECS,
        help="How rounds average: fp32 or fp16 exactly, or cocktail (CocktailSGD: random mask, "
        "top-k, few-bit values, with error feedback).",
    )
    sparsity: float = setting(
        0.1,
        group="codec",
        above=0,
        at_most=1,
        only_with=("codec", "cocktail"),
        help="Cocktail: fraction p of entries the shared random mask keeps.",
    )
    topk: float = setting(
        0.2,
        group="codec",
        above=0,
        at_most=1,
        only_with=("codec", "cocktail"),
        help="Cocktail: fraction r of the kept entries sent (the largest).",
    )
    bits: int = setting(
        4,
        group="codec",
        choices=BITS,
        only_with=("codec", "cocktail"),
        help="Cocktail: bits q per sent value.",
    )
    warmup_rounds: int = setting(
        0,
        group="codec",
        at_least=0,
        help="The run's first rounds are averaged exactly (fp32) before its codec takes over.",
    )
    exact_every: int = setting(
        0,
        group="codec",
        at_least=0,
        help="Every N-th round is averaged exactly, flushing what compression held back (0: never).",
    )
    seq_len: int = setting(128, group="training", at_least=1, at_most=1 << 20, help="Tokens per sequence.")
    batch_size: int = setting(
        16, group="training", at_least=1, at_most=1 << 20, help="Sequences per local optimizer step."
    )
    lr: float = setting(3e-3, group="training", above=0, below=1, help="Peak learning rate.")
    warmup_steps: int = setting(
        50, group="training", at_least=0, help="Global steps of linear learning-rate warm-up."
    )
    total_steps: int = setting(
        3000,
        group="training",
        at_least=1,
        help="Global steps of the cosine learning-rate schedule (the rate stays at its floor after).",
    )
    weight_decay: float = setting(0.01, group="training", at_least=0, below=1, help="AdamW weight decay.")
    max_grad_norm: float = setting(
        0.0,
        group="training",
        at_least=0,
        metavar="NORM",
        help="Clip each local step's gradient to this L2 norm over all parameters (0: no clipping).",
    )
    seed: int = setting(
        0,
        group="run",
        at_least=0,
        at_most=(1 << 32) - 1,
        help="Seed of the initial weights and of data sampling.",
    )
    num_shards: int = setting(
        16,
        group="run",
        at_least=1,
        at_most=4096,
        help="Shards the model's vector is cut into for the sharded reduce (one owner each).",
    )
    owner_key: str = setting(
        "",
        group="security",
        flag="run-owner",
        pattern="[0-9a-f]{64}|",
        metavar="HEX",
        help="Closed run: the owner's public key (64 hex, printed by swarm-node owner-key); only "
        "peers holding a credential it signed take part. Empty: an open run.",
    )

    def __post_init__(self) -> None:
        check(self, "run")


RUN_SETTINGS: dict[str, Declared] = {item.name: item for item in declared(RunSettings, "run")}
"""The run-level settings by name, as the sources and checks see them."""
