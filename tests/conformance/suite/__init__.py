"""Tests of the conformance suite itself: checks, runner, reports, replay, CLI, plugin, broken
engines, generation, and the suite against real QEMU."""
