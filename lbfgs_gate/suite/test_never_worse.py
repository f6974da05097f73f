"""PASS_TO_PASS: derivatives through users' loops are never worse with the series than without it.

Each workload of lbfgs_gate/suite/corpus.py (multi-output least squares, pytrees, d > n ridge and
logistic regression, complex parameters, the notebook's loops short and long, run_opt on
non-convex functions, second derivatives, fori_loop and scan unrolls) is measured on the optax
under test and judged against the release's error on the same loop, recorded by the gate's
patched sessions on the tree without the series (LBFGS_GATE_RELEASE_DERIVATIVES):
the series' relative error must be finite and within min(max(10 x the release's, floor), cap).

Where the series' default is known to fall short on every release the gate runs, the workload
is a detector of the limit `derivative-short-of-release` (strict: it must still fall short);
the equal-penalty ridge falls short for the release and the series alike (the limit
`stopping-rule-ignores-tangent`). Sessions that apply nothing (unpatched) do not run this module.
"""

import pytest

from lbfgs_gate.plugin import patch_state
from lbfgs_gate.suite import corpus
from lbfgs_gate.suite.report import check

CORPUS = corpus.workloads()


def _cases():
    for item in CORPUS.values():
        marks = [pytest.mark.defect(item.limit)] if item.limit else []
        for dtype in item.dtypes:
            yield pytest.param(item.name, dtype, marks=marks, id=f"{item.name}-{dtype}")


@pytest.mark.parametrize("name, dtype", list(_cases()))
def test_derivative_is_never_worse_than_the_release(name, dtype):
    path = corpus.reference_path()
    assert path is not None and path.is_file(), (
        f"no record of the release's errors ({corpus.VARIABLE} unset or missing): this module runs in "
        "the gate's patched sessions, which record it on the tree without the series"
    )
    recorded = corpus.load(path)
    assert (name, dtype) in recorded, f"the release's record {path.name} has no {name} in {dtype}: record it again"
    release = recorded[name, dtype]
    item = CORPUS[name]
    series = corpus.measure(item, dtype)
    if isinstance(series, str) and series != release:
        # Not a measurement: the loop broke with the series where the release did not break so.
        raise RuntimeError(f"{name} ({dtype}) raised with the series ({patch_state()}): {series}")
    limit = corpus.bound(release, dtype)
    check(
        isinstance(series, float) and series <= limit,
        lambda: (
            f"{item.summary} ({dtype}): relative error {corpus.shown(series)} with the series "
            f"({patch_state()}), {corpus.shown(release)} as published: the bound is {limit:.3g} "
            f"(min(max(10 x published, {corpus.FLOOR[dtype]:g}), {corpus.CAP[dtype]:g}))"
        ),
    )
