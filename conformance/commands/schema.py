"""``qmp-conformance schema``: print an endpoint's schema.

    qmp-conformance schema --target T [--format jsonschema|introspection] [--version V]

``--format introspection`` prints the endpoint's ``query-qmp-schema`` return value as it came;
``--format jsonschema`` (the default) prints ``{"commands": {NAME: {"arguments": S, "returns":
S}}, "events": {NAME: S}}`` derived from it by :func:`conformance.schema.jsonschema.convert`,
with our QAPI's integer bounds when the endpoint's version is one our schema knows (7.2, 10.0;
``--no-qapi-bounds`` turns that off). ``--version`` picks the version a ``reference`` target
emulates (``--target reference --version 7.2`` is ``--target reference:7.2``).

Exit status: 0 printed; 2 bad target or options, endpoint unavailable or failing, or no
``query-qmp-schema`` there (the message says which).
"""

from __future__ import annotations

import argparse
import json
import sys

from conformance.endpoints import EndpointError, LaunchOptions, Target, parse_target
from conformance.schema.messages import derived_schema

PROG = "qmp-conformance schema"
REFERENCE_KINDS = ("reference", "reference-socket")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        required=True,
        help="endpoint: reference[:V], reference-socket[:V], qemu[:PATH|:VERSION], "
        "unix:PATH or tcp:HOST:PORT",
    )
    parser.add_argument(
        "--format",
        choices=("jsonschema", "introspection"),
        default="jsonschema",
        help="JSON Schema per command and event (default), or the raw query-qmp-schema reply",
    )
    parser.add_argument(
        "--version",
        dest="emulate",
        metavar="V",
        help="the QEMU version a reference target emulates (7.2 or 10.0)",
    )
    parser.add_argument(
        "--no-qapi-bounds",
        action="store_true",
        help="do not add integer bounds from our QAPI schema",
    )
    parser.add_argument("--indent", type=int, default=None, help="pretty-print with N spaces")


def fail(message: str) -> int:
    """Report a usage or endpoint problem; the exit status for it."""
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def resolve_target(text: str, emulate: str | None) -> Target:
    """Parse ``--target`` with ``--version`` folded in; ``ValueError`` says what is wrong."""
    if emulate is not None:
        kind, _, rest = text.partition(":")
        if kind not in REFERENCE_KINDS:
            raise ValueError(f"--version applies to reference targets only, not {text!r}")
        if rest and rest != emulate:
            raise ValueError(f"--version {emulate} contradicts --target {text}")
        text = f"{kind}:{emulate}"
    return parse_target(text)


def main(args: argparse.Namespace) -> int:
    try:
        target = resolve_target(args.target, args.emulate)
    except ValueError as error:
        return fail(str(error))
    try:
        with target.start(None, LaunchOptions()) as endpoint:
            reply = endpoint.execute("query-qmp-schema")
            version = endpoint.version_label
    except EndpointError as error:
        return fail(f"endpoint {args.target!r}: {error}")
    except (OSError, ValueError) as error:  # e.g. the engine rejecting an unknown version
        return fail(f"endpoint {args.target!r}: {error}")
    if "return" not in reply:
        return fail(f"endpoint {args.target!r} answered query-qmp-schema with {reply}")
    introspection = reply["return"]
    if args.format == "introspection":
        document = introspection
    else:
        document = derived_schema(introspection, None if args.no_qapi_bounds else version)
    json.dump(document, sys.stdout, indent=args.indent)
    sys.stdout.write("\n")
    return 0
