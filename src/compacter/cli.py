"""The `compacter` command line: one subcommand per job, each a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def register(function):
        COMMANDS[name] = function
        return function
    return register


def parse_overrides(pairs: list[str]) -> dict:
    """``--set n=8 --set sublayers=[\"feed_forward\"]``: values are JSON, or plain strings."""
    overrides = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}.")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def method_overrides(args: argparse.Namespace) -> dict:
    overrides = parse_overrides(getattr(args, "set", None))
    for key in ("n", "rank", "reduction_factor", "bottleneck_size", "num_tokens", "dim"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    return overrides


def add_method_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, help="hypercomplex dimension (phm-adapter, compacter, compacter++)")
    parser.add_argument("--rank", type=int, help="rank of the low-rank / LPHM factors")
    parser.add_argument("--reduction-factor", type=float, help="bottleneck = hidden size / reduction factor")
    parser.add_argument("--bottleneck-size", type=int, help="bottleneck size (overrides --reduction-factor)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="any other field of the method's config, e.g. --set share_A=false")


@command("params")
def run_params(args: argparse.Namespace) -> int:
    from . import apply, count_parameters
    from .models import build_model

    model = build_model(args.model, pretrained=False, meta=True)
    apply(model, args.method, **method_overrides(args))
    report = count_parameters(model)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .methods import METHODS

    parser = argparse.ArgumentParser(prog="compacter", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("params", help="count the parameters a method trains (offline, in seconds)")
    p.add_argument("--model", default="t5-base", help="t5-small|base|large|3b|11b, a local folder or a hub name")
    p.add_argument("--method", default="compacter", help=f"one of: {', '.join(METHODS)}")
    add_method_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as error:
        print(f"compacter {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
