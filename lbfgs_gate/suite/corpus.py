"""Derivatives never worse than the release: a corpus of users' loops, each with an independent
reference, measured on the release as published and on the release with the series.

The gate's patched sessions (patched, upstream, the fork gate) record the release's errors on the
tree without the series, in a subprocess with only that tree's optax on the path
(`python -m lbfgs_gate.suite.corpus --output F --expect-optax-in DIR`, run by
lbfgs_gate.pipeline.release_derivatives, named to the suite in LBFGS_GATE_RELEASE_DERIVATIVES),
as they record the primal reference; test_never_worse.py measures the same workloads with the
series and judges each by the rule below.

Each workload is a function `(dtype) -> (derivative, reference)`, written as users write the loop:
the how-to's `run_opt` (optax.lbfgs() in a while_loop stopped on |grad| < tol, no extra step),
fixed-length `fori_loop`s and `scan`s of optax.lbfgs() or of the notebook's
chain(scale_by_lbfgs(), scale(-lr)). References: the implicit-function derivative (numpy float64)
for loops that converge, float64 central differences of the same loop for short unrolls. The rule,
with `release` and `series` the relative errors (not finite or not computed: infinite):

    bound = min(max(10 x release, floor), cap)   where the release is finite
          = cap                                  where it is not (NaN, inf, an exception)
    the series must be finite and <= bound
    floor, cap: 1e-6, 1e-3 in float64; 1e-3, 2e-2 in float32

Where the series' default is known to fall short of it on every release the gate runs (0.2.4 and
0.2.8), the workload is a detector of the limit `derivative-short-of-release` (lbfgs_gate/defects.py):
strict, so that the day a rule of the series meets the bound the gate says so. Left out, measured
(docs/derivative-rule/README.md): 50 lbfgs steps of multi-output least squares, whose release is
garbage on 0.2.4 (8.8e27) and exact on 0.2.8 (2e-16), so the series (1e-4, 2e-5) falls short of the
rule on one and not the other.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

FLOOR = {"float64": 1e-6, "float32": 1e-3}
CAP = {"float64": 1e-3, "float32": 2e-2}
VARIABLE = "LBFGS_GATE_RELEASE_DERIVATIVES"
# The folder holding the tree without the series as the package optax_release (test_never_worse.py's
# property runs it beside the optax under test): lbfgs_gate.pipeline.release_package.
PACKAGE_VARIABLE = "LBFGS_GATE_RELEASE_PACKAGE"
# `lbfgs-gate check`'s quick comparison with the release: one measurement of each class of loop
# (multi-output least squares, pytrees, d > n ridge and logistic regression with per-feature
# penalties, complex parameters, short unrolls (through the first step's capped scale, the registered
# limit, through the zoom's stepsize, through its interpolations inside the interval, and on a
# Hessian that changes from step to step), a loop run past convergence), the cheapest of each.
QUICK = (
    ("multi_output_3x8_run_opt", "float64"),
    ("pytree_multi_output_run_opt", "float64"),
    ("ridge_d_gt_n_per_feature_penalties", "float64"),
    ("logistic_d_gt_n_per_feature_penalties", "float64"),
    ("complex_5d_run_opt", "float64"),
    ("lbfgs_5_steps_scan_jacfwd", "float64"),
    ("ridge_d_gt_n_3_steps_fori", "float64"),
    ("logistic_d_gt_n_6_steps_fori", "float64"),
    ("stiff_quadratic_2_steps_fori", "float64"),
    ("notebook_1000_steps_jacrev", "float32"),
)


@dataclass(frozen=True)
class Workload:
    name: str
    function: object  # (numpy dtype) -> (derivative, reference)
    dtypes: tuple[str, ...]
    # The limit this workload detects where the series falls short ("" where it must pass).
    limit: str = ""

    @property
    def summary(self) -> str:
        return (self.function.__doc__ or self.name).strip().splitlines()[0]


def bound(release, dtype: str) -> float:
    """The error the series may have, given the release's (a float, NaN or an exception's text)."""
    if isinstance(release, float) and math.isfinite(release):
        return min(max(10 * release, FLOOR[dtype]), CAP[dtype])
    return CAP[dtype]


def relative_error(got, want) -> float:
    import numpy as np

    got, want = np.asarray(got), np.asarray(want)
    if not np.all(np.isfinite(got)):
        return math.nan
    wide = np.complex128 if np.iscomplexobj(want) or np.iscomplexobj(got) else np.float64
    return float(np.linalg.norm((got.astype(wide) - want.astype(wide)).ravel()) / np.linalg.norm(want.ravel()))


def shown(error) -> str:
    return f"{error:.3g}" if isinstance(error, float) else str(error)


# Logistic regression with L2 penalties e^eta (one, or one per feature): the corpus's loops and
# test_exact_unrolls.py's report of the exact phase share its loss and data.
def logistic_loss(w, eta, x, t):
    import jax.numpy as jnp

    z = x @ w
    return jnp.sum(jnp.logaddexp(0.0, z) - t * z) + 0.5 * jnp.sum(jnp.exp(eta) * w * w)


def logistic_data(seed, n, d):
    """n samples of d features and their labels; 10 validation samples."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x, t = rng.normal(size=(n, d)), (rng.normal(size=n) > 0).astype(float)
    return x, t, rng.normal(size=(10, d)), (rng.normal(size=10) > 0).astype(float)


