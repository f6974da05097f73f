"""Derivatives through L-BFGS on a loss with data: L2-regularised logistic regression.

The problem users differentiate in hyper-parameter learning: 32 rows, 7 features whose
columns have uneven scales, a bias, labels from a logistic model (lbfgs_gate/suite/trees.py,
`logistic_problem`, drawn from a seed); parameters {"weights": (7,), "bias": ()}. The
derivative is that of the solution w.r.t. the regularisation strength l2, through 50 steps
of `chain(scale_by_lbfgs(), scale(-0.5))` in float32 (forward and reverse mode). The oracle
is the implicit-function derivative -H^-1 (w, 0) at the solution, both computed by Newton's
method in float64 numpy (trees.logistic_solution), independently of jax.

Compiled configurations: three (the unroll's jvp and its grad, float32, 50 steps; a 20-step
`optax.lbfgs()` unroll's jvp).

Domain, measured with tools/measure_float32_accuracy.py (64 seeds a cell, l2 in
{1e-3, 1e-2, 0.1, 1}, column scales within 10^+-s): with the series, where the unroll has
converged (|x - x*| <= 1e-5 |x*|) and s <= 0.5, the forward derivative is within 1.4e-2
(optax 0.2.4) and 2.7e-1 (0.2.8, l2 = 1e-3; 1.2e-2 for l2 >= 1e-2) of the implicit one,
median 1e-5; as published, up to 49 (0.2.4). With s >= 1 a fixed step 0.5 leaves most
unrolls unconverged after 50 steps, and their derivatives follow their iterates (errors
up to 1e8): not a claim anyone can make.
"""

import jax
import numpy as np
import pytest

from lbfgs_gate.suite import trees
from lbfgs_gate.suite.report import check

UNROLL = dict(objective="logistic-regression", num_steps=50)
# Relative error allowed against the implicit derivative on the problems below. With the
# series they are within 1e-4 (measured on 0.2.4 and 0.2.8); the defects put them at 0.2 to
# inf. The domain-wide worst (module docstring) is larger: these are chosen problems, not a
# property.
TOLERANCE = 1e-3

float32 = pytest.mark.parametrize("dtype", [np.float32], ids=["float32"])


def _problem(seed, dtype, **drawn):
    data, x0 = trees.logistic_problem(seed, dtype, **drawn)
    l2_tangent = (np.zeros_like(data[0]), np.zeros_like(data[1]), np.ones((), dtype))
    return data, x0, l2_tangent


def _report(what, transform, data, x0, got, tangents=None):
    return trees.tree_report(
        what,
        solver="scale_by_lbfgs_unroll",
        transform=transform,
        data=data,
        x0=x0,
        tangents=tangents,
        got=got,
        **UNROLL,
    )


def _check_reverse_gradient_is_implicit(seed, dtype, **drawn):
    """d sum(x) / d l2 by jax.grad through the unroll, against sum(-H^-1 (w, 0))."""
    data, x0, _ = _problem(seed, dtype, **drawn)
    (d_data, d_x0) = trees.compiled("scale_by_lbfgs_unroll", "grad", **UNROLL)(data, x0)
    gradient = {"data": d_data, "x0": d_x0}
    check(
        trees.all_finite(gradient),
        lambda: _report(
            f"jax.grad through scale_by_lbfgs on logistic regression (seed {seed}, {drawn}) is not finite",
            "grad",
            data,
            x0,
            gradient,
        ),
    )
    implicit = float(trees.flat(trees.logistic_solution(data)[1]).sum())
    error = abs(float(d_data[2]) - implicit) / abs(implicit)
    check(
        error <= TOLERANCE,
        lambda: _report(
            f"d sum(x) / d l2 = {float(d_data[2])} is not the implicit {implicit} (relative {error:.3g} > "
            f"{TOLERANCE}; seed {seed}, {drawn})",
            "grad",
            data,
            x0,
            gradient,
        ),
    )


@pytest.mark.defect("reverse-nan")
@float32
def test_reverse_gradient_wrt_regularisation_is_the_implicit_one(dtype):
    # Measured relative errors 4.9e-6 (0.2.4 + series) and 4.0e-6 (0.2.8 + series); with the
    # memory still differentiated (0002 and 0004 only) 4.3e-7 and 1.3e-4: this detects the
    # reverse NaN alone.
    _check_reverse_gradient_is_implicit(3, dtype, scale_decades=0.5, l2=0.1)


