"""Command-line options that several `compacter` commands share: the method's settings, whole numbers, data columns."""

from __future__ import annotations

import argparse


def method_overrides(args: argparse.Namespace) -> dict:
    """The method settings of ``--set KEY=VALUE`` and the shortcut flags, each parsed into its type (methods/settings.py)."""
    from .config_file import METHOD_FLAGS
    from .methods import CONFIG_KINDS, refuse_reserved
    from .methods.settings import parse_assignments

    overrides = parse_assignments(getattr(args, "set", None) or [], CONFIG_KINDS.values())
    refuse_reserved(overrides)  # (compacter.apply's own name= names the task)
    for key in METHOD_FLAGS:
        value = getattr(args, key, None)
        if value is not None:
            if key in overrides:
                raise ValueError(f"{key} is given twice, by --{key.replace('_', '-')} and by --set; give it once.")
            overrides[key] = value
    return overrides


def whole_number(minimum: int, maximum: int | None = None):
    """An argparse type: a whole number in [minimum, maximum], or argparse's usage error that says so."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            bounds = f"from {minimum} to {maximum}" if maximum is not None else f"≥ {minimum}"
            raise argparse.ArgumentTypeError(f"expected a whole number {bounds}, got {text!r}")
        return value
    return parse


def add_method_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, help="hypercomplex dimension (phm-adapter, compacter, compacter++)")
    parser.add_argument("--rank", type=int, help="rank of the low-rank / LPHM factors")
    parser.add_argument("--reduction-factor", type=float, help="bottleneck = hidden size / reduction factor")
    parser.add_argument("--bottleneck-size", type=int, help="bottleneck size (overrides --reduction-factor)")
    parser.add_argument("--num-tokens", type=int, help="prompt vectors (prompt-r, prompt-t)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="any other field of the method's config, e.g. --set share_A=false, --set layers=0,1 "
                             "(true/false, numbers, none, lists as [a, b] or a,b)")


def data_columns(args: argparse.Namespace) -> dict[str, str | None]:
    """--text-column, --label-column, ... of `data show` and `score`: the columns of your own data file."""
    return {key: getattr(args, key) for key in COLUMN_KEYS if getattr(args, key, None) is not None}


COLUMN_KEYS = ("text_column", "text_pair_column", "label_column", "source_column", "target_column")


def add_column_options(parser: argparse.ArgumentParser) -> None:
    for key in COLUMN_KEYS:
        parser.add_argument(f"--{key.replace('_', '-')}", help="your own data: the column of the "
                            f"{key.removesuffix('_column').replace('_', ' ')} (default: as the run trained)")
