"""Every defect, on parameters that are a pytree: nested dicts of arrays of different shapes
and a scalar leaf, as a user's model has them.

The seed leak's norm is `tree_l2_norm(updates)` over the leaves, the memory's weights are
`tree_vdot`s over them, and the linesearch moves every leaf: each defect must show on a
pytree as it does on a flat vector. The objective is a quadratic over the flattened
parameters (lbfgs_gate/suite/trees.py), so the implicit derivative is known exactly.

Compiled configurations: one `optax.lbfgs()` unroll (float32, 20 steps, jvp) serves the
seed-leak, memory-leak and stepsize-leak detectors; one `scale_by_lbfgs` unroll (float64,
reverse mode) the reverse-NaN detector; a 2-step `optax.lbfgs()` unroll the search.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, event, given, settings, target
from hypothesis import strategies as st

from lbfgs_gate.plugin import patch_state
from lbfgs_gate.suite import trees
from lbfgs_gate.suite.report import check

N = 7  # parameters: a 2x2 kernel, a bias of 2 and a scalar scale


def _tree(values, dtype):
    """The parameters' pytree from 7 numbers: nested dicts, leaves of shapes (2,), (2, 2), ().

    In the order jax flattens it (dict keys sorted), so that `values` is the vector the
    quadratic's A and b act on: bias, kernel (row-major), scale.
    """
    v = np.asarray(values, dtype)
    return {"layer": {"bias": v[:2], "kernel": v[2:6].reshape(2, 2)}, "scale": v[6]}


# optax.lbfgs() with its zoom linesearch, 20 steps: past convergence on every problem below
# (they converge to float32 rounding in 5 to 10 steps). Forward mode along db = (1, ..., 1).
UNROLL = dict(objective="tree-quadratic", num_steps=20)


def _unroll_tangent(A, b, x0, dtype):
    data = (np.asarray(A, dtype), np.asarray(b, dtype))
    tangents = ((np.zeros((N, N), dtype), np.ones(N, dtype)), _tree(np.zeros(N), dtype))
    x0 = _tree(x0, dtype)
    x, tangent = trees.compiled("lbfgs_unroll", "jvp", **UNROLL)(data, x0, *tangents)
    return data, x0, tangents, x, tangent


def _check_finite(what, tangent, **problem):
    check(trees.all_finite(tangent), lambda: trees.tree_report(what, got=tangent, **problem))


def _off_the_implicit_tangent(what, A, b, x0, dtype):
    """20 optax.lbfgs() steps on the pytree problem (A, b) from x0: the largest error of the jvp
    along db = ones to the implicit derivative A^-1 db, relative to its largest entry (float64
    numpy; inf where the tangent is not finite), and the failure report to give."""
    data, x0, tangents, _, tangent = _unroll_tangent(A, b, x0, dtype)
    implicit = np.linalg.solve(np.asarray(A, np.float64), np.ones(N))
    error = np.inf
    if trees.all_finite(tangent):
        error = float(np.max(np.abs(trees.flat(tangent) - implicit)) / np.max(np.abs(implicit)))

    def report():
        return trees.tree_report(
            f"jvp of optax.lbfgs() on a pytree ({what}) is not A^-1 db = {implicit} "
            f"(relative {error:.3g} > {TANGENT_TOLERANCE:g})",
            got=tangent,
            solver="lbfgs_unroll",
            transform="jvp",
            data=data,
            x0=x0,
            tangents=tangents,
            **UNROLL,
        )

    return error, report


# The unrolls below have converged (to float32 rounding, in 5 to 10 steps), so their tangent
# along db must be the implicit one, A^-1 db. Measured (largest relative error, float32) with
# the series: 2.4e-7 (at the optimum), 9.2e-8 (memory) and 6.0e-8 (stepsize), on optax 0.2.4
# and 0.2.8 alike; 1e-4 is about 400 times the worst. The defects: NaN as published; with the
# memory differentiated (0003 left out, or its stop_gradient replaced by a custom_jvp that keeps
# the memory's tangent but zeroes what is not finite, a fork's plausible "fix") 6.5e3 on the
# memory problem: finite, and wrong.
TANGENT_TOLERANCE = 1e-4


# A symmetric tridiagonal matrix with eigenvalues 1 + cos(k pi / 8) / 2 in (0.5, 1.5): started
# at the optimum, the tangent's steps (x_dot <- x_dot - step (A x_dot - db)) contract.
A_MILD = np.eye(N) + 0.25 * (np.eye(N, k=1) + np.eye(N, k=-1))
# tridiag(-1, 3, -1), eigenvalues 3 - 2 cos(k pi / 8) in (1.1, 4.9).
A_TRIDIAGONAL = 3 * np.eye(N) - np.eye(N, k=1) - np.eye(N, k=-1)


@pytest.mark.defect("seed-leak")
@pytest.mark.parametrize("dtype", [np.float32], ids=["float32"])
def test_unroll_started_at_optimum_tangent_is_the_implicit_one(dtype):
    # b = 0 and x0 = 0: the first gradient is exactly zero, and the derivative of
    # tree_l2_norm over the leaves is 0/0 where it is not stopped.
    error, report = _off_the_implicit_tangent("started at its optimum", A_MILD, np.zeros(N), np.zeros(N), dtype)
    check(error <= TANGENT_TOLERANCE, report)


@pytest.mark.defect("memory-leak")
@pytest.mark.parametrize("dtype", [np.float32], ids=["float32"])
def test_unroll_past_convergence_memory_tangent_is_the_implicit_one(dtype):
    # The bias's first entry and the scale leaf are coupled by 1e-3; started at x0 = e1 the
    # first gradient is 1e-3 on the scale leaf alone. Once converged, the steps are rounding
    # noise and the tangent of the weights 1 / (y^T s), summed over the leaves by tree_vdot,
    # overflows (measured on 0.2.4 with 0001, 0002 and 0004: inf; the implicit one with 0003).
    A = np.eye(N)
    A[0, 6] = A[6, 0] = 1e-3
    e1 = np.eye(N)[0]
    error, report = _off_the_implicit_tangent("past convergence", A, e1, e1, dtype)
    check(error <= TANGENT_TOLERANCE, report)


# Eigenvalues about 10**(k * 0.142), k = 0..6, in float32: b = 1 and x0 = 0 converge in a few
# steps, and past convergence the zoom linesearch interpolates rounding noise; the tangent of
# the stepsize it picks is NaN on both jax lines (0.2.4 with jax 0.4.35, 0.2.8 with jax 0.10.2,
# as published, and 0.2.4 with 0001 to 0003). With 0004 and the memory still differentiated
# (0001, 0002, 0004, 0005) it is 2.0e-5 off: this detects the stepsize alone. Found among 300
# diagonal spectra as one on which both jax lines show the leak.
STEPSIZE_SPECTRUM = [
    1.0,
    1.3869528770446777,
    1.9236383438110352,
    2.6679956912994385,
    3.7003843784332275,
    5.132258892059326,
    7.11820125579834,
]


@pytest.mark.defect("stepsize-leak")
@pytest.mark.parametrize("dtype", [np.float32], ids=["float32"])
def test_unroll_past_convergence_stepsize_tangent_is_the_implicit_one(dtype):
    A = np.diag(STEPSIZE_SPECTRUM)
    error, report = _off_the_implicit_tangent("past convergence", A, np.ones(N), np.zeros(N), dtype)
    check(error <= TANGENT_TOLERANCE, report)


@pytest.mark.parametrize("dtype", [np.float32], ids=["float32"])
def test_unroll_solves_the_pytree_problem(dtype):
    # PASS_TO_PASS: the solution comes back in the parameters' structure, at A^-1 b, with the
    # implicit tangent A^-1 db, on every release (a problem where no leak shows).
    A, b = A_TRIDIAGONAL, np.ones(N)
    _, x0, _, x, tangent = _unroll_tangent(A, b, np.zeros(N), dtype)
    assert jax.tree.structure(x) == jax.tree.structure(x0)
    np.testing.assert_array_equal(trees.flat(_tree(np.arange(N), dtype)), np.arange(N))
    np.testing.assert_allclose(trees.flat(x), np.linalg.solve(A, b), rtol=1e-6)
    np.testing.assert_allclose(trees.flat(tangent), np.linalg.solve(A, np.ones(N)), rtol=1e-6)


def _first_direction(grad):
    params = jax.tree.map(jnp.zeros_like, grad)
    transform = optax.scale_by_lbfgs()
    direction, _ = transform.update(grad, transform.init(params), params)
    return direction


def _first_identity_scale(grad, direction):
    """The constant the release scaled the first direction by, read off the primal: 1/|g|
    (optax 0.2.4 on, |g| > 1) or 1 (0.2.3, no such heuristic: no seed leak by construction).
    Any other first direction is beyond what this test knows: pytest.fail, not an
    AssertionError, so that the release counts as not measured (as in test_seed_leak.py)."""
    for identity_scale in (1.0 / optax.tree_utils.tree_l2_norm(grad), 1.0):
        scaled = jax.tree.map(lambda d, g, scale=identity_scale: np.array_equal(d, g * scale), direction, grad)
        if all(jax.tree.leaves(scaled)):
            return identity_scale
    pytest.fail(f"first direction {direction} for g = {grad} is neither g / |g| nor g: unknown identity scale")


@pytest.mark.defect("seed-leak")
# One dtype: the leaf-wise norm is the same code in both (test_seed_leak.py covers float32),
# and this runs op by op (about a second), so that the comparison is exact.
@pytest.mark.parametrize("dtype", [np.float64], ids=["float64"])
def test_first_direction_over_pytree_has_no_tangent_through_identity_scale(dtype):
    # |g| = 13 over three leaves (3, 4 | 12): the first direction is g / |g|, and its tangent
    # must be dg / |g|, the scale a constant. optax 0.2.4 adds -(g.dg) / |g|^3 g.
    grad = {
        "kernel": np.array([[3.0, 0.0], [0.0, 4.0]], dtype),
        "bias": np.zeros(2, dtype),
        "scale": np.array(12.0, dtype),
    }
    grad_tangent = {
        "kernel": np.array([[1.0, 0.0], [0.0, 0.0]], dtype),
        "bias": np.array([0.0, 1.0], dtype),
        "scale": np.array(-1.0, dtype),
    }
    direction, tangent = jax.jvp(_first_direction, (grad,), (grad_tangent,))
    identity_scale = _first_identity_scale(grad, direction)
    expected = jax.tree.map(lambda dg: dg * identity_scale, grad_tangent)
    same = jax.tree.leaves(jax.tree.map(np.array_equal, tangent, expected))
    check(
        all(same),
        lambda: (
            f"first direction's tangent {tangent} != identity_scale * dg = {expected} over a pytree "
            f"({np.dtype(dtype).name}): the derivative flows through the identity scale\n"
            f"optax {optax.__version__}; patch state: {patch_state()}\nreproduce:\n"
            f"    t = optax.scale_by_lbfgs(); g = {trees.literal(grad)}; dg = {trees.literal(grad_tangent)}\n"
            f"    p = jax.tree.map(jnp.zeros_like, g)\n"
            f"    jax.jvp(lambda g: t.update(g, t.init(p), p)[0], (g,), (dg,))"
        ),
    )


# Reverse mode through 100 steps of chain(scale_by_lbfgs(), scale(-0.5)), float64: long
# enough that the iterate has converged (to rounding after about 50 steps), so the gradient
# of sum(x) w.r.t. b is the implicit one, A^-1 1.
REVERSE = dict(objective="tree-quadratic", num_steps=100)
REVERSE_TOLERANCE = 1e-9


@pytest.mark.defect("reverse-nan")
@pytest.mark.parametrize("dtype", [np.float64], ids=["float64"])
def test_reverse_gradient_through_pytree_unroll_is_the_implicit_one(dtype):
    data = (A_TRIDIAGONAL.astype(dtype), np.arange(1.0, N + 1, dtype=dtype))
    x0 = _tree(np.zeros(N), dtype)
    (d_data, d_x0) = trees.compiled("scale_by_lbfgs_unroll", "grad", **REVERSE)(data, x0)
    gradient = {"A": d_data[0], "b": d_data[1], "x0": d_x0}
    report = lambda what: trees.tree_report(  # noqa: E731
        what, solver="scale_by_lbfgs_unroll", transform="grad", data=data, x0=x0, got=gradient, **REVERSE
    )
    check(trees.all_finite(gradient), lambda: report("jax.grad through scale_by_lbfgs on a pytree is not finite"))
    implicit = np.linalg.solve(A_TRIDIAGONAL, np.ones(N))
    error = np.max(np.abs(np.asarray(d_data[1], np.float64) - implicit)) / np.max(np.abs(implicit))
    # Measured: 7e-15 with the series on optax 0.2.4 (9e-16 on 0.2.8); with the memory still
    # differentiated (0001, 0002 and 0004) the converged unroll drifts to 1.4e-11 (1.3e-13 on
    # 0.2.8), which is the memory leak's, not this detector's: the tolerance leaves it room.
    tolerance = REVERSE_TOLERANCE
    check(
        error <= tolerance,
        lambda: report(
            f"d sum(x) / db = {np.asarray(d_data[1])} is not A^-1 1 = {implicit} "
            f"(relative {error:.3g} > {tolerance:.3g})"
        ),
    )


# The search: pytree problems drawn directly (no filtering), steered toward a tiny first
# gradient. Short unrolls (2 steps), as the flat seed-leak properties have: inside the region
# where a release without the seed leak but with the other leaks is finite, so that the
# property detects the seed leak alone.
SEARCH_UNROLL = dict(objective="tree-quadratic", num_steps=2)
GENERIC, AT_OPTIMUM_ZERO = "generic", "b=0,x0=0"


@st.composite
def tree_quadratic_problems(draw, dtype):
    """A = Q diag(eigenvalues) Q^T over the 7 flattened parameters, eigenvalues log-uniform in
    [0.1, 10]; |x*| log-uniform in [1e-3, 1e3]; a generic start (x0 = x* + an offset of
    relative size in [1e-1, 1e3]) or the optimum b = 0, x0 = 0 (an exactly zero gradient)."""
    rotation, _ = np.linalg.qr(
        np.array(draw(st.lists(st.floats(-1, 1), min_size=N * N, max_size=N * N))).reshape(N, N) + 2 * np.eye(N)
    )
    eigenvalues = 10.0 ** np.array(draw(st.lists(st.floats(-1, 1), min_size=N, max_size=N)))
    A = (rotation * eigenvalues) @ rotation.T
    A = (A + A.T) / 2
    start = draw(st.sampled_from([GENERIC, AT_OPTIMUM_ZERO]))
    if start == AT_OPTIMUM_ZERO:
        b, x0 = np.zeros(N), np.zeros(N)
    else:
        direction = np.array(draw(st.lists(st.integers(-64, 64), min_size=N, max_size=N))) / 64
        direction[draw(st.integers(0, N - 1))] = 1.0
        solution = direction * 10.0 ** draw(st.floats(-3, 3))
        offset = np.array(draw(st.lists(st.integers(-64, 64), min_size=N, max_size=N))) / 64
        offset[draw(st.integers(0, N - 1))] = 1.0
        b = A @ solution
        x0 = solution + offset * np.linalg.norm(solution) * 10.0 ** draw(st.floats(-1, 3))
    return tuple(np.asarray(v, dtype) for v in (A, b, x0)) + (start,)


@pytest.mark.defect("seed-leak")
@pytest.mark.parametrize("dtype", [np.float32], ids=["float32"])
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problem=tree_quadratic_problems(np.float32))
def test_search_alone_finds_pytree_unroll_tangent_finite(problem, dtype):
    """jvp along db of 2 optax.lbfgs() steps on a pytree is finite, checked by search alone
    (no pinned example): on optax 0.2.4 the search must reach a zero first gradient."""
    A, b, x0, start = problem
    gradient_norm = float(np.linalg.norm(A.astype(np.float64) @ x0 - b))
    event(f"start: {start}")
    target(-np.log10(max(gradient_norm, 1e-300)), label="-log10 |initial gradient|")
    data, x0 = (A, b), _tree(x0, dtype)
    tangents = ((np.zeros((N, N), dtype), np.ones(N, dtype)), _tree(np.zeros(N), dtype))
    _, tangent = trees.compiled("lbfgs_unroll", "jvp", **SEARCH_UNROLL)(data, x0, *tangents)
    _check_finite(
        "jvp of 2 optax.lbfgs() steps on a pytree is not finite",
        tangent,
        solver="lbfgs_unroll",
        transform="jvp",
        data=data,
        x0=x0,
        tangents=tangents,
        **SEARCH_UNROLL,
    )
