"""Deterministic tests of the seed leak: derivatives through the first step's identity scale.

`scale_by_lbfgs` scales the identity by min(1, 1/|g0|) on its first step. That scale is
a heuristic and must be a constant for derivatives; optax 0.2.4 differentiates it
(optax issue #1189, fixed by patch 0001).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lbfgs_gate.plugin import patch_state
from lbfgs_gate.suite import solvers
from lbfgs_gate.suite.claims import ALL_ARGUMENTS, UNROLL
from lbfgs_gate.suite.report import check, problem_report
from lbfgs_gate.suite.strategies import Problem

A_2D = [[3.0, 1.0], [1.0, 2.0]]


def _first_direction(grad):
    """The first L-BFGS direction for gradient `grad`, started at zero."""
    params = jnp.zeros_like(grad)
    transform = optax.scale_by_lbfgs()
    direction, _ = transform.update(grad, transform.init(params), params)
    return direction


def _issue_1189_solve(b, x0, A, tol=1e-6, max_iter=50):
    """The solve loop of optax's L-BFGS documentation, as issue #1189 used it.

    value_and_grad_from_state, `optax.lbfgs()` with its zoom linesearch, and a
    `lax.while_loop` that always takes the first step and then stops on |g| < tol.
    """
    fun = solvers.quadratic(A, b)
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(params, updates), state

    def continuing(carry):
        _, state = carry
        count = optax.tree_utils.tree_get(state, "count")
        grad = optax.tree_utils.tree_get(state, "grad")
        error = jnp.linalg.norm(grad)
        return (count == 0) | ((count < max_iter) & (error >= tol))

    params, _ = jax.lax.while_loop(continuing, step, (x0, opt.init(x0)))
    return params


# Started at the optimum, the loop takes one step along the zero gradient and stops. That
# step is x1 = x0 - t s (A x0 - b), s = min(1, 1/|g0|) = 1 the first step's identity scale and
# t = 1 the stepsize (the zoom linesearch accepts its initial guess on a zero direction); with
# both constants, as derivatives must treat them, d x1 / d b = t s I = I. Measured: exactly I
# with the series (0.2.4 and 0.2.8, float32 and float64), on 0.2.8 as published, and with the
# stop_gradients of 0003 and 0004 replaced by a custom_jvp that only makes tangents finite; NaN
# on 0.2.4 as published. (The solution's derivative, A^-1, is not this loop's: it takes no step
# of its own at g0 = 0, the limit no-step-at-optimum.)
ONE_STEP_TOLERANCE = 1e-6


@pytest.mark.defect("seed-leak")
def test_issue_1189_forward_derivative_through_while_loop_solve_is_that_of_its_one_step(dtype):
    # Issue #1189's shape of problem: the solve starts at the optimum (b = 0, x0 = 0),
    # the loop still takes one step, and the first gradient is exactly zero.
    A, b, x0 = jnp.array(A_2D, dtype), jnp.zeros(2, dtype), jnp.zeros(2, dtype)
    # The Jacobian a column at a time, by jvp: one program run twice, the same columns as
    # jacfwd in less than half its time (3.0 s and 6.8 s measured: jacfwd also traces the
    # batching of the linesearch's while loops).
    column = jax.jit(lambda b, db: jax.jvp(lambda b: _issue_1189_solve(b, x0, A), (b,), (db,))[1])
    jacobian = np.stack([np.asarray(column(b, e)) for e in jnp.eye(2, dtype=dtype)], axis=1)
    error = float(np.max(np.abs(jacobian - np.eye(2)))) if np.all(np.isfinite(jacobian)) else np.inf
    check(
        error <= ONE_STEP_TOLERANCE,
        lambda: problem_report(
            f"Jacobian of the issue-1189 solve started at its optimum is not I, the derivative of its one step "
            f"(max |J - I| = {error:.3g} > {ONE_STEP_TOLERANCE:g})",
            Problem(A, b, x0),
            solver="issue-1189 while loop (lbfgs_gate/suite/test_seed_leak.py)",
            derivative="jacfwd",
            got=jacobian,
        ),
    )


@pytest.mark.defect("seed-leak")
@pytest.mark.parametrize(
    "A, b, x0",
    [
        pytest.param(A_2D, [0.0, 0.0], [0.0, 0.0], id="b=0,x0=0"),
        # A^-1 b = (1, 1) exactly, so the first gradient is exactly zero.
        pytest.param([[2.0, 0.0], [0.0, 4.0]], [2.0, 4.0], [1.0, 1.0], id="x0=A^-1b"),
    ],
)
def test_solution_jacobian_is_finite_when_started_at_optimum(A, b, x0, dtype):
    problem = Problem(*(jnp.array(v, dtype) for v in (A, b, x0)))
    # The unroll of the seed-leak properties (a zero first gradient is NaN from the first step on).
    static = UNROLL[np.dtype(dtype).type]
    jacobian = solvers.compiled("lbfgs_fixed_steps", "jacfwd", ALL_ARGUMENTS, **static)(*problem.args())[1]
    check(
        np.all(np.isfinite(jacobian)),
        lambda: problem_report(
            "Jacobian of the fixed-step unroll started at its optimum is not finite",
            problem,
            solver="lbfgs_fixed_steps",
            derivative="jacfwd",
            got=jacobian,
            argnums=ALL_ARGUMENTS,
            **static,
        ),
    )


@pytest.mark.defect("seed-leak")
@pytest.mark.parametrize("dtype", [jnp.float32], ids=["float32"])
def test_solution_jacobian_is_finite_for_tiny_float32_gradient(dtype):
    # |b| = 1.4e-20: |b|**2 underflows in float32, so |g0| evaluates to 0. One step only:
    # longer solves at this scale overflow 1/(y^T s) in float32 with or without the
    # patch, a separate limit (see docs/tests.md, the property suite's domains).
    problem = Problem(jnp.array(A_2D, dtype), jnp.full(2, 1e-20, dtype), jnp.zeros(2, dtype))
    assert float(jnp.linalg.norm(problem.b)) == 0.0, "precondition: |b|**2 must underflow"
    static = dict(num_steps=1)
    jacobian = solvers.compiled("lbfgs_fixed_steps", "jacfwd", ALL_ARGUMENTS, **static)(*problem.args())[1]
    check(
        np.all(np.isfinite(jacobian)),
        lambda: problem_report(
            "Jacobian of one step from a gradient whose norm underflows is not finite",
            problem,
            solver="lbfgs_fixed_steps",
            derivative="jacfwd",
            got=jacobian,
            argnums=ALL_ARGUMENTS,
            **static,
        ),
    )


FIRST_GRADIENTS = [
    pytest.param([3.0, 4.0], [1.0, 0.0], id="g=(3,4)"),
    pytest.param([0.0, -2.0], [0.5, 0.5], id="g=(0,-2)"),
    pytest.param([1e3, 1e-3, 7.0], [0.0, 1.0, -1.0], id="g=(1e3,1e-3,7)"),
]


def _first_identity_scale(grad, direction):
    """The constant that the release scaled the first direction by, read off the primal.

    optax 0.2.4 and later scale it by min(1, 1/|g|); 0.2.3 has no such heuristic and
    takes the gradient itself (no seed leak by construction). Either way the scale is a
    constant for derivatives. Any other first direction is beyond what the tangent test
    knows: it stops with pytest.fail, not an AssertionError, so that release counts as
    not measured rather than as carrying the leak.
    """
    for identity_scale in (jnp.minimum(1.0, 1.0 / jnp.linalg.norm(grad)), 1.0):
        if np.array_equal(direction, grad * identity_scale):
            return identity_scale
    pytest.fail(f"first direction {direction} for g = {grad} is neither g/|g| nor g: unknown identity scale")


@pytest.mark.defect("seed-leak")
@pytest.mark.parametrize("grad, grad_tangent", FIRST_GRADIENTS)
def test_first_direction_has_no_tangent_through_identity_scale(grad, grad_tangent, dtype):
    grad, grad_tangent = jnp.array(grad, dtype), jnp.array(grad_tangent, dtype)
    assert float(jnp.linalg.norm(grad)) > 1.0, "precondition: the scale is 1/|g| only when |g| > 1"
    direction, tangent = jax.jvp(_first_direction, (grad,), (grad_tangent,))
    identity_scale = _first_identity_scale(grad, direction)
    expected = identity_scale * grad_tangent
    check(
        np.array_equal(tangent, expected),
        lambda: (
            f"first direction's tangent {tangent} != identity_scale * dg = {expected} "
            f"(g = {grad}, dg = {grad_tangent}, {np.dtype(dtype).name}): the derivative flows through "
            f"the identity scale\noptax {optax.__version__}; patch state: {patch_state()}\nreproduce:\n"
            f"    t = optax.scale_by_lbfgs(); p = jnp.zeros({grad.shape[0]})\n"
            f"    jax.jvp(lambda g: t.update(g, t.init(p), p)[0], (jnp.array({grad.tolist()}),),"
            f" (jnp.array({grad_tangent.tolist()}),))"
        ),
    )


@pytest.mark.parametrize("grad, grad_tangent", FIRST_GRADIENTS)
def test_first_direction_is_the_gradient_scaled_to_unit_length(grad, grad_tangent, dtype):
    # PASS_TO_PASS: the patch must not change the primal first direction.
    grad = jnp.array(grad, dtype)
    direction = _first_direction(grad)
    np.testing.assert_array_equal(direction, grad * (1.0 / jnp.linalg.norm(grad)))


def test_first_direction_is_the_gradient_when_its_norm_is_below_one(dtype):
    grad = jnp.array([0.3, -0.4], dtype)
    np.testing.assert_array_equal(_first_direction(grad), grad)
