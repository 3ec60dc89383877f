"""The JSON report: the whole run, every verdict and finding, machine-readable."""

from __future__ import annotations

import json

from conformance.runner import RunResult


def render_json(result: RunResult) -> str:
    """``RunResult.to_json()`` as indented JSON."""
    return json.dumps(result.to_json(), indent=1) + "\n"
