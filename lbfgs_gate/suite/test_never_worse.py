"""PASS_TO_PASS: derivatives through users' loops are never worse with the series than without it.

Each workload of lbfgs_gate/suite/corpus.py (multi-output least squares, pytrees, d > n ridge and
logistic regression, complex parameters, the notebook's loops short and long, fori_loop and scan
unrolls, the suite's solve with its extra step) is measured on the optax under test and judged
against the release's error on the same loop, recorded by the gate's patched sessions on the tree
without the series (LBFGS_GATE_RELEASE_DERIVATIVES): the series' relative error must be finite and
within min(max(10 x the release's, floor), cap). Two properties search with the release imported
beside the series (LBFGS_GATE_RELEASE_PACKAGE): the class of repeated and clustered eigenvalues
and the suite's own 5-D quadratics with the tangent forced along A (the series is short on both,
rarely: on some clustered spectra, and by its one-step lag on the second).

Where the series' default is known to fall short on every release the gate runs (the short
unrolls), the workload is a detector of the limit `derivative-short-of-release` (strict: it must
still fall short);
the equal-penalty ridge falls short for the release and the series alike (the limit
`stopping-rule-ignores-tangent`). Sessions that apply nothing (unpatched) do not run this module;
`lbfgs-gate check` runs it where the optax it judges is not the release it reports as published.
"""

import functools
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from lbfgs_gate.plugin import patch_state
from lbfgs_gate.suite import claims, corpus, user_loops
from lbfgs_gate.suite import strategies as problems
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
    if isinstance(series, str):
        # The release refuses the loop and the series refuses it alike (0.2.4 before complex
        # parameters: a TypeError in lax.cond): no derivative to compare, none worse.
        return
    limit = corpus.bound(release, dtype)
    check(
        isinstance(series, float) and series <= limit,
        lambda: (
            f"{item.summary} ({dtype}): relative error {corpus.shown(series)} with the series "
            f"({patch_state()}), {corpus.shown(release)} as published: the bound is {limit:.3g} "
            f"(min(max(10 x published, {corpus.FLOOR[dtype]:g}), {corpus.CAP[dtype]:g}))"
        ),
    )


# --- the property: the class searched, against the release in the same process ----------------------

LEVELS = (1.0, 2.0, 5.0, 30.0)
# Relative gaps inside a cluster: 0 repeats an eigenvalue exactly.
GAPS = (0.0, 0.0, 1e-10, 1e-6, 1e-3)
SIZE = 6


def _modules():
    """The optax under test and the release (its package imported as optax_release, from the folder
    the session names)."""
    folder = os.environ.get(corpus.PACKAGE_VARIABLE)
    assert folder and Path(folder, "optax_release").is_dir(), (
        f"no release package ({corpus.PACKAGE_VARIABLE} unset or missing): this module runs in the gate's patched "
        "sessions, which write the tree without the series as optax_release"
    )
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import optax
    import optax_release

    return optax, optax_release


def _run_opt_solution(module):
    """The how-to's run_opt on 1/2 x'Ax - b'x from x0, as a function of (A, b, x0)."""

    def solution(A, b, x0):
        fun = lambda x: 0.5 * x @ A @ x - b @ x  # noqa: E731
        tol = user_loops.TOLERANCE[np.dtype(np.float64)]
        return user_loops.run_opt(x0, fun, module.lbfgs(), user_loops.MAX_ITER, tol, module)[0]

    return solution


@functools.cache
def _solves():
    """jit(jacfwd) of run_opt's solution w.r.t. b, from x0 = 0, with the series and with the release."""

    def jacobian(module):
        solution = _run_opt_solution(module)
        return jax.jit(jax.jacfwd(lambda A, b: solution(A, b, jnp.zeros_like(b)), argnums=1))

    return tuple(jacobian(module) for module in _modules())


