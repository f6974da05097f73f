"""Warm starts: a solve started at (or near) the solution of its own problem.

A hyper-parameter sweep starts each solve from the previous solution. Differentiating
the unrolled solve then differentiates the few steps it took, not the solution: the
iterates barely move, and the tangent, which follows them one step behind, has nothing
to converge with. No patch can change that (the steps are what they are); implicit
differentiation (dx*/db = H^-1, evaluated at the solution) is what a warm-started user
needs. Limit `warm-start-at-solution` (lbfgs_gate/defects.py).

Measured boundary (2-D quadratic A = [[3, 1], [1, 2]], b = (1, -2), float64; relative error
of dx/db against A^-1, optax 0.2.4 and 0.2.8, as published and with the series alike):
- the loop of optax's documentation and issue #1189 (one step, then stop when |g| < 1e-6):
  0.3 to 1 for every start with |x0 - x*| <= 1e-5 (|g0| of the order of the tolerance),
  below 1e-10 from |x0 - x*| >= 1e-4 on;
- `solvers.lbfgs_solve` (stop when |g| <= 1e-10 |g0|, one extra step): accurate (<= 3e-6)
  from |x0 - x*| >= 1e-12 on, but started at x* as rounded (|g0| = 4e-16, rounding noise,
  so the relative tolerance means nothing), |A J - I| = 6.9 on 0.2.4 (as published and with
  the series), 1.0 on 0.2.8 with the series and 3e103 as published.
"""

import numpy as np
import pytest

from lbfgs_gate.suite import solvers
from lbfgs_gate.suite.claims import ALL_ARGUMENTS, IMPLICIT_SOLVE, IMPLICIT_TOLERANCE
from lbfgs_gate.suite.report import check, problem_report
from lbfgs_gate.suite.strategies import Problem

# The implicit property's configuration (2-D, float64, jacfwd w.r.t. A, b and x0) and
# tolerance: the same compiled function as test_properties', no new compilation.


@pytest.mark.defect("warm-start-at-solution")
@pytest.mark.float64
def test_solve_warm_started_at_its_solution_jacobian_is_inverse_hessian():
    A, b = np.array([[3.0, 1.0], [1.0, 2.0]]), np.array([1.0, -2.0])
    # x* = A^-1 b = (0.8, -1.4) as rounded to float64: the gradient there is (4.4e-16, 0),
    # rounding noise, not zero (a zero first gradient is the limit no-step-at-optimum).
    x0 = np.linalg.solve(A, b)
    assert np.any(A @ x0 - b != 0), "precondition: the warm start's gradient is rounding noise, not zero"
    jacobian = np.asarray(solvers.compiled("lbfgs_solve", "jacfwd", ALL_ARGUMENTS, **IMPLICIT_SOLVE)(A, b, x0)[1])
    error = float(np.linalg.norm(A @ jacobian - np.eye(2), 2))
    check(
        error <= IMPLICIT_TOLERANCE,
        lambda: problem_report(
            f"a solve warm-started at its own solution: |A J - I| = {error:.3g} > {IMPLICIT_TOLERANCE} "
            "(differentiate the solution implicitly instead: dx*/db = A^-1)",
            Problem(A, b, x0),
            solver="lbfgs_solve",
            derivative="jacfwd",
            got=jacobian,
            argnums=ALL_ARGUMENTS,
            **IMPLICIT_SOLVE,
        ),
    )
