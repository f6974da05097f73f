"""Derivatives never worse than the release (issue 24): a corpus of users' loops, measured on the
release as published and on the release with the series, judged by the issue's rule.

    python tools/never_worse.py [--release 0.2.8] [--series patches/series] [--only NAME,...]

Run in an environment where optax, jax and lbfgs_gate import (`.nox/patched/bin/python
tools/never_worse.py` from the clone). The release defaults to the installed optax's version.
The two trees are the gate's own: the pristine tree (lbfgs_gate.pipeline.pristine_tree) and the
patched tree (lbfgs_gate.tree.prepare), built once and reused. Each tree is measured in a
subprocess per dtype, with only that tree's optax package first on PYTHONPATH (copied out, as
pipeline.primal_reference records the primal reference) and jax_enable_x64 set by the dtype.

Each workload is one function `workload(dtype) -> (derivative, reference)`; the first line of its
docstring names the class of loop it stands for. References: the implicit-function derivative
(numpy float64) for solves that stop on their rule, float64 central differences of the same loop
for short unrolls. The rule (issue 24), with `published` and `series` the relative errors:

    where published is finite:  series <= max(10 x published, floor)
    always:                     series <= cap          (and finite)
    floor, cap: 1e-6, 1e-3 in float64; 1e-3, 2e-2 in float32

One line per workload, PASS or FAIL; exit status 1 if any FAIL. A measurement tool, not a gate
test yet: nothing runs it but you.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOR = {"float64": 1e-6, "float32": 1e-3}
CAP = {"float64": 1e-3, "float32": 2e-2}

# --- the corpus (imported only in the measuring subprocess: jax's x64 is set first) ----------

WORKLOADS: dict[str, tuple[callable, tuple[str, ...]]] = {}


def workload(*dtypes):
    def register(function):
        WORKLOADS[function.__name__] = (function, dtypes)
        return function

    return register


def corpus():  # noqa: C901, PLR0915 - one namespace for the workloads, built after jax's config
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    tol = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}

    def tree_norm(tree):
        return jnp.sqrt(sum(jnp.sum(jnp.abs(leaf) ** 2) for leaf in jax.tree.leaves(tree)))

    def run_opt(init_params, fun, max_iter, tolerance, opt=None):
        """The how-to's loop: optax.lbfgs() steps while |grad| >= tol (at least one)."""
        opt = opt or optax.lbfgs()
        value_and_grad_fun = optax.value_and_grad_from_state(fun)

        def step(carry):
            params, state = carry
            value, grad = value_and_grad_fun(params, state=state)
            updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
            return optax.apply_updates(params, updates), state

        def continuing(carry):
            _, state = carry
            count = optax.tree_utils.tree_get(state, "count")
            err = tree_norm(optax.tree_utils.tree_get(state, "grad"))
            return (count == 0) | ((count < max_iter) & (err >= tolerance))

        return jax.lax.while_loop(continuing, step, (init_params, opt.init(init_params)))[0]

    def fori_lbfgs(init_params, fun, num_steps):
        """num_steps of optax.lbfgs() in a fori_loop, no stopping rule."""
        opt = optax.lbfgs()
        value_and_grad_fun = optax.value_and_grad_from_state(fun)

        def body(_, carry):
            params, state = carry
            value, grad = value_and_grad_fun(params, state=state)
            updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
            return optax.apply_updates(params, updates), state

        return jax.lax.fori_loop(0, num_steps, body, (init_params, opt.init(init_params)))[0]

    def fixed_step_loop(init_params, fun, num_steps, learning_rate):
        """examples/lbfgs.ipynb's first loop: chain(scale_by_lbfgs(), scale(-lr)), fixed steps."""
        opt = optax.chain(optax.scale_by_lbfgs(), optax.scale(-learning_rate))

        def body(_, carry):
            params, state = carry
            updates, state = opt.update(jax.grad(fun)(params), state, params)
            return optax.apply_updates(params, updates), state

        return jax.lax.fori_loop(0, num_steps, body, (init_params, opt.init(init_params)))[0]

    def central_differences(fn, theta, h=1e-6):
        theta = np.asarray(theta, np.float64)
        columns = []
        for i in range(theta.size):
            e = np.zeros_like(theta)
            e.flat[i] = h
            columns.append((np.asarray(fn(theta + e)) - np.asarray(fn(theta - e))).ravel() / (2 * h))
        return np.stack(columns, axis=-1)

    # multi-output least squares: a (d, k) parameter, Hessian I_k (x) X^T X

    def mols_data(d, k, n=12, seed=0):
        rng = np.random.default_rng(seed)
        return rng.normal(size=(n, d)), rng.normal(size=(n, k))

    def mols_loss(w, x, y):
        r = x @ w - y
        return 0.5 * jnp.sum(r * r)

    def mols_reference(x, k):
        # W* = (X^T X)^-1 X^T Y, so dW*/dY = kron((X^T X)^-1 X^T, I_k), laid out (d, k, n, k).
        return np.einsum("dn,kl->dknl", np.linalg.solve(x.T @ x, x.T), np.eye(k))

    @functools.partial(jax.jit, static_argnames=("steps",))
    def mols_jacobian(x, y, w0, steps):
        def solution(y):
            fun = functools.partial(mols_loss, x=x, y=y)
            if steps == 0:
                return run_opt(w0, fun, 500, tol[np.dtype(x.dtype)])
            return fori_lbfgs(w0, fun, steps)

        return jax.jacfwd(solution)(y)

    def mols(dtype, d, k, steps=0):
        x, y = mols_data(d, k)
        jacobian = mols_jacobian(x.astype(dtype), y.astype(dtype), np.zeros((d, k), dtype), steps)
        return jacobian, mols_reference(x, k)

    @workload("float64", "float32")
    def multi_output_3x8_run_opt(dtype):
        """multi-output least squares (every eigenvalue 8 times), run_opt tol, jacfwd of W* wrt Y."""
        return mols(dtype, 3, 8)

    @workload("float64")
    def multi_output_6x3_run_opt(dtype):
        """multi-output least squares (every eigenvalue 3 times), run_opt tol, jacfwd of W* wrt Y."""
        return mols(dtype, 6, 3)

    @workload("float64")
    def multi_output_3x8_fori50(dtype):
        """multi-output least squares, a long fixed fori_loop (50 lbfgs steps, past convergence)."""
        return mols(dtype, 3, 8, steps=50)

    @workload("float64")
    def multi_output_3x8_fori10(dtype):
        """multi-output least squares, a short fixed fori_loop (10 steps) that has converged."""
        return mols(dtype, 3, 8, steps=10)

    # pytree parameters: multi-output least squares with an intercept

    def intercept_loss(p, x, y):
        r = x @ p["W"] + p["b"] - y
        return 0.5 * jnp.sum(r * r)

    @jax.jit
    def intercept_jacobian(x, y, p0):
        def solution(y):
            p = run_opt(p0, functools.partial(intercept_loss, x=x, y=y), 500, tol[np.dtype(x.dtype)])
            return jnp.concatenate([p["W"], p["b"][None]], axis=0)

        return jax.jacfwd(solution)(y)

    @workload("float64")
    def pytree_multi_output_run_opt(dtype):
        """pytree parameters ({W, b}: multi-output least squares with intercept), run_opt, jacfwd."""
        x, y = mols_data(3, 5, n=10, seed=3)
        p0 = {"W": np.zeros((3, 5), dtype), "b": np.zeros((5,), dtype)}
        jacobian = intercept_jacobian(x.astype(dtype), y.astype(dtype), p0)
        return jacobian, mols_reference(np.concatenate([x, np.ones((x.shape[0], 1))], axis=1), 5)

    # ridge with per-feature penalties, d > n: hypergradient of a validation loss

    def ridge_loss(w, eta, x, y):
        r = x @ w - y
        return 0.5 * jnp.sum(r * r) + 0.5 * jnp.sum(jnp.exp(eta) * w * w)

    @jax.jit
    def ridge_hypergradient(eta, x, y, xv, yv, w0):
        def validation(eta):
            w = run_opt(w0, functools.partial(ridge_loss, eta=eta, x=x, y=y), 500, tol[np.dtype(x.dtype)])
            r = xv @ w - yv
            return 0.5 * jnp.sum(r * r)

        return jax.jacfwd(validation)(eta)

    def ridge(dtype, eta):
        rng = np.random.default_rng(1)
        x, y = rng.normal(size=(6, 15)), rng.normal(size=6)
        xv, yv = rng.normal(size=(8, 15)), rng.normal(size=8)
        got = ridge_hypergradient(*(a.astype(dtype) for a in (eta, x, y, xv, yv)), np.zeros(15, dtype))
        lam = np.exp(eta)
        hessian = x.T @ x + np.diag(lam)
        w = np.linalg.solve(hessian, x.T @ y)
        v = np.linalg.solve(hessian, xv.T @ (xv @ w - yv))
        return got, -v * lam * w  # dw/deta_i = -H^-1 e_i lam_i w_i

    @workload("float64")
    def ridge_d_gt_n_per_feature(dtype):
        """d > n ridge, distinct per-feature penalties (a cluster around 1), hypergradient, jacfwd."""
        return ridge(dtype, np.random.default_rng(7).normal(size=15) * 0.3)

    @workload("float64")
    def ridge_d_gt_n_equal_penalties(dtype):
        """d > n ridge, equal penalties (eigenvalue 1 repeated d-n times, split by the tangent)."""
        return ridge(dtype, np.zeros(15))

    # logistic regression, d > n, one L2 penalty: hypergradient

    def logistic_loss(w, eta, x, t):
        z = x @ w
        return jnp.sum(jnp.logaddexp(0.0, z) - t * z) + 0.5 * jnp.exp(eta) * jnp.sum(w * w)

    @jax.jit
    def logistic_hypergradient(eta, x, t, xv, tv, w0):
        def validation(eta):
            w = run_opt(w0, functools.partial(logistic_loss, eta=eta, x=x, t=t), 500, tol[np.dtype(x.dtype)])
            z = xv @ w
            return jnp.sum(jnp.logaddexp(0.0, z) - tv * z)

        return jax.jacfwd(validation)(eta)

    @workload("float64")
    def logistic_d_gt_n_penalty(dtype):
        """d > n logistic regression, L2 penalty, hypergradient (non-quadratic, converged solve)."""
        rng = np.random.default_rng(2)
        x, t = rng.normal(size=(8, 20)), (rng.normal(size=8) > 0).astype(float)
        xv, tv = rng.normal(size=(10, 20)), (rng.normal(size=10) > 0).astype(float)
        got = logistic_hypergradient(*(np.asarray(a, dtype) for a in (0.0, x, t, xv, tv)), np.zeros(20, dtype))
        w = np.zeros(20)  # reference: Newton in numpy float64, then the implicit function theorem
        for _ in range(100):
            p = 1 / (1 + np.exp(-x @ w))
            hessian = x.T @ (x * (p * (1 - p))[:, None]) + np.eye(20)
            w = w - np.linalg.solve(hessian, x.T @ (p - t) + w)
        pv = 1 / (1 + np.exp(-xv @ w))
        return got, (xv.T @ (pv - tv)) @ -np.linalg.solve(hessian, w)

    # complex parameters: f(z) = 1/2 Re(z^H A z) - Re(b^H z)

    def complex_loss(z, a, b):
        return 0.5 * jnp.real(jnp.vdot(z, a @ z)) - jnp.real(jnp.vdot(b, z))

    @jax.jit
    def complex_tangent(a, b, z0, db):
        def solution(b):
            fun = functools.partial(complex_loss, a=a, b=b)
            opt = optax.lbfgs()

            def step(carry):
                z, state = carry
                value, grad = jax.value_and_grad(fun)(z)
                updates, state = opt.update(jnp.conj(grad), state, z, value=value, grad=jnp.conj(grad), value_fn=fun)
                return optax.apply_updates(z, updates), state

            def continuing(carry):
                z, state = carry
                count = optax.tree_utils.tree_get(state, "count")
                return (count == 0) | ((count < 500) & (jnp.linalg.norm(jax.grad(fun)(z)) >= 1e-11))

            return jax.lax.while_loop(continuing, step, (z0, opt.init(z0)))[0]

        return jax.jvp(solution, (b,), (db,))[1]

    @workload("float64")
    def complex_5d_run_opt(dtype):
        """complex parameters (every eigenvalue twice in real form), run-to-tolerance, jvp."""
        rng = np.random.default_rng(0)
        q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
        a = (q * np.geomspace(1.0, 30.0, 5)) @ q.T
        rng = np.random.default_rng(5)
        b = rng.normal(size=5) + 1j * rng.normal(size=5)
        db = rng.normal(size=5) + 1j * rng.normal(size=5)
        ctype = np.complex64 if np.dtype(dtype) == np.float32 else np.complex128
        got = complex_tangent(a.astype(dtype), b.astype(ctype), np.zeros(5, ctype), db.astype(ctype))
        return got, np.linalg.solve(a, db)

    # examples/lbfgs.ipynb's problem

    def notebook_problem(dtype):
        mat = jax.random.normal(jax.random.PRNGKey(0), (8, 8))
        w0 = jax.random.normal(jax.random.PRNGKey(1), (8,))
        return np.asarray(mat @ mat.T, dtype), np.ones(8, dtype), np.asarray(w0, dtype)

    def notebook_loss(w, w_opt, mat):
        return 0.5 * (w - w_opt).dot(mat.dot(w - w_opt))

    @functools.partial(jax.jit, static_argnames=("steps", "loop"))
    def notebook_final(w_opt, mat, w0, steps, loop):
        fun = functools.partial(notebook_loss, w_opt=w_opt, mat=mat)
        if loop == "fixed":
            return fixed_step_loop(w0, fun, steps, 0.1)
        return fori_lbfgs(w0, fun, steps)

    @functools.partial(jax.jit, static_argnames=("steps", "loop", "mode"))
    def notebook_jacobian(w_opt, mat, w0, steps, loop, mode):
        jacobian = jax.jacrev if mode == "reverse" else jax.jacfwd
        return jacobian(lambda w: notebook_final(w, mat, w0, steps, loop))(w_opt)

    def notebook_short(dtype, steps, loop, mode):
        mat, w_opt, w0 = notebook_problem(dtype)
        got = notebook_jacobian(w_opt, mat, w0, steps, loop, mode)
        loop_itself = functools.partial(
            notebook_final, mat=mat.astype(np.float64), w0=w0.astype(np.float64), steps=steps, loop=loop
        )
        return got, central_differences(lambda w: loop_itself(w), w_opt)

    @workload("float64")
    def notebook_16_fixed_steps_jacrev(dtype):
        """short unroll: the notebook's 16 scale_by_lbfgs steps, jacrev vs the loop's own derivative."""
        return notebook_short(dtype, 16, "fixed", "reverse")

    @workload("float64")
    def notebook_5_lbfgs_steps_jacfwd(dtype):
        """short unroll: 5 optax.lbfgs() steps (not converged), jacfwd vs the loop's own derivative."""
        return notebook_short(dtype, 5, "lbfgs", "forward")

    @workload("float64", "float32")
    def notebook_1000_fixed_steps_jacrev(dtype):
        """past convergence: the notebook's scale_by_lbfgs loop run 1000 steps, jacrev (= I)."""
        mat, w_opt, w0 = notebook_problem(dtype)
        return notebook_jacobian(w_opt, mat, w0, 1000, "fixed", "reverse"), np.eye(8)

    # run_opt on the 8-D Rosenbrock function (non-convex: the zoom linesearch interpolates)

    def rosenbrock(x, theta):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (theta - x[:-1]) ** 2)

    @jax.jit
    def rosenbrock_tangent(theta, x0, dtheta):
        tolerance = 1e-5 if x0.dtype == jnp.float32 else 1e-11
        solution = lambda theta: run_opt(x0, functools.partial(rosenbrock, theta=theta), 500, tolerance)  # noqa: E731
        return jax.jvp(solution, (theta,), (dtheta,))[1]

    @workload("float64", "float32")
    def rosenbrock_8d_run_opt_jvp(dtype):
        """non-convex: the how-to's run_opt on 8-D Rosenbrock, jvp wrt the shifts (x* = 1)."""
        dtheta = np.linspace(1.0, 2.0, 7)
        got = rosenbrock_tangent(np.ones(7, dtype), np.zeros(8, dtype), dtheta.astype(dtype))
        hessian = np.zeros((8, 8))
        for i in range(7):  # 100 (x_{i+1} - x_i^2)^2 + (t_i - x_i)^2 at x = 1
            hessian[i, i] += 802.0
            hessian[i, i + 1] -= 400.0
            hessian[i + 1, i] -= 400.0
            hessian[i + 1, i + 1] += 200.0
        mixed = np.zeros((8, 7))
        mixed[np.arange(7), np.arange(7)] = -2.0
        return got, -np.linalg.solve(hessian, mixed @ dtheta)


