"""Benchmark of the property suite: compilations, examples, speed, against the naive way.

Run from the project root with the Python of a session's environment:

    HYPOTHESIS_PROFILE=ci python tools/benchmark_properties.py [--known-defects=...] [--naive N]

Reports, for tests/lbfgs/test_properties.py: the number of XLA compilations, examples run
per property (hypothesis' own statistics), examples per second, and the wall time of the
test phase; then the same property (finite jacfwd of the while-loop solve) checked the
naive way, with a fresh jit per example and the problem closed over as constants.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _Counter:
    """A pytest plugin that counts XLA compilations and hypothesis examples per test."""

    def __init__(self):
        self.compilations = 0
        self.examples: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def _on_event(self, event, duration_secs, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            self.compilations += 1

    def pytest_sessionstart(self, session):
        import jax

        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        start = time.perf_counter()
        yield
        self.seconds[item.nodeid] = time.perf_counter() - start
        statistics = getattr(item, "hypothesis_statistics", "")
        counts = re.findall(r"(\d+) passing, (\d+) failing", statistics)
        if counts:
            self.examples[item.nodeid] = sum(int(p) + int(f) for p, f in counts)


def _naive(examples: int) -> float:
    """Examples per second of the finite-Jacobian property with one compile per example."""
    import jax
    import numpy as np
    from hypothesis import given, settings

    from tests.lbfgs import solvers, test_properties
    from tests.lbfgs import strategies as problems

    jax.config.update("jax_enable_x64", True)
    static = test_properties.SOLVE[np.float64]

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True)
    @given(problem=problems.quadratic_problems(np.float64, test_properties.DOMAIN[np.float64]))
    def naive(problem):
        A, b, x0 = problem.args()
        # The naive test: the problem as closure constants, so every example compiles anew.
        jacobian = jax.jit(jax.jacfwd(lambda b: solvers.lbfgs_solve(A, b, x0, **static)[0]))(b)
        assert np.all(np.isfinite(jacobian))

    start = time.perf_counter()
    naive()
    return examples / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--known-defects", default="")
    parser.add_argument("--naive", type=int, default=5, help="examples for the naive comparison")
    args = parser.parse_args()
    counter = _Counter()
    start = time.perf_counter()
    code = pytest.main(["tests/lbfgs/test_properties.py", "-q", "-p", "no:cacheprovider",
                        f"--known-defects={args.known_defects}"], plugins=[counter])
    wall = time.perf_counter() - start
    print(f"\ntest phase: {wall:.1f} s wall, {counter.compilations} XLA compilations, pytest exit {code}")
    print(f"{'examples':>8} {'seconds':>8} {'ex/s':>8}  property")
    for nodeid, seconds in counter.seconds.items():
        examples = counter.examples.get(nodeid)
        if examples:
            print(f"{examples:>8} {seconds:>8.2f} {examples / seconds:>8.1f}  {nodeid.split('::')[-1]}")
    suite_rate = None
    for nodeid, seconds in counter.seconds.items():
        if "test_solve_derivatives_are_finite_float64" in nodeid and counter.examples.get(nodeid):
            suite_rate = counter.examples[nodeid] / seconds
    naive_rate = _naive(args.naive)
    print(f"naive (fresh compile per example, {args.naive} examples): {naive_rate:.2f} ex/s")
    if suite_rate:
        print(f"suite, same property, compile included: {suite_rate:.1f} ex/s "
              f"= {suite_rate / naive_rate:.0f}x the naive way")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