@pytest.mark.defect("memory-leak")
@float32
def test_forward_derivative_wrt_regularisation_is_the_implicit_one(dtype):
    # Whether the tangent of the memory blows up depends on the last bits of the iterates;
    # seed 35 shows it on both jax lines: relative error 4.6e-2 on optax 0.2.4 (jax 0.4.35) and
    # inf on 0.2.8 (jax 0.10.2) as published, 281 with 0001, 0002, 0004 and 0005; with the series
    # 9.5e-6 and 9.2e-6. Found among seeds 0 to 63 (the first two that showed it, 0 and 5, each
    # showed it on one jax line only).
    data, x0, l2_tangent = _problem(35, dtype, scale_decades=0.5, l2=0.1)
    tangents = (l2_tangent, jax.tree.map(np.zeros_like, x0))
    x, tangent = trees.compiled("scale_by_lbfgs_unroll", "jvp", **UNROLL)(data, x0, *tangents)
    solution, implicit = trees.logistic_solution(data)
    assert trees.relative_error(x, solution) <= 1e-5, "precondition: the unroll has converged"
    error = trees.relative_error(tangent, implicit) if trees.all_finite(tangent) else np.inf
    check(
        error <= TOLERANCE,
        lambda: _report(
            f"jvp along l2 is {tangent}, not the implicit {implicit} (relative {error:.3g} > {TOLERANCE})",
            "jvp",
            data,
            x0,
            tangent,
            tangents,
        ),
    )


@pytest.mark.defect("float32-rounding-noise-curvature")
@float32
def test_reverse_gradient_past_convergence_is_the_implicit_one(dtype):
    """jax.grad through 50 float32 steps of a logistic regression run past convergence is the
    implicit derivative: it is not where curvature pairs of rounding noise (weights 1/(y^T s) up
    to 1.2e24, some negative) throw the iterate off the solution, a limit no derivative-only
    patch fixes (docs/tests.md, the limits)."""
    # Which problems it hits depends on the last bits of the iterates, so on the jax line: seed
    # 151 (jax 0.4.35: NaN with 0001 to 0004, 1.1e16 against -3.6 with 0005), 386 (jax 0.10.2,
    # 1.3e-2 off), 12 (jax 0.10.2 with 0006, 1.3e4 off). One detector over the three, as each
    # alone is not a limit on every jax line; the report names the seed that showed it.
    _check_reverse_gradient_is_implicit(151, dtype)
    _check_reverse_gradient_is_implicit(386, dtype)
    _check_reverse_gradient_is_implicit(12, dtype)


@float32
def test_forward_derivative_in_the_float32_domain_is_the_implicit_one(dtype):
    # PASS_TO_PASS: a problem of the measured domain (column scales within 10^+-0.5, l2 = 0.1,
    # converged) on which no leak shows in any release: 1.9e-7 relative on optax 0.2.4 and
    # 2.7e-4 on 0.2.8 as published, 2.7e-6 and 3.2e-6 with the series.
    data, x0, l2_tangent = _problem(3, dtype, scale_decades=0.5, l2=0.1)
    x, tangent = trees.compiled("scale_by_lbfgs_unroll", "jvp", **UNROLL)(
        data, x0, l2_tangent, jax.tree.map(np.zeros_like, x0)
    )
    solution, implicit = trees.logistic_solution(data)
    assert trees.relative_error(x, solution) <= 1e-5
    assert trees.relative_error(tangent, implicit) <= TOLERANCE


# optax.lbfgs() with its zoom linesearch, 20 steps: converged (|x - x*| <= 2e-7 |x*|) and past.
LBFGS = dict(objective="logistic-regression", num_steps=20)


@pytest.mark.defect("stepsize-leak")
@float32
def test_lbfgs_forward_derivative_wrt_regularisation_is_the_implicit_one(dtype):
    # Measured on the 48 problems (seeds 0 to 23, l2 in {0.1, 1}, column scales within
    # 10^+-0.5): with the stepsize differentiated (0.2.4 with 0001 to 0003; 0.2.8 with 0002 and
    # 0003), 15 and 27 of them are off by 3e-3 to inf; with the series (or with only the
    # memory differentiated) none is off by more than 1e-3. This one is off on both: 27 and inf.
    data, x0, l2_tangent = _problem(2, dtype, scale_decades=0.5, l2=1.0)
    tangents = (l2_tangent, jax.tree.map(np.zeros_like, x0))
    x, tangent = trees.compiled("lbfgs_unroll", "jvp", **LBFGS)(data, x0, *tangents)
    solution, implicit = trees.logistic_solution(data)
    assert trees.relative_error(x, solution) <= 1e-5, "precondition: the solve has converged"
    error = trees.relative_error(tangent, implicit) if trees.all_finite(tangent) else np.inf
    check(
        error <= TOLERANCE,
        lambda: trees.tree_report(
            f"jvp along l2 of optax.lbfgs() is {tangent}, not the implicit {implicit} (relative {error:.3g} > "
            f"{TOLERANCE})",
            solver="lbfgs_unroll",
            transform="jvp",
            data=data,
            x0=x0,
            tangents=tangents,
            got=tangent,
            **LBFGS,
        ),
    )


@pytest.mark.parametrize("dtype", [np.float64], ids=["float64"])
def test_newton_oracle_agrees_with_autodiff_hessian(dtype):
    # PASS_TO_PASS, the oracle's own check: at Newton's solution, -H^-1 d(grad)/d l2 with H by
    # jax.hessian (trees.implicit_tangent) is Newton's derivative.
    data, _, l2_tangent = _problem(2, dtype, scale_decades=0.5, l2=1.0)
    solution, derivative = trees.logistic_solution(data)
    autodiff = trees.implicit_tangent("logistic-regression", data, solution, l2_tangent)
    assert trees.relative_error(autodiff, derivative) <= 1e-10
