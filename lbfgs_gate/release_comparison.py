"""The comparison with the release as published, as people read it: one line per loop of the corpus
(test_never_worse.py) with the error of the optax under test, the release's and the bound, and one per
property search. Printed, and written into report.md, by every run that compares (the patched
sessions, the fork gate, `lbfgs-gate check`); the verdict itself is lbfgs_gate/verdict.py's."""

from __future__ import annotations

import re

from lbfgs_gate import runner
from lbfgs_gate.run_record import Outcome
from lbfgs_gate.suite import corpus

NEVER_WORSE = f"{runner.NEVER_WORSE_TEST}::test_derivative_is_never_worse_than_the_release"
# test_never_worse.py's message where a loop falls short of its bound.
_MEASURED = re.compile(r"relative error (\S+) with the series .*, (\S+) as published: the bound is (\S+) ")


def node(name: str, dtype: str) -> str:
    """The node id of one measurement of the corpus."""
    return f"{NEVER_WORSE}[{name}-{dtype}]"


def lines(records: dict, release: str = "the tree without the series") -> list[str]:
    """A line per measurement and per search that ran in `records` (none: no line)."""
    ran = {nodeid: test for record in records.values() for nodeid, test in record.tests.items()}
    prefix = f"{NEVER_WORSE}["
    tests = {nodeid: test for nodeid, test in ran.items() if nodeid.startswith(prefix)}
    searches = {n: t for n, t in ran.items() if n.startswith(runner.NEVER_WORSE_TEST) and n not in tests}
    if not tests and not searches:
        return []
    short = [test for test in tests.values() if test.outcome != Outcome.PASSED]
    out = [
        f"derivatives against {release}, the same loops measured on both in this environment: "
        f"{len(tests) - len(short)} of {len(tests)} within the bound min(max(10 x published, floor), cap) "
        f"(floor, cap: {corpus.FLOOR['float64']:g}, {corpus.CAP['float64']:g}; "
        f"float32 {corpus.FLOOR['float32']:g}, {corpus.CAP['float32']:g})",
        f"  {'loop':44s} {'dtype':8s} {'under test':>10s} {'without':>10s} {'bound':>8s}",
    ]
    for nodeid, test in sorted(tests.items()):
        name, _, dtype = nodeid[len(prefix) : -1].rpartition("-")
        if test.outcome == Outcome.PASSED:
            out.append(f"  {name:44s} {dtype:8s} {'':>10s} {'':>10s} {'':>8s}  within the bound")
            continue
        known = f" (a known limit: {', '.join(test.defects)})" if test.defects else ""
        measured = _MEASURED.search(test.report or test.message or "")
        if test.outcome != Outcome.REPRODUCED:
            out.append(f"  {name:44s} {dtype:8s} {test.outcome}: {test.message}")
        elif measured is None:  # not a number on either side: the loop raised (report.md has the text)
            out.append(f"  {name:44s} {dtype:8s} {'raised':>10s} {'':>10s} {'':>8s}  SHORT{known}")
        else:
            got, published, bound = measured.groups()
            out.append(f"  {name:44s} {dtype:8s} {got:>10s} {published:>10s} {bound:>8s}  SHORT{known}")
    for nodeid, test in sorted(searches.items()):
        name = nodeid.partition("::")[2]
        if test.outcome == Outcome.PASSED:
            out.append(f"  search {name}: no loop found worse than the release")
            continue
        known = f" (a known limit: {', '.join(test.defects)})" if test.defects else ""
        out.append(f"  search {name}: {test.message}{known}")
        short.append(test)
    if short:
        out.append(
            "  where a derivative is short: through a short unroll, read optax.tree_utils.tree_get(state, "
            "'exact_derivatives') after it (False: the steps left the exact phase, so the derivative is the "
            "solve's) and ask for the steps' own derivative "
            "(optax.lbfgs(exact_unroll_derivatives=True), patch 0007); through a solve, check it on your own "
            "loop with the residual check (lbfgs_gate.suite.solvers.tangent_residual, README) or differentiate "
            "the solution implicitly"
        )
    return out
