"""What the properties claim: their domains, solver settings and tolerances, measured.

One place for the numbers the suite (test_properties.py, test_seed_leak.py) and the
measurement tools share; each comment says how it was measured.
"""

import numpy as np

from lbfgs_gate.suite import strategies as problems

# The domains each property claims; what lies outside is measured and kept as strict
# expected failures in test_properties.py (small scales overflow 1/(y^T s) and its tangent).
# Boundaries measured with the fix applied.
DOMAIN = {
    np.float64: problems.Domain(
        max_condition=1e4, eigen_decades=(-2.0, 2.0), data_decades=(-20.0, 20.0), offset_decades=(-6.0, 6.0)
    ),
    np.float32: problems.Domain(
        max_condition=1e3, eigen_decades=(-1.0, 1.0), data_decades=(-3.0, 3.0), offset_decades=(-1.0, 3.0)
    ),
}
# The relative tolerance must be reachable in the dtype: a solve that cannot reach it
# iterates on rounding noise until max_steps, where its curvature pairs are noise.
SOLVE = {
    np.float64: dict(max_steps=100, rel_tol=1e-10),
    np.float32: dict(max_steps=30, rel_tol=1e-3),
}
# The implicit-derivative properties differentiate a solve that takes one more step after
# it stops: the tangent lags the iterate by one (solvers.lbfgs_solve). Without it, a solve
# that lands on the solution stops a step before its tangent (limit stopping-rule-ignores-tangent).
IMPLICIT_SOLVE = dict(SOLVE[np.float64], extra_steps=1)
# The log-sum-exp objective's tangent lags further: with jax 0.10.2 (optax 0.2.8 + the
# series) the search found a solve (examples.LOG_SUM_EXP_TANGENT_LAG, cond 1.8e3) whose
# |H J - I| is 1.5e-3 after one extra step, 1.7e-4 after two, 1.2e-6 after three (with jax
# 0.4.35: 7.1e-6, 3.1e-7, 3.2e-10). Its property takes two.
IMPLICIT_SOLVE_LOG_SUM_EXP = dict(IMPLICIT_SOLVE, extra_steps=2)
# Fixed unrolls run on after convergence, where each step shrinks the step length by
# about the dtype's epsilon: these counts stay inside the finite region (measured).
UNROLL = {np.float64: dict(num_steps=4), np.float32: dict(num_steps=2)}
REVERSE = {np.float64: dict(num_steps=20), np.float32: dict(num_steps=20)}
ALL_ARGUMENTS = (0, 1, 2)

# Tolerance for |H J - I| (H the Hessian at the solution, J = d x*/d b from forward mode).
# With the preconditioner and the stepsize held constant (0003, 0004), the tangent follows
# the iterate one step behind; after the extra step (IMPLICIT_SOLVE) it is off the implicit
# derivative by what the stopping rule leaves of the iterate's error, amplified by how
# well the L-BFGS memory has learned H in the directions the tangent needs: measured, not
# derived. tools/measure_implicit_tolerance.py draws these properties' problems with a
# search steered toward the largest |H J - I| (hypothesis.target); 2000 examples each,
# seed 7, on optax 0.2.4 + the series: quadratics at most 6.6e-5, log-sum-exp (its own
# domain, below) at most 1.4e-4. 1e-3 is about ten times the worst. The defects sit far
# above: with the memory and stepsize differentiated (0001 and 0002 only) 6.9 and 91, with
# the stepsize alone (0001 to 0003) 1.7 and 0.25.
IMPLICIT_TOLERANCE = 1e-3
# The log-sum-exp term dominates a problem whose quadratic data are small: its gradient is
# ~1/n along the ones vector, which (as log-sum-exp is shift-invariant) its Hessian maps to
# zero, and a gradient there can stay in an invariant subspace (limit
# stopping-rule-ignores-tangent). Eigenvalues >= 1 and |x*| >= 1 keep |b| >= 1 > 1/n.
LOG_SUM_EXP_DOMAIN = problems.Domain(
    max_condition=1e4, eigen_decades=(0.0, 2.0), data_decades=(0.0, 3.0), offset_decades=(-6.0, 6.0)
)


def _softmax_hessian(A):
    """Hessian of log-sum-exp(x) + 1/2 x'Ax at x, written in numpy, independently of jax."""

    def hessian_at(x):
        p = np.exp(x - x.max())
        p /= p.sum()
        return np.asarray(A) + np.diag(p) - np.outer(p, p)

    return hessian_at


HESSIANS = {"quadratic": lambda A: lambda x: np.asarray(A), "log-sum-exp": _softmax_hessian}
