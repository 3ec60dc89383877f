"""Fixtures for the differential suite: endpoints per version, cached QEMU transcripts.

A QEMU binary that is absent, or a reference engine that does not import, skips the tests that
need it with the reason in the skip message (``pytest -ra`` lists them) — never a silent pass.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # running pytest without the project installed
    sys.path.insert(0, str(ROOT))

from .support import TranscriptCache  # noqa: E402


@pytest.fixture(scope="session")
def transcripts() -> TranscriptCache:
    """Runs scenarios on QEMU/reference once per session and remembers the transcripts."""
    return TranscriptCache()
