"""The ``qmp-conformance`` command line: one subcommand per module in ``conformance.commands``.

Exit codes: 0 every check holds, 1 a check failed, 2 usage or endpoint error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommand -> (module in conformance.commands, one-line help)
SUBCOMMANDS = {
    "run": ("run", "run scenarios and generated transaction sequences against endpoints"),
    "replay": ("replay", "replay a saved reproducer against an endpoint"),
    "schema": ("schema", "print an endpoint's schema as JSON Schema or introspection"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qmp-conformance",
        description="Conformance suite for QEMU's QMP 'transaction' command.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        mod = importlib.import_module(f"conformance.commands.{module}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args._main(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
