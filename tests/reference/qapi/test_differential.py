"""Argument checking: QEMU 7.2 and 10.0, ``check_arguments`` and the reference answer alike.

Every case of :mod:`.cases` goes to real QEMU (through ``conformance.endpoints``), to our
checker and to the reference endpoint. When we reject the arguments, QEMU must reply with the
identical class and desc, and so must the reference endpoint (its whole dispatch, not only the
checker) for every command it implements (``query-commands``: commands of later issues, such
as the jobs, are in our schema before they have handlers and answer CommandNotFound until
then). When we accept them, QEMU must not have rejected them while checking (any error it
gives comes from the command itself, never one of the checker's messages). Each endpoint must
then still answer the next command.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from conformance.endpoints import QemuEndpoint, ReferenceEndpoint
from reference.qapi import QAPIError, load_schema

from .cases import CASES

#: Issue 3: at least this many malformed messages, each compared on every endpoint.
MIN_MALFORMED = 50

#: Shapes of every message the input visitor produces: an accepted case must not get one.
CHECKER_MESSAGE = re.compile(
    r"^(Parameter '.*' (is missing|is unexpected|expects .*|does not accept value '.*')"
    r"|Invalid parameter type for '.*', expected: .*)$"
)


def ours(version: str, command: str, arguments: Any) -> dict[str, str] | None:
    try:
        load_schema(version).check_arguments(command, arguments)
    except QAPIError as err:
        return {"class": err.error_class, "desc": err.desc}
    return None


@pytest.fixture(scope="session")
def references() -> Iterator[dict[str, ReferenceEndpoint]]:
    """One reference endpoint per version, shared by the session like the QEMU ones."""
    endpoints = {version: ReferenceEndpoint(version) for version in ("7.2", "10.0")}
    yield endpoints
    for endpoint in endpoints.values():
        endpoint.close()


@pytest.mark.qemu
@pytest.mark.parametrize(("case_id", "command", "arguments"), CASES, ids=[c[0] for c in CASES])
def test_check_arguments_matches_qemu(
    qemu: tuple[str, QemuEndpoint],
    references: dict[str, ReferenceEndpoint],
    case_id: str,
    command: str,
    arguments: Any,
) -> None:
    version, endpoint = qemu
    reference = references[version]
    expected = ours(version, command, arguments)

    reply = endpoint.execute(command, arguments)
    reference_reply = reference.execute(command, arguments)

    error = reply.get("error")
    if expected is not None:
        assert error == expected, f"{case_id} on QEMU {version}"
        if command in implemented(reference):
            assert reference_reply == reply, f"{case_id} on the reference {version}"
    else:
        assert error is None or not CHECKER_MESSAGE.match(error["desc"]), error
    assert "return" in endpoint.execute("query-version")
    assert "return" in reference.execute("query-version")


def implemented(reference: ReferenceEndpoint) -> set[str]:
    """The commands the reference endpoint has handlers for."""
    return {entry["name"] for entry in reference.execute("query-commands")["return"]}


@pytest.mark.parametrize("version", ["7.2", "10.0"])
def test_enough_malformed_messages(version: str) -> None:
    with ReferenceEndpoint(version) as reference:
        commands = implemented(reference)
    malformed = [c for c in CASES if ours(version, c[1], c[2]) is not None]
    assert len(malformed) >= MIN_MALFORMED
    assert len([c for c in malformed if c[1] in commands]) >= MIN_MALFORMED