def relative_error(got, want) -> float:
    import numpy as np

    got, want = np.asarray(got), np.asarray(want)
    if not np.all(np.isfinite(got)):
        return math.nan
    want = want.astype(np.complex128 if np.iscomplexobj(want) or np.iscomplexobj(got) else np.float64)
    return float(np.linalg.norm((got.astype(want.dtype) - want).ravel()) / np.linalg.norm(want.ravel()))


def measure(dtype: str, expect_optax_in: str, only: list[str]) -> None:
    """In the subprocess: every workload of `dtype`, one JSON line each."""
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")
    import numpy as np
    import optax

    if not Path(optax.__file__).resolve().is_relative_to(Path(expect_optax_in).resolve()):
        sys.exit(f"optax imported from {optax.__file__}, not from {expect_optax_in}")
    corpus()
    for name, (function, dtypes) in WORKLOADS.items():
        if dtype not in dtypes or (only and name not in only):
            continue
        start = time.monotonic()
        try:
            error = relative_error(*function(np.dtype(dtype).type))
        except Exception as exception:  # noqa: BLE001 - a measurement: show what broke, go on
            error = f"{type(exception).__name__}: {str(exception).splitlines()[0][:100]}"
        seconds = round(time.monotonic() - start, 1)
        print(json.dumps({"workload": name, "dtype": dtype, "error": error, "seconds": seconds}), flush=True)


