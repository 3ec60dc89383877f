"""``qmp-conformance schema`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import jsonschema
import pytest

from conformance.cli import main
from conformance.endpoints import qemu_binaries, qemu_binary_available
from conformance.schema.jsonschema import convert

from .support import derived, introspection


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    status = main(["schema", *argv])
    out, err = capsys.readouterr()
    return status, json.loads(out) if status == 0 else out, err


@pytest.mark.parametrize(
    "target", [["--target", "reference:7.2"], ["--target", "reference", "--version", "7.2"]]
)
def test_introspection_of_the_reference(
    capsys: pytest.CaptureFixture[str], target: list[str]
) -> None:
    status, document, _ = _run(capsys, *target, "--format", "introspection")
    assert status == 0
    assert document == introspection("reference:7.2")


def test_jsonschema_of_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    status, document, _ = _run(capsys, "--target", "reference:10.0")
    assert status == 0
    assert document == derived("reference:10.0")
    for entry in document["commands"].values():
        jsonschema.Draft202012Validator.check_schema(entry["arguments"])
    granularity = document["commands"]["block-dirty-bitmap-add"]["arguments"]["properties"][
        "granularity"
    ]
    assert granularity["maximum"] == 2**32 - 1


def test_without_qapi_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    status, document, _ = _run(capsys, "--target", "reference:10.0", "--no-qapi-bounds")
    assert status == 0
    assert document == convert(introspection("reference:10.0"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target", "bogus"], "unknown endpoint 'bogus'"),
        (["--target", "qemu:/nonexistent/qemu"], "not found"),
        (["--target", "reference:9.9"], "9.9"),
        (["--target", "qemu:10.0", "--version", "7.2"], "reference targets only"),
        (["--target", "reference:10.0", "--version", "7.2"], "contradicts"),
        (["--target", "unix:/nonexistent/qmp.sock"], "cannot connect"),
    ],
    ids=[
        "unknown-kind",
        "missing-binary",
        "unknown-version",
        "version-on-qemu",
        "conflict",
        "no-socket",
    ],
)
def test_bad_targets_exit_2_with_a_message(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, out, err = _run(capsys, *argv)
    assert status == 2
    assert out == ""
    assert err.startswith("qmp-conformance schema: ")
    assert message in err


def test_the_installed_command_line(tmp_path: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "conformance.cli", "schema", "--target", "reference:7.2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == derived("reference:7.2")


@pytest.mark.qemu
@pytest.mark.parametrize("version", ["10.0", "7.2"])
def test_real_qemu_matches_its_recording(capsys: pytest.CaptureFixture[str], version: str) -> None:
    binary = qemu_binaries()[version]
    if not qemu_binary_available(binary):
        pytest.skip(f"QEMU {version} binary not found: {binary}")
    status, live, _ = _run(capsys, "--target", f"qemu:{version}", "--format", "introspection")
    assert status == 0
    assert live == introspection(f"recorded:{version}")
    status, document, _ = _run(capsys, "--target", f"qemu:{version}")
    assert status == 0
    assert document == derived(f"recorded:{version}")
