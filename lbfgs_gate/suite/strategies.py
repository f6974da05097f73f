"""Hypothesis strategies for L-BFGS problems, built directly (no `assume`).

A problem is f(x) = 1/2 x^T A x - b^T x (or log-sum-exp plus that quadratic) with
A = Q diag(eigenvalues) Q^T. Every draw is valid by construction: Q is orthogonal
whatever matrix the QR factorisation is given, eigenvalues are log-uniform in
[eigenvalue_scale, eigenvalue_scale * max_condition], and b and x0 are a direction
of norm >= 1 times a log-uniform scale. The special starts are drawn, not hoped for.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import strategies as st

# Every dimension is one more compile per property and dtype (about 3 s each here):
# 2 is the smallest with non-trivial curvature pairs, 5 lets L-BFGS run several
# steps before it terminates on a quadratic.
DIMENSIONS = (2, 5)
# dense=True spectra: exponents k / EIGEN_GRID of the condition number, k distinct.
EIGEN_GRID = 16

# Starting points, in the order hypothesis shrinks them. "generic" comes first so
# that reaching a special start is the search's doing, not the first draw's.
GENERIC = "generic"
X0_ZERO = "x0=0"
B_ZERO = "b=0"
AT_OPTIMUM_ZERO = "b=0,x0=0"
AT_OPTIMUM = "x0=A^-1b"
STARTS = (GENERIC, X0_ZERO, B_ZERO, AT_OPTIMUM_ZERO, AT_OPTIMUM)
# Starts with a nonzero first gradient (whatever b and x0 are drawn).
AWAY_FROM_OPTIMUM = (GENERIC, X0_ZERO, B_ZERO)


@dataclasses.dataclass(frozen=True)
class Domain:
    """The region a property claims: conditioning, scales, and how far the start is from the optimum."""

    max_condition: float
    # The smallest eigenvalue spans 10**eigen_decades.
    eigen_decades: tuple[float, float]
    # |x*| = |A^-1 b| (and |x0| when b = 0) spans 10**data_decades.
    data_decades: tuple[float, float]
    # |x0 - x*| / |x*| spans 10**offset_decades for a generic start.
    offset_decades: tuple[float, float]


@dataclasses.dataclass(frozen=True)
class Problem:
    """A quadratic's data and start, drawn (start: which kind) or written in a test ("fixed")."""

    A: np.ndarray
    b: np.ndarray
    x0: np.ndarray
    start: str = "fixed"

    @property
    def dtype(self):
        return self.A.dtype

    @property
    def initial_gradient_norm(self) -> float:
        """|A x0 - b| in float64: what the seed leak's identity scale divides by."""
        A, b, x0 = (np.asarray(v, np.float64) for v in (self.A, self.b, self.x0))
        return float(np.linalg.norm(A @ x0 - b))

    def args(self):
        return self.A, self.b, self.x0


def _unit_floats(n):
    # Multiples of 1/64: an entry is 0 or at least 1/64 of the direction's scale, so the
    # drawn decades alone set the problem's scale (a free float in [-1, 1] could be 1e-300).
    return st.lists(st.integers(-64, 64).map(lambda k: k / 64), min_size=n, max_size=n)


@st.composite
def directions(draw, n: int) -> np.ndarray:
    """A vector with one entry of magnitude 1 and the others in [-1, 1]: never zero."""
    v = np.array(draw(_unit_floats(n)), np.float64)
    k = draw(st.integers(0, n - 1))
    v[k] = draw(st.sampled_from([1.0, -1.0]))
    return v


def log_uniform(decades: tuple[float, float]):
    lo, hi = decades
    return st.floats(lo, hi).map(lambda e: 10.0**e)


@st.composite
def dense_coefficients(draw, n: int) -> np.ndarray:
    """A vector whose every entry has magnitude in [1/8, 1]: no zero component."""
    magnitudes = draw(st.lists(st.integers(8, 64), min_size=n, max_size=n))
    signs = draw(st.lists(st.sampled_from([1.0, -1.0]), min_size=n, max_size=n))
    return np.array(signs) * np.array(magnitudes) / 64


