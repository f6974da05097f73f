"""The README's recipe for reverse mode through an `optax.lbfgs()` solve: implicit.

Reverse mode cannot go through `optax.lbfgs()` (its zoom linesearch is a `lax.while_loop`).
`solvers.implicit_lbfgs_solve` wraps the solve in `jax.lax.custom_root`; these tests hold
its gradients, reverse and forward, to the implicit-function derivative computed in numpy
(d x*/d b = H(x*)^-1, H written independently in lbfgs_gate/suite/claims.py) on the workloads
the unrolled properties use: a quadratic and the log-sum-exp objective. The solve itself
is never differentiated, so these tests pass as published and with the series alike.
"""

import jax
import numpy as np
import pytest

from lbfgs_gate.suite import solvers
from lbfgs_gate.suite.claims import HESSIANS

# The suite's converged-solve configuration (claims.SOLVE, float64).
STATIC = dict(max_steps=100, rel_tol=1e-10)
# The derivative is H^-1 applied at the iterate the solve returns; |g| <= 1e-10 |g0| there,
# so it is off the derivative at x* by about cond(H) * 1e-10 (relative). Measured: below 1e-9.
TOLERANCE = 1e-7

A_5D = np.array(
    [
        [4.0, 1.0, 0.0, 0.5, 0.0],
        [1.0, 3.0, 0.2, 0.0, 0.0],
        [0.0, 0.2, 2.0, 0.3, 0.1],
        [0.5, 0.0, 0.3, 5.0, 1.0],
        [0.0, 0.0, 0.1, 1.0, 1.5],
    ]
)
B_5D = np.array([1.0, -2.0, 0.5, 3.0, -1.0])


@pytest.mark.parametrize("objective", ["quadratic", "log-sum-exp"])
@pytest.mark.parametrize("dtype", [np.float64], ids=["float64"])
def test_reverse_gradient_of_implicit_solve_is_the_implicit_derivative(objective, dtype):
    A, b, x0 = A_5D.astype(dtype), B_5D.astype(dtype), np.zeros(5, dtype)
    x = np.asarray(solvers.compiled("implicit_lbfgs_solve", "value", objective=objective, **STATIC)(A, b, x0))
    gradient = np.asarray(
        solvers.compiled("implicit_lbfgs_solve", "grad", argnum=1, objective=objective, **STATIC)(A, b, x0)
    )
    # d sum(x*) / db = H^-T 1 = H^-1 1 (the Hessian is symmetric).
    expected = np.linalg.solve(HESSIANS[objective](A)(x), np.ones(5))
    error = np.max(np.abs(gradient - expected)) / np.max(np.abs(expected))
    assert error <= TOLERANCE, f"{objective}: jax.grad of the implicit solve {gradient} vs H^-1 1 {expected}"


@pytest.mark.parametrize("dtype", [np.float64], ids=["float64"])
def test_forward_and_reverse_jacobians_of_implicit_solve_agree_with_central_differences(dtype):
    A, b, x0 = A_5D.astype(dtype), B_5D.astype(dtype), np.zeros(5, dtype)
    static = dict(objective="log-sum-exp", **STATIC)
    forward = np.asarray(solvers.compiled("implicit_lbfgs_solve", "jacfwd", argnum=1, **static)(A, b, x0))
    reverse = np.asarray(_jacrev(A, b, x0, **static))
    solve = solvers.compiled("implicit_lbfgs_solve", "value", **static)
    h = 1e-5
    columns = [(np.asarray(solve(A, b + h * e, x0)) - np.asarray(solve(A, b - h * e, x0))) / (2 * h) for e in np.eye(5)]
    central = np.stack(columns, axis=1)
    # Central differences of a solve stopped at |g| <= 1e-10 |g0|: error about 1e-10 / h + h^2.
    for name, jacobian in (("jacfwd", forward), ("jacrev", reverse)):
        error = np.max(np.abs(jacobian - central)) / np.max(np.abs(central))
        assert error <= 1e-4, f"{name} of the implicit solve vs central differences: {error:.3g}"


_jacrev = jax.jit(
    jax.jacrev(solvers.implicit_lbfgs_solve, argnums=1), static_argnames=("max_steps", "rel_tol", "objective")
)


# The residual check (solvers.tangent_residual): quiet on a right derivative, and never quieter
# than the error of a wrong one allows (relative error <= cond(H) x residual). Multi-output least
# squares, 3 features x 8 outputs, flattened: H = (X^T X) (x) I_8 has each eigenvalue 8 times,
# where the series' default derivative of a solve that stops on its rule is finite and wrong.
_X, _Y = np.random.default_rng(0).normal(size=(12, 3)), np.random.default_rng(1).normal(size=(12, 8))
RESIDUAL_PROBLEMS = {
    "distinct-eigenvalues": (A_5D, B_5D),
    "each-eigenvalue-8-times": (np.kron(_X.T @ _X, np.eye(8)), (_X.T @ _Y).ravel()),
}


def _tangent_and_residual(problem, solver):
    """The problem's data, the jvp of `solver` along a random db, db, and its residual."""
    A, b = RESIDUAL_PROBLEMS[problem]
    db, zero = np.random.default_rng(2).normal(size=b.shape), np.zeros_like(A)
    x, dx = solvers.compiled(solver, "jvp", **STATIC)(A, b, np.zeros_like(b), zero, db, 0 * db)
    grad = jax.grad(lambda x, b: solvers.quadratic(A, b)(x))
    return A, dx, db, float(solvers.tangent_residual(grad, x, dx, b, db))


@pytest.mark.parametrize("problem", list(RESIDUAL_PROBLEMS))
@pytest.mark.float64
def test_residual_of_the_implicit_derivative_is_at_rounding(problem):
    _, _, _, residual = _tangent_and_residual(problem, "implicit_lbfgs_solve")
    assert residual <= 1e-10, f"{problem}: the residual of custom_root's tangent is {residual:.3g}, not at rounding"


@pytest.mark.parametrize("problem", list(RESIDUAL_PROBLEMS))
@pytest.mark.float64
def test_residual_bounds_the_error_of_a_derivative_through_the_solve(problem):
    A, dx, db, residual = _tangent_and_residual(problem, "lbfgs_solve")
    expected = np.linalg.solve(A, db)
    error = np.linalg.norm(np.asarray(dx) - expected) / np.linalg.norm(expected)
    bound = np.linalg.cond(A) * residual
    assert error <= bound * (1 + 1e-6) + 1e-12, (
        f"{problem}: jvp through the solve is {error:.3g} off A^-1 db, above cond(A) x residual = {bound:.3g}"
    )
    print(f"{problem}: relative error {error:.3g}, residual {residual:.3g}, bound {bound:.3g}")
