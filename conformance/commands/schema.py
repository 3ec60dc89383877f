"""``qmp-conformance schema``."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", action="append", default=[], help="endpoint (repeatable)")


def main(args: argparse.Namespace) -> int:
    print("qmp-conformance schema: not built yet", file=sys.stderr)
    return 2