# --- the parent: trees, subprocesses, the rule --------------------------------------------


def measure_tree(source_tree: Path, dtype: str, python: str, only: list[str]) -> dict[str, object]:
    from lbfgs_gate import PROJECT_ROOT, runner

    # Only the tree's optax package goes on the path, copied out (as pipeline.primal_reference).
    package_root = Path(tempfile.mkdtemp(prefix="never-worse-optax-"))
    try:
        shutil.copytree(Path(source_tree) / "optax", package_root / "optax")
        env = runner.environment("never_worse", python, {"PYTHONPATH": f"{package_root}{os.pathsep}{PROJECT_ROOT}"})
        command = [python, str(Path(__file__).resolve()), "--measure", dtype, "--expect-optax-in", str(package_root)]
        if only:
            command += ["--only", ",".join(only)]
        result = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False)
    finally:
        shutil.rmtree(package_root, ignore_errors=True)
    errors = {}
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            errors[record["workload"]] = record["error"]
    if result.returncode != 0:
        last = [line for line in result.stderr.splitlines() if line.strip()][-1:] or ["no message"]
        print(f"measuring {source_tree.name} in {dtype} ended with status {result.returncode}: {last[0]}")
    return errors


def judge(published, series, dtype: str) -> tuple[float, bool]:
    """The bound the series' error must meet, and whether it does (issue 24's rule)."""
    cap = CAP[dtype]
    if isinstance(published, float) and math.isfinite(published):
        bound = min(max(10 * published, FLOOR[dtype]), cap)
    else:
        bound = cap
    ok = isinstance(series, float) and math.isfinite(series) and series <= bound
    return bound, ok


