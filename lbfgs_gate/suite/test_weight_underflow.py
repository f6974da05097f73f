"""The curvature weight's derivative underflows: reverse mode through small problems.

Once a fixed-step unroll has converged on a problem of small scale, y^T s is tiny, and
the derivative of the weight 1 / (y^T s), -1 / (y^T s)^2, is inf in float32 (|y^T s| <
5e-20). The memory is used through stop_gradient (0003), but a lax.scan carries its
cotangent as zeros, and the transpose of the division multiplied them by that inf:
jax.grad was NaN for every |b| <= 1e-4 on optax 0.2.4 with 0001 to 0004 (jax 0.4.35),
while the answer, A^-1 1, does not depend on the scale of b. Patch 0005 forms the weight
from stop_gradient(y^T s). With jax 0.10.2 the same unrolls were finite without 0005; through
a loop that returns its optimizer state too, jax.vjp is NaN without 0005 on both jax lines
(its last case).
"""

import numpy as np
import pytest

from lbfgs_gate.suite import solvers
from lbfgs_gate.suite.report import check, problem_report
from lbfgs_gate.suite.strategies import Problem

A_2D = np.array([[3.0, 1.0], [1.0, 2.0]])
# test_reverse_nan's configuration (100 steps, d/db): no new compilation.
STATIC = dict(num_steps=100)


def _small_problem(scale, dtype):
    """The 2-D quadratic scaled to |b| ~ scale, started at 0: converged unrolls keep y^T s tiny."""
    return A_2D.astype(dtype), (scale * np.array([1.0, -2.0])).astype(dtype), np.zeros(2, dtype)


def _off_the_implicit_gradient(gradient):
    """A^-1 1 (the implicit gradient of sum(x*) in b) and the relative error to it (inf if not finite)."""
    implicit = np.linalg.solve(A_2D, np.ones(2))
    if not np.all(np.isfinite(gradient)):
        return implicit, np.inf
    return implicit, np.max(np.abs(gradient - implicit)) / np.max(np.abs(implicit))


# jax.grad of sum(x) through the unroll, and jax.vjp of a loop that also returns its optimizer
# state (to warm-start the next solve, say), pulled back with (ones, zeros): the zero cotangent of
# the state meets the weight's derivative, -1/(y^T s)^2. Measured at |b| ~ 1e-4 with the series
# but 0005: the vjp is NaN on 0.2.4 (jax 0.4.35) and on 0.2.8 (jax 0.10.2), where the grad is
# finite without 0005; with the series, all within 2.8e-7 of A^-1 1.
LOOPS = [
    pytest.param("scale_by_lbfgs_unroll", "grad", 1e-4, id="grad-1e-4"),
    pytest.param("scale_by_lbfgs_unroll", "grad", 1e-8, id="grad-1e-8"),
    pytest.param("scale_by_lbfgs_unroll_with_state", "vjp_with_state", 1e-4, id="loop-returning-its-state-1e-4"),
]


@pytest.mark.defect("weight-underflow")
@pytest.mark.parametrize("dtype", [np.float32], ids=["float32"])
@pytest.mark.parametrize("solver, derivative, scale", LOOPS)
def test_reverse_gradient_of_small_problem_is_the_implicit_one(solver, derivative, scale, dtype):
    problem = Problem(*_small_problem(scale, dtype))
    gradient = np.asarray(solvers.compiled(solver, derivative, argnum=1, **STATIC)(*problem.args()))
    implicit, error = _off_the_implicit_gradient(gradient)
    # test_reverse_nan's tolerance, 16 cond(A) eps.
    tolerance = 16 * np.linalg.cond(A_2D) * np.finfo(dtype).eps
    check(
        error <= tolerance,
        lambda: problem_report(
            f"{derivative} through {STATIC['num_steps']} steps of {solver} at |b| ~ {scale:g} is not A^-1 1 = "
            f"{implicit} (relative error {error:.3g} > {tolerance:.3g})",
            problem,
            solver=solver,
            derivative=derivative,
            got=gradient,
            **STATIC,
        ),
    )
