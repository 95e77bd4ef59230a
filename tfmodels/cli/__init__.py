"""The ``tfmodels`` command line: one module per command group in this package.

Each module defines ``register(subparsers)``, which adds its sub-command(s) and
sets ``func`` on the parser to a callable taking the parsed args and returning an
exit code. Modules are imported lazily so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Command modules in the order their commands appear in --help.
COMMAND_MODULES = [
    "tfmodels.cli.data",
    "tfmodels.cli.train",
    "tfmodels.cli.tune",
    "tfmodels.cli.demo",
    "tfmodels.cli.evaluate",
    "tfmodels.cli.design",
    "tfmodels.cli.export",
    "tfmodels.cli.serve",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfmodels",
        description=(
            "Visually-aware fashion recommendation (DVBPR) and personalised design: "
            "read catalogues, train, evaluate, design, export and serve with the "
            "TensorFlow Serving API."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as e:
        # Bad input: say what is wrong, without a traceback.
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"tfmodels {args.command}: error: {msg}", file=sys.stderr)
        return 2