@st.composite
def spd_matrices(draw, n: int, dtype, domain: Domain, dense: bool = False) -> np.ndarray:
    """A = Q diag(eigenvalues) Q^T, exactly symmetric in `dtype`, condition <= max_condition.

    Eigenvalue i copies eigenvalue source_i <= i, so repeated eigenvalues (down to
    A = cI, where L-BFGS converges in one step) are drawn as often as distinct ones.
    dense=True: a dense rotation Q and n distinct eigenvalues (see quadratic_problems).
    """
    # QR yields an orthogonal Q for any input, singular ones included.
    rows = [draw(dense_coefficients(n) if dense else _unit_floats(n)) for _ in range(n)]
    Q, _ = np.linalg.qr(np.array(rows, np.float64))
    if dense:
        # Distinct eigenvalues, on a grid of 1/EIGEN_GRID decades of the condition
        # number: neighbours differ by a factor max_condition ** (1 / EIGEN_GRID) at least.
        exponents = [
            k / EIGEN_GRID for k in draw(st.lists(st.integers(0, EIGEN_GRID), min_size=n, max_size=n, unique=True))
        ]
        sources = list(range(n))
    else:
        exponents = draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n))
        sources = [draw(st.integers(0, i)) for i in range(n)]
    eigenvalues = draw(log_uniform(domain.eigen_decades)) * np.array(
        [domain.max_condition ** exponents[s] for s in sources]
    )
    A = ((Q * eigenvalues) @ Q.T).astype(dtype)
    # Exact symmetry in the working dtype: a + b == b + a in floating point.
    return (A + A.T) / dtype(2), Q


@st.composite
def quadratic_problems(
    draw, dtype, domain: Domain, starts=STARTS, dimensions=DIMENSIONS, dense: bool = False
) -> Problem:
    """A problem drawn as (A, optimum x*, start x0), with b = A x* computed in `dtype`.

    Drawing the optimum and the start's distance from it (rather than b and x0
    independently) keeps |x0 - x*| / |x*| inside the domain: independent b and x0
    can cancel to a start within rounding of the optimum, a different regime.

    dense=True: A has n distinct eigenvalues, x*, x0 - x* (and x0 when b = 0) have a
    component of at least 1/8 of their size along every eigenvector of A, and Q is a dense
    rotation. The first gradient's Krylov space is then the whole space, so a solve has to
    explore every direction before it stops, which the implicit-function properties need:
    a gradient inside an invariant subspace (or an eigenspace of a repeated eigenvalue)
    converges in as few steps as that subspace has distinct eigenvalues, long before the
    tangents in the other directions have.
    """
    dtype = np.dtype(dtype).type
    n = draw(st.sampled_from(dimensions))
    A, Q = draw(spd_matrices(n, dtype, domain, dense))

    def direction():
        return Q @ draw(dense_coefficients(n)) if dense else draw(directions(n))

    start = draw(st.sampled_from(starts))
    optimum = direction() * draw(log_uniform(domain.data_decades))
    if start == GENERIC:
        offset = direction() * draw(log_uniform(domain.offset_decades))
        x0 = optimum + offset * np.linalg.norm(optimum) / np.linalg.norm(offset)
    elif start == B_ZERO:
        x0, optimum = optimum, np.zeros(n)
    else:
        x0 = np.zeros(n)
    if start == AT_OPTIMUM_ZERO:
        optimum = np.zeros(n)
    b = A @ optimum.astype(dtype)
    if start == AT_OPTIMUM:
        # x0 = t e_j and b = t A e_j: every product in A x0 has one nonzero term, so
        # the solver's gradient 1/2 (A x0 + A^T x0) - b is exactly zero in `dtype`.
        j = draw(st.integers(0, n - 1))
        x0 = np.zeros(n)
        x0[j] = np.linalg.norm(optimum)
        b = A[:, j] * dtype(x0[j])
    return Problem(A, b.astype(dtype), x0.astype(dtype), start)


@st.composite
def tangents(draw, problem: Problem, move_A: bool = True):
    """A direction (dA, db, dx0): dA symmetric with |dA|_2 = smallest eigenvalue of A, so
    A + h dA stays positive definite for |h| < 1 (or dA = 0 with move_A=False); db the size
    of b (of A x0 when b = 0), dx0 the size of x0 or x*."""
    n = problem.b.shape[0]
    A = np.asarray(problem.A, np.float64)
    M = np.array([draw(_unit_floats(n)) for _ in range(n)], np.float64)
    M[draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))] = 1.0  # never zero
    dA = M + M.T
    dA *= (np.linalg.eigvalsh(A)[0] / np.linalg.norm(dA, 2)) if move_A else 0.0
    b_size = max(float(np.linalg.norm(problem.b)), float(np.linalg.norm(A @ problem.x0)))
    db = draw(directions(n)) * b_size / np.sqrt(n)
    x_size = max(float(np.linalg.norm(problem.x0)), float(np.linalg.norm(np.linalg.solve(A, problem.b))))
    dx0 = draw(directions(n)) * x_size / np.sqrt(n)
    dtype = problem.dtype.type
    return tuple(v.astype(dtype) for v in (dA, db, dx0))