def workloads() -> dict[str, Workload]:  # noqa: C901, PLR0915 - one namespace: the loops and their data
    """The corpus, by name. Imports jax and optax: call it where the optax to measure is importable."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from lbfgs_gate.suite import claims, solvers, user_loops

    run_opt, tolerance = user_loops.run_opt, user_loops.TOLERANCE
    corpus: dict[str, Workload] = {}

    def workload(*dtypes, limit=""):
        def register(function):
            corpus[function.__name__] = Workload(function.__name__, function, dtypes, limit)
            return function

        return register

    short = functools.partial(workload, limit="derivative-short-of-release")

    def solve(init, fun, dtype):
        return run_opt(init, fun, optax.lbfgs(), user_loops.MAX_ITER, tolerance[np.dtype(dtype)])[0]

    def lbfgs_steps(init, fun, num_steps, loop="fori"):
        """num_steps of optax.lbfgs() with no stopping rule: a fori_loop, or a scan."""
        opt = optax.lbfgs()
        step = user_loops.lbfgs_step(fun, opt)
        carry = (init, opt.init(init))
        if loop == "scan":
            return jax.lax.scan(lambda c, _: (step(c), None), carry, length=num_steps)[0][0]
        return jax.lax.fori_loop(0, num_steps, lambda _, c: step(c), carry)[0]

    def central_differences(fn, theta, h=1e-6):
        theta = np.asarray(theta, np.float64)
        columns = []
        for i in range(theta.size):
            e = np.zeros_like(theta)
            e.flat[i] = h
            columns.append((np.asarray(fn(theta + e)) - np.asarray(fn(theta - e))).ravel() / (2 * h))
        return np.stack(columns, axis=-1)

    # --- multi-output least squares: a (d, k) parameter, Hessian I_k (x) X^T X -----------------

    def mols_data(d, k, n=12, seed=0):
        rng = np.random.default_rng(seed)
        return rng.normal(size=(n, d)), rng.normal(size=(n, k))

    def mols_loss(w, x, y):
        r = x @ w - y
        return 0.5 * jnp.sum(r * r)

    def mols_reference(x, k):
        # W* = (X^T X)^-1 X^T Y: dW*/dY = kron((X^T X)^-1 X^T, I_k), laid out (d, k, n, k).
        return np.einsum("dn,kl->dknl", np.linalg.solve(x.T @ x, x.T), np.eye(k))

    @functools.partial(jax.jit, static_argnames=("steps",))
    def mols_jacobian(x, y, w0, steps):
        def solution(y):
            fun = functools.partial(mols_loss, x=x, y=y)
            return solve(w0, fun, x.dtype) if steps == 0 else lbfgs_steps(w0, fun, steps)

        return jax.jacfwd(solution)(y)

    def mols(dtype, d, k, steps=0):
        x, y = mols_data(d, k)
        return mols_jacobian(x.astype(dtype), y.astype(dtype), np.zeros((d, k), dtype), steps), mols_reference(x, k)

    @workload("float64", "float32")
    def multi_output_3x8_run_opt(dtype):
        """multi-output least squares, 3 features x 8 outputs (each eigenvalue 8 times): run_opt, jacfwd of W* wrt Y"""
        return mols(dtype, 3, 8)

    @workload("float64")
    def multi_output_6x3_run_opt(dtype):
        """multi-output least squares, 6 features x 3 outputs (each eigenvalue 3 times): run_opt, jacfwd"""
        return mols(dtype, 6, 3)

    @workload("float64")
    def multi_output_3x8_fori10(dtype):
        """multi-output least squares: a fori_loop of 10 lbfgs steps (converged), jacfwd"""
        return mols(dtype, 3, 8, steps=10)

    @jax.jit
    def mols_input_tangent(x, dx, y, w0):
        def solution(x):
            return solve(w0, functools.partial(mols_loss, x=x, y=y), x.dtype)

        return jax.jvp(solution, (x,), (dx,))[1]

    @workload("float64")
    def multi_output_3x8_run_opt_jvp_wrt_inputs(dtype):
        """multi-output least squares 3 x 8: run_opt, jvp of W* along a change of the inputs X (the tangent
        forced along the iterates; the Hessian keeps its repeated eigenvalues)"""
        x, y = mols_data(3, 8)
        dx = np.random.default_rng(5).normal(size=x.shape)
        w = np.linalg.solve(x.T @ x, x.T @ y)
        # X^T (X W - Y) = 0, differentiated: dW = (X^T X)^-1 (dX^T (Y - X W) - X^T dX W).
        reference = np.linalg.solve(x.T @ x, dx.T @ (y - x @ w) - x.T @ dx @ w)
        return mols_input_tangent(*(a.astype(dtype) for a in (x, dx, y)), np.zeros((3, 8), dtype)), reference

    # --- pytree parameters: multi-output least squares with an intercept -----------------------

    def intercept_loss(p, x, y):
        r = x @ p["W"] + p["b"] - y
        return 0.5 * jnp.sum(r * r)

    @jax.jit
    def intercept_jacobian(x, y, p0):
        def solution(y):
            p = solve(p0, functools.partial(intercept_loss, x=x, y=y), x.dtype)
            return jnp.concatenate([p["W"], p["b"][None]], axis=0)

        return jax.jacfwd(solution)(y)

    @workload("float64")
    def pytree_multi_output_run_opt(dtype):
        """pytree parameters {W, b} (multi-output least squares with an intercept): run_opt, jacfwd"""
        x, y = mols_data(3, 5, n=10, seed=3)
        p0 = {"W": np.zeros((3, 5), dtype), "b": np.zeros((5,), dtype)}
        reference = mols_reference(np.concatenate([x, np.ones((x.shape[0], 1))], axis=1), 5)
        return intercept_jacobian(x.astype(dtype), y.astype(dtype), p0), reference

    # --- ridge with per-feature penalties, d > n: the hypergradient of a validation loss -------

    def ridge_loss(w, eta, x, y):
        r = x @ w - y
        return 0.5 * jnp.sum(r * r) + 0.5 * jnp.sum(jnp.exp(eta) * w * w)

    @jax.jit
    def ridge_hypergradient(eta, x, y, xv, yv, w0):
        def validation(eta):
            w = solve(w0, functools.partial(ridge_loss, eta=eta, x=x, y=y), x.dtype)
            r = xv @ w - yv
            return 0.5 * jnp.sum(r * r)

        return jax.jacfwd(validation)(eta)

    def ridge_data():
        """6 samples of 15 features and their targets; 8 validation samples."""
        rng = np.random.default_rng(1)
        return rng.normal(size=(6, 15)), rng.normal(size=6), rng.normal(size=(8, 15)), rng.normal(size=8)

    def ridge(dtype, eta):
        x, y, xv, yv = ridge_data()
        got = ridge_hypergradient(*(a.astype(dtype) for a in (eta, x, y, xv, yv)), np.zeros(15, dtype))
        lam = np.exp(eta)
        hessian = x.T @ x + np.diag(lam)
        w = np.linalg.solve(hessian, x.T @ y)
        v = np.linalg.solve(hessian, xv.T @ (xv @ w - yv))
        return got, -v * lam * w  # dw/deta_i = -H^-1 e_i lam_i w_i

    @workload("float64")
    def ridge_d_gt_n_per_feature_penalties(dtype):
        """ridge, 15 features > 6 samples, distinct per-feature penalties: run_opt, hypergradient by jacfwd"""
        return ridge(dtype, np.random.default_rng(7).normal(size=15) * 0.3)

    @workload("float64", limit="stopping-rule-ignores-tangent")
    def ridge_d_gt_n_equal_penalties(dtype):
        """ridge, d > n, equal penalties (eigenvalue repeated d - n times, split by the tangent): hypergradient"""
        return ridge(dtype, np.zeros(15))

    # --- logistic regression, d > n, L2 penalties (one, or one per feature): hypergradient ------

    @jax.jit
    def logistic_validation(w, xv, tv):
        z = xv @ w
        return jnp.sum(jnp.logaddexp(0.0, z) - tv * z)

    def logistic_hypergradient(eta, x, t, xv, tv, w0):
        def validation(eta):
            return logistic_validation(solve(w0, functools.partial(logistic_loss, eta=eta, x=x, t=t), x.dtype), xv, tv)

        return jax.jacfwd(validation)(eta)

    def logistic(dtype, eta, seed, n, d):
        x, t, xv, tv = logistic_data(seed, n, d)
        got = logistic_hypergradient(*(np.asarray(a, dtype) for a in (eta, x, t, xv, tv)), np.zeros(d, dtype))
        lam, w = np.exp(eta) * np.ones(d), np.zeros(d)
        for _ in range(100):  # the reference: Newton in numpy float64, then the implicit function theorem
            p = 1 / (1 + np.exp(-x @ w))
            hessian = x.T @ (x * (p * (1 - p))[:, None]) + np.diag(lam)
            w = w - np.linalg.solve(hessian, x.T @ (p - t) + lam * w)
        pv = 1 / (1 + np.exp(-xv @ w))
        per_feature = -np.linalg.solve(hessian, xv.T @ (pv - tv)) * lam * w  # dw/deta_i = -H^-1 e_i lam_i w_i
        return got, per_feature if np.ndim(eta) else per_feature.sum()

    @workload("float64")
    def logistic_d_gt_n_penalty(dtype):
        """logistic regression, 20 features > 8 samples, L2 penalty: run_opt, hypergradient by jacfwd"""
        return logistic(dtype, 0.0, seed=2, n=8, d=20)

    @workload("float64")
    def logistic_d_gt_n_per_feature_penalties(dtype):
        """logistic regression, 12 features > 6 samples, per-feature L2 penalties: run_opt, hypergradient"""
        return logistic(dtype, np.random.default_rng(40).normal(size=12) * 0.5, seed=4, n=6, d=12)

    # --- short unrolls of the same problems: a few fori_loop steps, not converged -----------------
    # The reference is the loop's own derivative (float64 central differences of the same loop); the
    # release's derivative there is the loop's to rounding.

    @functools.partial(jax.jit, static_argnames=("steps",))
    def ridge_unroll(eta, x, y, steps):
        return lbfgs_steps(jnp.zeros(x.shape[1], x.dtype), functools.partial(ridge_loss, eta=eta, x=x, y=y), steps)

    @workload("float64")
    def ridge_d_gt_n_3_steps_fori(dtype):
        """short unroll: 3 lbfgs steps of the d > n ridge (a quadratic), jacfwd of w wrt the per-feature penalties"""
        x, y = (a.astype(dtype) for a in ridge_data()[:2])
        eta = (np.random.default_rng(7).normal(size=15) * 0.3).astype(dtype)
        got = jax.jit(jax.jacfwd(ridge_unroll), static_argnames=("steps",))(eta, x, y, steps=3)
        return got, central_differences(lambda e: ridge_unroll(e, x, y, steps=3), eta)

    @functools.partial(jax.jit, static_argnames=("steps",))
    def multi_output_ridge_unroll(eta, x, y, steps):
        def fun(w):
            return mols_loss(w, x, y) + 0.5 * jnp.exp(eta) * jnp.sum(w * w)

        return lbfgs_steps(jnp.zeros((x.shape[1], y.shape[1]), x.dtype), fun, steps, loop="scan")

    @workload("float64")
    def multi_output_ridge_d_gt_n_3_steps_scan(dtype):
        """short unroll: a scan of 3 lbfgs steps of multi-output ridge, 5 features > 2 samples x 4 outputs
        (the penalty's eigenvalue 12 times), jacfwd of W wrt the log-penalty"""
        x, y = (a.astype(dtype) for a in mols_data(5, 4, n=2, seed=9))
        eta = np.asarray([-1.0], dtype)
        got = jax.jit(jax.jacfwd(multi_output_ridge_unroll), static_argnames=("steps",))(eta[0], x, y, steps=3)
        reference = central_differences(lambda e: multi_output_ridge_unroll(e[0], x, y, steps=3), eta)
        return np.asarray(got).reshape(reference.shape), reference

    @functools.partial(jax.jit, static_argnames=("steps",))
    def logistic_unroll_validation(eta, x, t, xv, tv, steps):
        w = lbfgs_steps(jnp.zeros(x.shape[1], x.dtype), functools.partial(logistic_loss, eta=eta, x=x, t=t), steps)
        return logistic_validation(w, xv, tv)

    def logistic_unroll(dtype, steps):
        data = tuple(np.asarray(a, dtype) for a in logistic_data(seed=2, n=8, d=20))
        eta = np.asarray([-3.0], dtype)
        hypergradient = jax.jit(jax.jacfwd(logistic_unroll_validation), static_argnames=("steps",))
        got = hypergradient(eta[0], *data, steps=steps)
        return got, central_differences(lambda e: logistic_unroll_validation(e[0], *data, steps=steps), eta)

    @workload("float64")
    def logistic_d_gt_n_6_steps_fori(dtype):
        """short unroll: 6 lbfgs steps of d > n logistic regression (penalty e^-3), hypergradient by jacfwd;
        its Hessian changes from step to step (the two newest pairs disagree on one Hessian by 0.1 to
        0.25 of their terms) while the updates shrink"""
        return logistic_unroll(dtype, 6)

    @short("float64")
    def logistic_d_gt_n_10_steps_fori(dtype):
        """short unroll: the same, 10 steps, past the exact phase's end (the updates fall below a
        thousandth of the largest at the eighth step): the derivative is the solve's from there"""
        return logistic_unroll(dtype, 10)

    @functools.partial(jax.jit, static_argnames=("steps",))
    def quadratic_unroll(b, a, steps):
        return lbfgs_steps(jnp.zeros_like(b), lambda w: 0.5 * w @ (a @ w) - b @ w, steps)

    @workload("float64")
    def stiff_quadratic_2_steps_fori(dtype):
        """short unroll: 2 lbfgs steps of a stiff 5-D quadratic (eigenvalues 1 to 30, |b| = 0.3), jacfwd wrt b;
        the first step of 1 overshoots and the zoom linesearch interpolates twice inside its interval"""
        rng = np.random.default_rng(0)
        q = np.linalg.qr(rng.normal(size=(5, 5)))[0]
        a = ((q * np.linspace(1.0, 30.0, 5)) @ q.T).astype(dtype)
        b = rng.normal(size=5)
        b = (0.3 * b / np.linalg.norm(b)).astype(dtype)
        got = jax.jit(jax.jacfwd(quadratic_unroll), static_argnames=("steps",))(b, a, steps=2)
        return got, central_differences(lambda b: quadratic_unroll(b, a, steps=2), b)

    # --- complex parameters: f(z) = 1/2 Re(z^H A z) - Re(b^H z) --------------------------------

    @jax.jit
    def complex_tangent(a, b, z0, db):
        def solution(b):
            def fun(z):
                return 0.5 * jnp.real(jnp.vdot(z, a @ z)) - jnp.real(jnp.vdot(b, z))

            opt = optax.lbfgs()

            def step(carry):
                z, state = carry
                value, grad = jax.value_and_grad(fun)(z)
                grad = jnp.conj(grad)
                updates, state = opt.update(grad, state, z, value=value, grad=grad, value_fn=fun)
                return optax.apply_updates(z, updates), state

            def continuing(carry):
                z, state = carry
                count = optax.tree_utils.tree_get(state, "count")
                return (count == 0) | ((count < user_loops.MAX_ITER) & (jnp.linalg.norm(jax.grad(fun)(z)) >= 1e-11))

            return jax.lax.while_loop(continuing, step, (z0, opt.init(z0)))[0]

        return jax.jvp(solution, (b,), (db,))[1]

    @workload("float64")
    def complex_5d_run_opt(dtype):
        """complex parameters (each eigenvalue twice in real form): a run-to-tolerance loop, jvp wrt b"""
        rng = np.random.default_rng(0)
        q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
        a = (q * np.geomspace(1.0, 30.0, 5)) @ q.T
        rng = np.random.default_rng(5)
        b, db = (rng.normal(size=5) + 1j * rng.normal(size=5) for _ in range(2))
        got = complex_tangent(a.astype(dtype), b.astype(np.complex128), np.zeros(5, np.complex128), db)
        return got, np.linalg.solve(a, db)

    # --- examples/lbfgs.ipynb's problem: the notebook's loop and optax.lbfgs() steps ----------

    @functools.partial(jax.jit, static_argnames=("steps", "loop"))
    def notebook_final(w_opt, mat, w0, steps, loop):
        if loop == "notebook":
            return solvers.notebook_unroll(mat, w_opt, w0, num_steps=steps, learning_rate=0.1)
        return lbfgs_steps(w0, lambda w: 0.5 * (w - w_opt).dot(mat.dot(w - w_opt)), steps, loop)

    @functools.partial(jax.jit, static_argnames=("steps", "loop", "mode"))
    def notebook_jacobian(w_opt, mat, w0, steps, loop, mode):
        jacobian = jax.jacrev if mode == "reverse" else jax.jacfwd
        return jacobian(lambda w: notebook_final(w, mat, w0, steps, loop))(w_opt)

    def notebook_short(dtype, steps, loop, mode):
        mat, w_opt, w0 = user_loops.notebook_problem(dtype)
        got = notebook_jacobian(w_opt, mat, w0, steps, loop, mode)
        itself = functools.partial(notebook_final, mat=mat, w0=w0, steps=steps, loop=loop)
        return got, central_differences(itself, w_opt)

    @short("float64")
    def notebook_16_steps_jacrev(dtype):
        """short unroll: the notebook's 16 scale_by_lbfgs steps, jacrev against the loop's own central differences"""
        return notebook_short(dtype, 16, "notebook", "reverse")

    @short("float64")
    def lbfgs_5_steps_scan_jacfwd(dtype):
        """short unroll: a scan of 5 optax.lbfgs() steps (not converged), jacfwd against its central differences"""
        return notebook_short(dtype, 5, "scan", "forward")

    @workload("float64", "float32")
    def notebook_1000_steps_jacrev(dtype):
        """past convergence: the notebook's scale_by_lbfgs loop run 1000 steps, jacrev (the solution's: I)"""
        mat, w_opt, w0 = user_loops.notebook_problem(dtype)
        return notebook_jacobian(w_opt, mat, w0, 1000, "notebook", "reverse"), np.eye(8)

    # --- the suite's loops ------------------------------------------------------------------------
    # Those of user_loops.py (run_opt on Rosenbrock, Himmelblau, Beale, the backtracking linesearch,
    # vmap, second derivatives) are held by test_user_loops.py to tolerances at or below the rule's
    # floor, which implies the rule whatever the release gives: not measured twice. The suite's
    # solve with its extra step is held to claims.IMPLICIT_TOLERANCE (1e-3), looser: measured here.

    @workload("float64")
    def converged_solve_with_an_extra_step_jacfwd(dtype):
        """the suite's solve (claims.IMPLICIT_SOLVE: stopped on its rule, then one more step), jacfwd wrt b: A^-1"""
        rng = np.random.default_rng(11)
        q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
        a = ((q * np.geomspace(1.0, 100.0, 6)) @ q.T).astype(dtype)
        b = rng.normal(size=6).astype(dtype)
        jacobian = solvers.compiled("lbfgs_solve", "jacfwd", **claims.IMPLICIT_SOLVE)(a, b, np.zeros(6, dtype))
        return jacobian, np.linalg.inv(a.astype(np.float64))

    return corpus


# --- recording the release's errors (the gate's patched sessions, on the tree without the series) ---


def measure(item: Workload, dtype: str):
    """The relative error of one workload in `dtype`, x64 set to match: a float (NaN where the
    derivative is not finite), or the text of the exception that stopped the loop."""
    import jax
    import numpy as np

    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", dtype == "float64")
    try:
        return relative_error(*item.function(np.dtype(dtype)))
    except Exception as exception:  # noqa: BLE001 - the release may refuse a loop (complex before 0.2.5)
        return f"{type(exception).__name__}: {(str(exception).splitlines() or [''])[0][:160]}"
    finally:
        jax.config.update("jax_enable_x64", previous)


def parse_measurement(text: str) -> tuple[str, str]:
    """NAME:DTYPE (the recorder's --only) as a pair."""
    name, _, dtype = text.partition(":")
    return name, dtype


def record(output: Path, only: tuple[tuple[str, str], ...] = ()) -> None:
    """The release's error on every measurement of the corpus, or on `only`'s (name, dtype) pairs."""
    corpus = workloads()
    unknown = [pair for pair in only if pair[0] not in corpus or pair[1] not in corpus[pair[0]].dtypes]
    if unknown:
        sys.exit(f"no measurement {unknown[0][0]}:{unknown[0][1]} in the corpus")
    records = []
    for item in corpus.values():
        for dtype in item.dtypes:
            if only and (item.name, dtype) not in only:
                continue
            records.append({"workload": item.name, "dtype": dtype, "error": measure(item, dtype)})
            print(f"{item.name} {dtype}: {shown(records[-1]['error'])}", flush=True)
    document = {"optax": version("optax"), "jax": version("jax"), "records": records}
    output.write_text(json.dumps(document, indent=1) + "\n")


def load(path: Path) -> dict[tuple[str, str], object]:
    document = json.loads(Path(path).read_text())
    return {(r["workload"], r["dtype"]): r["error"] for r in document["records"]}


def reference_path() -> Path | None:
    value = os.environ.get(VARIABLE)
    return Path(value) if value else None


def main() -> int:
    parser = argparse.ArgumentParser(description="record the release's errors on the corpus")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--expect-optax-in", required=True, help="the directory optax must be imported from")
    parser.add_argument(
        "--only", action="append", default=[], type=parse_measurement, metavar="NAME:DTYPE", help="only these"
    )
    arguments = parser.parse_args()
    import optax

    if not Path(optax.__file__).resolve().is_relative_to(Path(arguments.expect_optax_in).resolve()):
        sys.exit(f"optax imported from {optax.__file__}, not from {arguments.expect_optax_in}")
    record(arguments.output, tuple(arguments.only))
    return 0


if __name__ == "__main__":
    sys.exit(main())
