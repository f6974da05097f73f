"""Property tests: hypothesis differentiates through complete L-BFGS solves on random problems.

Problems come from tests/lbfgs/strategies.py; solvers from tests/lbfgs/solvers.py, each
compiled once per (solver, derivative, dimension, dtype) with the problem as arguments.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import Phase, event, example, given, note, settings, target

from tests.lbfgs import solvers
from tests.lbfgs import strategies as problems
from tests.lbfgs.report import problem_report

float64 = pytest.mark.parametrize("dtype", [np.float64], ids=["float64"])
float32 = pytest.mark.parametrize("dtype", [np.float32], ids=["float32"])

# The domains each property claims; what lies outside is measured and kept as strict
# expected failures below (brief, section 3). Boundaries measured with the fix applied.
DOMAIN = {
    np.float64: problems.Domain(
        max_condition=1e4, eigen_decades=(-2.0, 2.0), data_decades=(-20.0, 20.0), offset_decades=(-6.0, 6.0)
    ),
    np.float32: problems.Domain(
        max_condition=1e3, eigen_decades=(-1.0, 1.0), data_decades=(-3.0, 3.0), offset_decades=(-1.0, 3.0)
    ),
}
# The relative tolerance must be reachable in the dtype: a solve that cannot reach it
# iterates on rounding noise until max_steps (brief, section 3).
SOLVE = {
    np.float64: dict(max_steps=100, rel_tol=1e-10),
    np.float32: dict(max_steps=30, rel_tol=1e-3),
}
# Fixed unrolls run on after convergence, where each step shrinks the step length by
# about the dtype's epsilon: these counts stay inside the finite region (measured).
UNROLL = {np.float64: dict(num_steps=4), np.float32: dict(num_steps=2)}
REVERSE = {np.float64: dict(num_steps=20), np.float32: dict(num_steps=20)}
ALL_ARGUMENTS = (0, 1, 2)
# For properties registered as limits: a strict expected failure needs a counterexample,
# not a minimal one, and shrinking one costs ~20 s of the session's budget.
NO_SHRINK = settings(phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target])


def _call(solver, transform, problem, argnum=1, **static):
    return solvers.compiled(solver, transform, argnum, **static)(*problem.args())


def _describe(problem):
    note(f"start {problem.start}, n={problem.b.shape[0]}, |g0|={problem.initial_gradient_norm:.3g}, "
         f"cond={np.linalg.cond(np.asarray(problem.A, np.float64)):.3g}")
    event(f"start: {problem.start}")


def _target_small_initial_gradient(problem):
    # Steers the search toward the seed leak's trigger, |g0| -> 0 (exactly 0 at the
    # special starts, which score highest).
    target(-np.log10(max(problem.initial_gradient_norm, 1e-300)), label="-log10 |initial gradient|")


def _assert_finite(values, what, problem, solver, derivative, **static):
    for name, value in zip(("d/dA", "d/db", "d/dx0"), values, strict=False):
        assert np.all(np.isfinite(value)), problem_report(
            f"{what}: {name} is not finite", A=problem.A, b=problem.b, x0=problem.x0, solver=solver,
            derivative=derivative, dtype=problem.dtype, got=value, **static)


def _check_solve_derivatives_finite(problem, objective="quadratic"):
    static = dict(SOLVE[problem.dtype.type], objective=objective)
    _describe(problem)
    jacobians = _call("lbfgs_solve", "jacfwd", problem, ALL_ARGUMENTS, **static)
    _assert_finite(jacobians, "Jacobian of the while-loop solve", problem, "lbfgs_solve", "jacfwd", **static)
    return jacobians


@float64
@given(problem=problems.quadratic_problems(np.float64, DOMAIN[np.float64]))
def test_solve_derivatives_are_finite_float64(problem, dtype):
    """jacfwd of optax.lbfgs() in a while-loop solve w.r.t. A, b and x0 is finite.

    Domain: cond(A) <= 1e4, eigenvalues from 1e-2, |b| and |x0| in [1e-20, 1e20], all starts.
    """
    _check_solve_derivatives_finite(problem)


@float32
@given(problem=problems.quadratic_problems(np.float32, DOMAIN[np.float32]))
def test_solve_derivatives_are_finite_float32(problem, dtype):
    """jacfwd of optax.lbfgs() in a while-loop solve w.r.t. A, b and x0 is finite.

    Domain: cond(A) <= 1e3, eigenvalues in [0.1, 1e4], |b| and |x0| in [1e-3, 1e3], all starts.
    """
    _check_solve_derivatives_finite(problem)


def _check_unroll_derivatives_finite(problem):
    static = UNROLL[problem.dtype.type]
    _describe(problem)
    _target_small_initial_gradient(problem)
    jacobians = _call("lbfgs_fixed_steps", "jacfwd", problem, ALL_ARGUMENTS, **static)
    _assert_finite(jacobians, "Jacobian of the fixed-step unroll", problem, "lbfgs_fixed_steps", "jacfwd",
                   **static)


@pytest.mark.defect("seed-leak")
@float64
# Found by search on optax 0.2.4 as released (ci profile): started at the optimum, b = x0 = 0.
@example(problem=problems.Problem(np.eye(2, dtype=np.float64), np.zeros(2, np.float64), np.zeros(2, np.float64),
                                  problems.AT_OPTIMUM_ZERO))
@given(problem=problems.quadratic_problems(np.float64, DOMAIN[np.float64]))
def test_unroll_derivatives_are_finite_float64(problem, dtype):
    """jacfwd of a lax.scan of optax.lbfgs() steps w.r.t. A, b and x0 is finite."""
    _check_unroll_derivatives_finite(problem)


# The two properties above, with their pinned examples skipped. On optax 0.2.4 as published
# the derandomized search itself must reach the seed leak (the ci profile's strict xfail), so
# the detector does not rest on @example; with the series, the search must find nothing.
SEARCH_ONLY = settings(phases=[Phase.generate, Phase.target, Phase.shrink])


@pytest.mark.defect("seed-leak")
@float64
@SEARCH_ONLY
@given(problem=problems.quadratic_problems(np.float64, DOMAIN[np.float64]))
def test_search_alone_finds_unroll_derivatives_finite_float64(problem, dtype):
    """jacfwd of a lax.scan of optax.lbfgs() steps is finite, checked by search alone."""
    _check_unroll_derivatives_finite(problem)


@pytest.mark.defect("seed-leak")
@float32
@SEARCH_ONLY
@given(problem=problems.quadratic_problems(np.float32, DOMAIN[np.float32]))
def test_search_alone_finds_unroll_derivatives_finite_float32(problem, dtype):
    """jacfwd of a lax.scan of optax.lbfgs() steps is finite, checked by search alone."""
    _check_unroll_derivatives_finite(problem)


@pytest.mark.defect("seed-leak")
@float32
# Found by search on optax 0.2.4 as released (ci profile): started at the optimum, b = x0 = 0.
@example(problem=problems.Problem(np.eye(2, dtype=np.float32), np.zeros(2, np.float32), np.zeros(2, np.float32),
                                  problems.AT_OPTIMUM_ZERO))
@given(problem=problems.quadratic_problems(np.float32, DOMAIN[np.float32]))
def test_unroll_derivatives_are_finite_float32(problem, dtype):
    """jacfwd of a lax.scan of optax.lbfgs() steps w.r.t. A, b and x0 is finite."""
    _check_unroll_derivatives_finite(problem)


def _check_reverse_gradient_finite(problem):
    static = REVERSE[problem.dtype.type]
    _describe(problem)
    gradients = _call("scale_by_lbfgs_unroll", "grad", problem, ALL_ARGUMENTS, **static)
    _assert_finite(gradients, "reverse-mode gradient of sum(x) through scale_by_lbfgs",
                   problem, "scale_by_lbfgs_unroll", "grad", **static)


@pytest.mark.defect("reverse-nan")
@float64
@given(problem=problems.quadratic_problems(np.float64, DOMAIN[np.float64]))
def test_reverse_gradient_through_scale_by_lbfgs_is_finite_float64(problem, dtype):
    """jax.grad of sum(x_20) w.r.t. A, b and x0 through scale_by_lbfgs with step 0.5 is finite.

    Domain: the float64 domain, all starts.
    """
    _check_reverse_gradient_finite(problem)


@pytest.mark.defect("reverse-nan")
@float32
@given(problem=problems.quadratic_problems(np.float32, DOMAIN[np.float32], starts=problems.AWAY_FROM_OPTIMUM))
def test_reverse_gradient_through_scale_by_lbfgs_is_finite_float32(problem, dtype):
    """jax.grad of sum(x_20) w.r.t. A, b and x0 through scale_by_lbfgs with step 0.5 is finite.

    Domain: the float32 domain, starts with a nonzero gradient. Started exactly at the
    optimum no curvature pair ever forms, the tangent follows gradient descent with step
    0.5, which diverges by |1 - lambda/2| a step: past float32's range after 20 steps once
    lambda_max > 173 (limit fixed-step-divergence-at-optimum).
    """
    _check_reverse_gradient_finite(problem)


def _reached_tolerance(residual, steps, static):
    """The implicit-function answer applies to solves that moved and converged."""
    reached = bool(residual <= static["rel_tol"]) and int(steps) >= 1
    event(f"reached tolerance: {reached}")
    return reached


# Tolerance for |H J - I| (H the Hessian at the solution, J = d x*/d b from forward mode).
# Forward mode through an iterative solver converges to the implicit derivative at the
# primal's rate but lags it by a factor that grows with the step count (piggyback
# differentiation), and the tangents are not part of the stopping test. Solves stop at
# |g| <= 1e-10 |g0|; the worst |H J - I| measured over 20,000 examples (thorough
# profile, both objectives, cond(A) <= 1e4) was IMPLICIT_MEASURED; 1e-5 leaves a
# margin and is still 1e5 times smaller than the Jacobian's own entries are allowed to be wrong by
# (|H J - I| ~ 1 means J is unrelated to H^-1, as for the unrolls past convergence).
IMPLICIT_TOLERANCE = 1e-5


def _check_implicit_jacobian(problem, objective, hessian_at):
    static = dict(SOLVE[np.float64], objective=objective)
    _describe(problem)
    x, steps, residual = _call("lbfgs_solve", "value", problem, **static)
    _, jacobian, _ = _check_solve_derivatives_finite(problem, objective)
    H = hessian_at(np.asarray(x))
    error = float(np.linalg.norm(H @ np.asarray(jacobian) - np.eye(H.shape[0]), 2))
    note(f"steps {int(steps)}, relative residual {float(residual):.3g}, |H J - I| = {error:.3g}")
    if not _reached_tolerance(residual, steps, static):
        return
    target(error, label="|H J - I|")
    assert error <= IMPLICIT_TOLERANCE, problem_report(
        f"d x*/d b is not the inverse Hessian: |H J - I| = {error:.3g} > {IMPLICIT_TOLERANCE}",
        A=problem.A, b=problem.b, x0=problem.x0, solver="lbfgs_solve", derivative="jacfwd",
        dtype=problem.dtype, got=jacobian, **static)


@pytest.mark.defect("solve-tangent-not-implicit")
@NO_SHRINK
@float64
# A solve whose gradient stays in an invariant subspace converges in one step, before the
# tangent along e5 has moved: |A J - I| = 1e4 with the relative residual exactly 0 (found by
# hypothesis before the dense strategy; kept so the limit fails deterministically).
@example(problem=problems.Problem(np.diag([1.0, 1.0, 1.0, 1.0, 1e4]), np.array([1.0, 0, 0, 0, 0]),
                                  np.array([2.0, 0, 0, 0, 0]), problems.GENERIC))
@given(problem=problems.quadratic_problems(np.float64, DOMAIN[np.float64], starts=problems.AWAY_FROM_OPTIMUM,
                                      dense=True))
def test_solve_jacobian_wrt_b_is_inverse_hessian(problem, dtype):
    """For a solve that reached its tolerance, d x*/d b = A^-1 (implicit-function theorem).

    Domain: the float64 domain, starts with a nonzero first gradient. A start exactly at
    the optimum takes no step, so its derivative is d x0/d b = 0 (limit no-step-at-optimum).
    """
    _check_implicit_jacobian(problem, "quadratic", lambda x: np.asarray(problem.A))


def _log_sum_exp_hessian(A):
    def hessian_at(x):
        p = np.exp(x - x.max())
        p /= p.sum()
        return np.asarray(A) + np.diag(p) - np.outer(p, p)

    return hessian_at


@pytest.mark.defect("solve-tangent-not-implicit")
@NO_SHRINK
@float64
@given(problem=problems.quadratic_problems(np.float64, DOMAIN[np.float64], starts=problems.AWAY_FROM_OPTIMUM,
                                      dense=True))
def test_log_sum_exp_solve_jacobian_wrt_b_is_inverse_hessian(problem, dtype):
    """Not a quadratic: f = logsumexp(x) + 1/2 x'Ax - b'x, d x*/d b = (A + diag(p) - pp')^-1 at x*.

    Domain: the float64 domain (A, b, x0 drawn as for the quadratic; x* is not A^-1 b).
    """
    _check_implicit_jacobian(problem, "log-sum-exp", _log_sum_exp_hessian(problem.A))


@float32
@given(problem=problems.quadratic_problems(np.float32, DOMAIN[np.float32], starts=problems.AWAY_FROM_OPTIMUM))
def test_log_sum_exp_solve_derivatives_are_finite_float32(problem, dtype):
    """jacfwd of the log-sum-exp solve w.r.t. A, b and x0 is finite. Domain: the float32 domain."""
    _check_solve_derivatives_finite(problem, "log-sum-exp")


# Central differences of the solve with step FD_STEP along tangents scaled so that
# |A^-1 dA| <= 1: x*(A + h dA, b + h db) = (A + h dA)^-1 (b + h db) has a central-difference
# error of order h^2 |A^-1 dA|^2 relative, 1e-8 here; the solves' own errors enter as
# |A^-1| |g| / h, bounded a posteriori from the residuals the solves report.
FD_STEP = 1e-4
FD_TOLERANCE = 1e-5


@pytest.mark.defect("solve-tangent-not-implicit")
@NO_SHRINK
@float64
@given(data=problems.quadratic_problems(np.float64, DOMAIN[np.float64], starts=problems.AWAY_FROM_OPTIMUM,
                                      dense=True)
       .flatmap(lambda problem: problems.tangents(problem).map(lambda tangent: (problem, tangent))))
def test_solve_jvp_matches_central_differences(data, dtype):
    """jax.jvp of the solve in a random direction (dA, db, dx0) agrees with central differences.

    Domain: the float64 domain, starts with a nonzero first gradient, solves (at the point
    and both perturbed points) that reached their tolerance.
    """
    problem, tangent = data
    static = SOLVE[np.float64]
    _describe(problem)
    _, jvp = solvers.compiled("lbfgs_solve", "jvp", **static)(*problem.args(), *tangent)
    report = dict(A=problem.A, b=problem.b, x0=problem.x0, solver="lbfgs_solve", derivative="jvp",
                  dtype=problem.dtype, tangents=tangent, **static)
    assert np.all(np.isfinite(jvp)), problem_report("jvp of the solve is not finite", got=jvp, **report)
    solve = solvers.compiled("lbfgs_solve", "value", **static)
    ends = []
    for sign in (1.0, -1.0):
        shifted = [p + sign * FD_STEP * t for p, t in zip(problem.args(), tangent, strict=True)]
        x, steps, residual = solve(*shifted)
        if not _reached_tolerance(residual, steps, static):
            return
        # |x - x*| <= |A^-1| |A x - b| for a quadratic: the solve's own error, a posteriori.
        A, b = (np.asarray(v) for v in shifted[:2])
        ends.append((np.asarray(x), np.linalg.norm(A @ np.asarray(x) - b) / np.linalg.eigvalsh(A)[0]))
    (x_plus, error_plus), (x_minus, error_minus) = ends
    differences = (x_plus - x_minus) / (2 * FD_STEP)
    allowed = FD_TOLERANCE * np.linalg.norm(differences) + (error_plus + error_minus) / (2 * FD_STEP)
    discrepancy = float(np.linalg.norm(np.asarray(jvp) - differences))
    note(f"|jvp - central differences| = {discrepancy:.3g}, allowed {allowed:.3g}")
    target(discrepancy / allowed, label="discrepancy / allowed")
    assert discrepancy <= allowed, problem_report(
        f"jvp {np.asarray(jvp)} != central differences {differences} (|diff| {discrepancy:.3g} > {allowed:.3g})",
        got=jvp, **report)


@pytest.mark.parametrize("solver, static", [
    ("lbfgs_fixed_steps", dict(num_steps=2)),
    ("lbfgs_solve", SOLVE[np.float64]),
], ids=["scan-unroll", "while-loop-solve"])
def test_jax_refuses_reverse_mode_through_zoom_linesearch(solver, static):
    # The zoom linesearch is a lax.while_loop: JAX must refuse with its own error, not
    # return a silently wrong gradient. Tracing raises before any compilation.
    A, b, x0 = jnp.eye(2), jnp.ones(2), jnp.zeros(2)
    with pytest.raises(ValueError, match="Reverse-mode differentiation does not work for lax.while_loop"):
        solvers.compiled(solver, "grad", 1, **static)(A, b, x0)


_gradient_at = jax.jit(lambda A, b, x: jax.grad(solvers.quadratic(A, b))(x))


def _check_exactly_zero_gradient(problem):
    # The special start x0 = A^-1 b is exact only if the objective's own gradient is 0
    # bitwise there; a near-zero gradient would be a different (small-scale) regime.
    gradient = np.asarray(_gradient_at(*problem.args()))
    assert np.all(gradient == 0), f"gradient {gradient} at the drawn optimum of {problem}"


@float64
@given(problem=problems.quadratic_problems(np.float64, DOMAIN[np.float64], starts=(problems.AT_OPTIMUM,)))
def test_strategy_start_at_optimum_has_exactly_zero_gradient_float64(problem, dtype):
    _check_exactly_zero_gradient(problem)


@float32
@given(problem=problems.quadratic_problems(np.float32, DOMAIN[np.float32], starts=(problems.AT_OPTIMUM,)))
def test_strategy_start_at_optimum_has_exactly_zero_gradient_float32(problem, dtype):
    _check_exactly_zero_gradient(problem)


# Limits: each region the properties above exclude, with a minimal example. Strict
# expected failures everywhere (gatekit/defects.py registers them with patch=None).

@pytest.mark.defect("past-convergence-curvature-overflow")
@pytest.mark.parametrize("dtype, A, b, x0, num_steps", [
    # A = I up to rounding, converged after one step; every later step shrinks the step
    # length by ~1e-16 until the tangent of 1/(y.s) overflows (found by hypothesis).
    pytest.param(np.float64, [[1.0, 2.11898069e-16], [2.11898069e-16, 1.0]], [0.0, 0.0],
                 [1e-15, 1.5625e-17], 6, id="float64-6-steps"),
    # float32, started within rounding of the optimum (x0 = b, A = I up to 1e-16): already
    # converged, so two steps are two steps past convergence (found by hypothesis).
    pytest.param(np.float32, [[1.0, 0.0, 0.0, -1.3401578e-16, -1.3401578e-16],
                              [0.0, 1.0, 0.0, 0.0, 0.0],
                              [0.0, 0.0, 1.0, 0.0, 0.0],
                              [-1.3401578e-16, 0.0, 0.0, 1.0, -1.1102230e-16],
                              [-1.3401578e-16, 0.0, 0.0, -1.1102230e-16, 1.0]],
                 [1.0, 0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0], 2, id="float32-start-at-rounding"),
])
def test_unroll_past_convergence_derivatives_are_finite(dtype, A, b, x0, num_steps):
    """Outside the unroll properties' domain: more steps than UNROLL allows."""
    problem = problems.Problem(*(np.array(v, dtype) for v in (A, b, x0)), "limit")
    jacobians = _call("lbfgs_fixed_steps", "jacfwd", problem, ALL_ARGUMENTS, num_steps=num_steps)
    _assert_finite(jacobians, "Jacobian of the fixed-step unroll", problem, "lbfgs_fixed_steps", "jacfwd",
                   num_steps=num_steps)


@pytest.mark.defect("fixed-step-divergence-at-optimum")
@float32
def test_reverse_gradient_started_at_optimum_is_finite_float32(dtype):
    """Outside the float32 reverse property's domain: a start at the optimum, lambda_max = 1000."""
    problem = problems.Problem(np.eye(2, dtype=dtype) * 1000, np.zeros(2, dtype), np.zeros(2, dtype), "limit")
    static = REVERSE[np.float32]
    gradients = _call("scale_by_lbfgs_unroll", "grad", problem, ALL_ARGUMENTS, **static)
    _assert_finite(gradients, "reverse-mode gradient of sum(x) through scale_by_lbfgs",
                   problem, "scale_by_lbfgs_unroll", "grad", **static)


@pytest.mark.defect("no-step-at-optimum")
@float64
def test_solve_started_at_optimum_jacobian_is_inverse_hessian(dtype):
    """Outside the implicit-derivative property's domain: g0 = 0, so the solve takes no step."""
    A = np.diag([1.0, 2.0])
    jacobian = solvers.compiled("lbfgs_solve", "jacfwd", ALL_ARGUMENTS, **SOLVE[np.float64])(
        A, np.zeros(2), np.zeros(2))[1]
    error = np.linalg.norm(A @ np.asarray(jacobian) - np.eye(2), 2)
    assert error <= IMPLICIT_TOLERANCE, f"|A J - I| = {error:.3g}: J = {np.asarray(jacobian)}"