def shown(error) -> str:
    return f"{error:.2g}" if isinstance(error, float) else str(error)[:40]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", help="the optax release (default: the installed optax's version)")
    parser.add_argument("--series", type=Path, help="the series file (default: the project's)")
    parser.add_argument("--only", default="", help="comma-separated workload names")
    parser.add_argument("--measure", choices=("float32", "float64"), help=argparse.SUPPRESS)
    parser.add_argument("--expect-optax-in", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    only = [name for name in arguments.only.split(",") if name]
    if arguments.measure:
        measure(arguments.measure, arguments.expect_optax_in, only)
        return 0

    from importlib.metadata import version

    from lbfgs_gate import PATCHES_DIR, pipeline, tree

    release = arguments.release or version("optax")
    series_file = arguments.series or PATCHES_DIR / "series"
    start = time.monotonic()
    pristine = pipeline.pristine_tree(release)
    patched = tree.prepare(release, series_file, report=lambda _: None)
    print(f"optax {release}: published {pristine}\n             series    {patched}", flush=True)
    results = {}
    for dtype in ("float64", "float32"):
        results[dtype] = (
            measure_tree(pristine, dtype, sys.executable, only),
            measure_tree(patched, dtype, sys.executable, only),
        )
    print(f"\n{'workload':40s} {'dtype':8s} {'published':>10s} {'series':>10s} {'bound':>8s}  verdict")
    failed = []
    for dtype, (published, series) in results.items():
        for name in dict.fromkeys([*published, *series]):
            bound, ok = judge(published.get(name), series.get(name), dtype)
            verdict = "PASS" if ok else "FAIL"
            if not ok:
                failed.append(f"{name} {dtype}")
            print(
                f"{name:40s} {dtype:8s} {shown(published.get(name)):>10s} {shown(series.get(name)):>10s} "
                f"{bound:8.1g}  {verdict}"
            )
    print(f"\n{len(failed)} FAIL ({', '.join(failed) or 'none'}); {time.monotonic() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
