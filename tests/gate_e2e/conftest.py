"""Fixtures of the fork gate's end-to-end tests: the gate's own fixtures, shared."""

from tests.gate.conftest import gate, sdist_dir  # noqa: F401 - fixtures, found by name
