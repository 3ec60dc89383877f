"""Argument checking: QEMU 7.2 and 10.0 and ``Schema.check_arguments`` answer alike.

Every case of :mod:`.cases` goes to real QEMU (through ``conformance.endpoints``) and to our
checker. When we reject the arguments, QEMU must reply with the identical class and desc; when
we accept them, QEMU must not have rejected them while checking (any error it gives comes from
the command itself, never one of the checker's messages). The endpoint must then still answer.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from conformance.endpoints import QemuEndpoint
from reference.qapi import QAPIError, load_schema

from .cases import CASES

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


@pytest.mark.qemu
@pytest.mark.parametrize(("case_id", "command", "arguments"), CASES, ids=[c[0] for c in CASES])
def test_check_arguments_matches_qemu(
    qemu: tuple[str, QemuEndpoint], case_id: str, command: str, arguments: Any
) -> None:
    version, endpoint = qemu
    expected = ours(version, command, arguments)

    reply = endpoint.execute(command, arguments)

    error = reply.get("error")
    if expected is not None:
        assert error == expected, f"{case_id} on QEMU {version}"
    else:
        assert error is None or not CHECKER_MESSAGE.match(error["desc"]), error
    assert "return" in endpoint.execute("query-version")
