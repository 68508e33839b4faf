"""``swarm-node``: parse arguments into the config tree and hand over. Nothing else happens here."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from node import light_cli
from swarm.run_settings import CODECS


def _parser() -> argparse.ArgumentParser:
    from node.config import add_flags

    parser = argparse.ArgumentParser(prog="swarm-node", description="Train one model with a swarm of peers.")
    commands = parser.add_subparsers(dest="command", required=True)
    join = commands.add_parser(
        "join",
        help="start a new swarm, or join one with --peer",
        usage="%(prog)s [--peer MULTIADDR] [--config FILE] [options]",
        description="Without --peer, start a new swarm and print the addresses others pass to --peer."
        " Every option can also be set in the --config file or as SWARM_<OPTION> in the environment"
        " (docs/configuration.md lists them all).",
    )
    add_flags(join)
    demo = commands.add_parser("demo", help="train with a local swarm of N node processes on this machine")
    demo.add_argument("--nodes", type=int, default=3, help="node processes to start (default 3)")
    demo.add_argument("--steps", type=int, default=150, help="local steps per node (default 150)")
    demo.add_argument("--model", default="tiny", help="model preset or local model folder (default tiny)")
    demo.add_argument("--codec", default="fp32", choices=CODECS, help="averaging codec (default fp32)")
    demo.add_argument("--round-period", type=float, default=4.0, help="seconds between rounds (default 4)")
    demo.add_argument(
        "--until-round",
        type=int,
        default=None,
        help="stop every node once x' reaches this round, not after --steps",
    )
    demo.add_argument(
        "--devices",
        default="",
        help="each node's --device in turn, e.g. cuda,cpu for a GPU and a CPU member (default: auto)",
    )
    demo.add_argument(
        "--overlap",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="exchange each round while the next one trains, as nodes do by default (--no-overlap: "
        "train from the averaged copy after every round; slower, and on this short run lower loss)",
    )
    demo.add_argument(
        "--workdir", default=None, help="keep logs and summaries here (default: a temporary folder)"
    )
    demo.add_argument(
        "--coordinator",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run a coordinator and print its dashboard's URL (default: on)",
    )
    light_cli.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in light_cli.COMMANDS:  # before anything imports torch or hivemind
        return light_cli.main(argv)
    args = _parser().parse_args(argv)
    from node.config import ConfigError, load_config

    if args.command == "demo":
        from node.demo import DemoOptions, run_demo

        try:
            options = DemoOptions(
                nodes=args.nodes,
                steps=args.steps,
                model=args.model,
                codec=args.codec,
                round_period_s=args.round_period,
                workdir=args.workdir,
                coordinator=args.coordinator,
                until_round=args.until_round,
                overlap=args.overlap,
                devices=tuple(d.strip() for d in args.devices.split(",") if d.strip()),
            )
        except ValueError as e:
            print(f"swarm-node demo: error: {e}", file=sys.stderr)
            return 2
        return run_demo(options)
    cli = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    cli = {k.replace("_", "-"): v for k, v in cli.items()}
    try:
        config = load_config(file=args.config, cli=cli)
    except ConfigError as e:
        if cli.get("verbose"):
            traceback.print_exc()
        print(f"swarm-node: error: {e}", file=sys.stderr)
        return 2
    from node.runner import run

    return run(config)