@functools.cache
def _tangent_solves():
    """jit(jvp) of run_opt's solution along (dA, db, dx0), with the series and with the release."""

    def tangent(module):
        solution = _run_opt_solution(module)
        return jax.jit(lambda args, directions: jax.jvp(solution, args, directions)[1])

    return tuple(tangent(module) for module in _modules())


def clustered_quadratic(levels, gaps, seed):
    """A = Q diag(lambda) Q' with lambda_i = levels_i (1 + gaps_i i), Q and b drawn from `seed`."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(SIZE, SIZE)))
    eigenvalues = np.array([level * (1 + gap * i) for i, (level, gap) in enumerate(zip(levels, gaps, strict=True))])
    return (q * eigenvalues) @ q.T, rng.normal(size=SIZE)


@st.composite
def clustered_quadratics(draw):
    """Eigenvalues repeated or clustered (levels, each with a relative gap of 0 to 1e-3): the
    multi-output and d > n shape in a 6-D quadratic."""
    levels = draw(st.lists(st.sampled_from(LEVELS), min_size=SIZE, max_size=SIZE))
    gaps = draw(st.lists(st.sampled_from(GAPS), min_size=SIZE, max_size=SIZE))
    return clustered_quadratic(levels, gaps, draw(st.integers(0, 2**16)))


@pytest.mark.defect("derivative-short-of-release")
@pytest.mark.float64
# Found by the search (the ci profile, 2026-12-03) with 0006's rule: eigenvalues (1, 1 + 4e-6, 2, 2, 2,
# 5); the series 5.4e-6 off A^-1 on 0.2.4 and 0.2.8, the release 5.6e-11. (With the memory held
# constant, the search shrank to five equal eigenvalues and a sixth, levels (1, 1, 1, 1, 1, 5), seed 0:
# the series 0.011 off, the release 1.1e-11; 0006's rule meets the bound there.)
@example(problem=clustered_quadratic((2.0, 2.0, 1.0, 2.0, 1.0, 5.0), (0.0, 0.0, 0.0, 0.0, 1e-6, 0.0), seed=426))
@given(problem=clustered_quadratics())
def test_search_finds_no_solve_the_series_differentiates_worse_than_the_release(problem):
    """jacfwd of run_opt's solution w.r.t. b (A^-1), with the series and as published, on quadratics
    whose eigenvalues repeat or cluster: the series within min(max(10 x published, 1e-6), 1e-3).
    With the memory held constant for derivatives (the series before 0006's rule), on 0.2.4 (the ci
    profile's 200 examples, eigenvalues told apart at 1e-8) 165 fell short: run_opt lands on the
    solution in as many steps as A has distinct eigenvalues, and a tangent corrected along the
    gradient's Krylov space only misses the rest. 0006's rule takes the steps' own derivative outside
    the directions explored, and that case meets the bound; the search (ci profile) still finds
    cases: eigenvalues (1, 1, 2, 5, 5, 5) on 0.2.8, 2.2e-6 against a bound of 1e-6, the release
    4.1e-12; (1, 1, 1, 1, 2, 30) on 0.2.4, 2.0e-5; the pinned one above."""
    A, b = problem
    series_jacobian, release_jacobian = _solves()
    _judge(
        f"jacfwd of run_opt w.r.t. b on eigenvalues {np.round(np.linalg.eigvalsh(A), 12)}",
        series_jacobian(A, b),
        release_jacobian(A, b),
        np.linalg.inv(A),
    )


def _judge(what, series_derivative, release_derivative, reference):
    """The rule of the corpus between the two derivatives of one float64 solve, against its reference."""
    series = corpus.relative_error(series_derivative, reference)
    release = corpus.relative_error(release_derivative, reference)
    limit = corpus.bound(release, "float64")
    check(
        series <= limit,
        lambda: (
            f"{what}: relative error {corpus.shown(series)} with the series ({patch_state()}), "
            f"{corpus.shown(release)} as published (bound {limit:.3g})"
        ),
    )


# The suite's float64 domain (claims.DOMAIN: distinct eigenvalues, every eigenvector in the data)
# where run_opt can stop. Its tolerance is absolute (|grad| < 1e-11), and the gradient's rounding is
# about eps |A| |x*|: with |A| up to 1e6 and |x*| up to 1e2 (claims.DOMAIN's scales) the loop runs
# at rounding until MAX_ITER. Measured there on 0.2.4 (5-D, 296 examples): both sides far off (the
# release up to 1e95 or NaN, the series NaN, inf or 1.5 to 6.4), a regime of its own, left out.
# |A| <= 1e3 and |x*| <= 10^0.5 keep the rounding near 1e-12.
SUITE_DOMAIN = problems.Domain(
    max_condition=1e3,
    eigen_decades=(-2.0, 0.0),
    data_decades=(-2.0, 0.5),
    offset_decades=claims.DOMAIN[np.float64].offset_decades,
)
FORCED_EIGENVALUES = (1.0, 10**0.25, 10**0.5, 10.0, 100.0)


def forced_quadratic(seed):
    """A 5-D quadratic with FORCED_EIGENVALUES, b and the tangent (dA, db, 0) drawn from `seed`,
    started at x0 = 0; dA symmetric with |dA|_2 the smallest eigenvalue (as strategies.tangents)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    A = (q * np.array(FORCED_EIGENVALUES)) @ q.T
    A = (A + A.T) / 2
    b = rng.normal(size=5)
    m = rng.normal(size=(5, 5))
    dA = (m + m.T) * FORCED_EIGENVALUES[0] / np.linalg.norm(m + m.T, 2)
    return problems.Problem(A, b, np.zeros(5)), (dA, rng.normal(size=5), np.zeros(5))


@pytest.mark.defect("derivative-short-of-release")
@pytest.mark.float64
# Found by a search over seeds (2026-12-03): one in ten falls short on this spectrum; seed 7 with the
# series 4.4e-5 (0.2.4) and 6.2e-5 (0.2.8) off, the release 1.8e-10 and 2.7e-10.
@example(data=forced_quadratic(seed=7))
@given(
    data=problems.quadratic_problems(
        np.float64, SUITE_DOMAIN, starts=problems.AWAY_FROM_OPTIMUM, dimensions=(5,), dense=True
    ).flatmap(lambda problem: problems.tangents(problem).map(lambda tangent: (problem, tangent)))
)
def test_search_finds_no_forced_tangent_the_series_differentiates_worse_than_the_release(data):
    """jvp of run_opt's solution along (dA, db, dx0), with the series and as published, on the suite's
    5-D quadratics with distinct eigenvalues (every eigenvector in the data, run_opt's tolerance
    reachable): the series within min(max(10 x published, 1e-6), 1e-3) of the implicit derivative
    A^-1 (db - dA x*). A change of A forces the tangent at every step along the iterate (dA x_k): a
    rule right only for a constant right-hand side fails here (docs/derivative-rule, frozen scalars).
    The series falls short here too, by less: its tangent follows the iterate a step behind, and
    run_opt stops on the iterate's gradient with no further step (limit derivative-short-of-release;
    measured numbers in docs/tests.md). 2-D quadratics, whose solve terminates in two or three
    steps, fall short as the class above does: left to it."""
    problem, (dA, db, dx0) = data
    A, b = (np.asarray(v, np.float64) for v in (problem.A, problem.b))
    series_tangent, release_tangent = _tangent_solves()
    args, directions = problem.args(), (dA, db, dx0)
    _judge(
        f"jvp of run_opt along (dA, db, dx0) on eigenvalues {np.round(np.linalg.eigvalsh(A), 12)}, "
        f"start {problem.start}",
        series_tangent(args, directions),
        release_tangent(args, directions),
        np.linalg.solve(A, db - dA @ np.linalg.solve(A, b)),
    )
