"""Measures derivatives through the first loop of optax's examples/lbfgs.ipynb.

The loop, as the notebook writes it: `optax.scale_by_lbfgs()` as a preconditioner, a
fixed learning rate 0.1, f(w) = 1/2 (w - w_opt)^T M (w - w_opt) with M = N N^T, N an 8x8
standard normal matrix (key 0), w0 standard normal (key 1), the state initialised on
w_opt, and `w = w - lr * u`; here in a `lax.scan`, so that it can be differentiated.
The derivative: d w_final / d w_opt, by `jax.jacrev` and `jax.jacfwd`. The implicit
answer is the identity (the minimiser is w_opt whatever M is). The loop's own exact
derivative is measured by float64 central differences of the same loop.

With --trace, also prints per step what the L-BFGS memory holds (|s|, y^T s of the pair
pushed, the identity scale the step uses, the number of pairs with a non-zero weight)
and the tangent's error, so that the mechanism can be read off.

Run it with the project root on sys.path, in the environment to measure, e.g.
    .nox/patched/bin/python tools/measure_notebook_loop.py --dtype float64 --steps 16 300 1000
One thread: XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1".
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import version

import jax
import numpy as np


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 300, 400, 500, 700, 1000])
    parser.add_argument("--trace", type=int, default=0, help="print the memory per step, for this many steps")
    parser.add_argument("--fd", action="store_true", help="also the loop's exact derivative by central differences")
    parser.add_argument(
        "--loop",
        choices=("notebook", "lbfgs"),
        default="notebook",
        help="the notebook's scale_by_lbfgs loop, or optax.lbfgs() steps on the same problem (forward mode only)",
    )
    parser.add_argument(
        "--exact",
        action="store_true",
        help="build the solver with exact_unroll_derivatives=True (the series' opt-in, patch 0007)",
    )
    return parser.parse_args()


args = parse()
jax.config.update("jax_enable_x64", args.dtype == "float64")
import jax.numpy as jnp  # noqa: E402
import jax.random as jrd  # noqa: E402
import optax  # noqa: E402

LR = 0.1
DIM = 8
OPTIONS = {"exact_unroll_derivatives": True} if args.exact else {}


def notebook_problem():
    """The notebook's data, drawn as it draws them (the dtype follows jax_enable_x64)."""
    mat = jrd.normal(jrd.PRNGKey(0), (DIM, DIM))
    mat = mat.dot(mat.T)
    w0 = jrd.normal(jrd.PRNGKey(1), (DIM,))
    return jnp.ones(DIM), mat, w0


def notebook_trajectory(w_opt, mat, w0, num_steps):
    """The notebook's loop in a lax.scan; returns the iterates and the states' memories."""

    def fun(w):
        return 0.5 * (w - w_opt).dot(mat.dot(w - w_opt))

    opt = optax.scale_by_lbfgs(**OPTIONS)

    def body(carry, _):
        w, state = carry
        _, g = jax.value_and_grad(fun)(w)
        u, state = opt.update(g, state, w)
        w = w - LR * u
        return (w, state), (w, state.weights_memory, state.diff_params_memory, state.diff_updates_memory, u)

    _, trace = jax.lax.scan(body, (w0, opt.init(w_opt)), length=num_steps)
    return trace


def lbfgs_final(w_opt, mat, w0, num_steps):
    """num_steps of optax.lbfgs() (zoom linesearch) on the notebook's problem, as its how-to steps."""

    def fun(w):
        return 0.5 * (w - w_opt).dot(mat.dot(w - w_opt))

    opt = optax.lbfgs(**OPTIONS)
    value_and_grad = optax.value_and_grad_from_state(fun)

    def body(carry, _):
        w, state = carry
        value, grad = value_and_grad(w, state=state)
        u, state = opt.update(grad, state, w, value=value, grad=grad, value_fn=fun)
        return (optax.apply_updates(w, u), state), None

    (w, _), _ = jax.lax.scan(body, (w0, opt.init(w0)), length=num_steps)
    return w


def final(w_opt, mat, w0, num_steps):
    if args.loop == "lbfgs":
        return lbfgs_final(w_opt, mat, w0, num_steps)
    return notebook_trajectory(w_opt, mat, w0, num_steps)[0][-1]


def main() -> None:
    w_opt, mat, w0 = notebook_problem()
    lam = np.linalg.eigvalsh(np.asarray(mat, np.float64))
    print(
        f"optax {version('optax')}, jax {version('jax')}, {args.dtype}, loop {args.loop} {OPTIONS}, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; lr * lambda_max = {LR * lam[-1]:.3f}, "
        f"lambda_min = {lam[0]:.3g}"
    )
    identity = np.eye(DIM)
    for num_steps in args.steps:
        fwd = jax.jit(jax.jacfwd(final), static_argnums=3)
        rev = jax.jit(jax.jacrev(final), static_argnums=3)
        x = np.asarray(jax.jit(final, static_argnums=3)(w_opt, mat, w0, num_steps))
        row = [f"steps {num_steps:5d}", f"|w - w_opt| {np.max(np.abs(x - 1.0)):.2e}"]
        modes = (("jacfwd", fwd),) if args.loop == "lbfgs" else (("jacrev", rev), ("jacfwd", fwd))
        for name, jac in modes:
            J = np.asarray(jac(w_opt, mat, w0, num_steps), np.float64)
            error = np.max(np.abs(J - identity)) if np.all(np.isfinite(J)) else np.nan
            row.append(f"{name} vs implicit {error:.3g}")
            if args.fd and args.dtype == "float64":
                J_fd = central_differences(w_opt, mat, w0, num_steps)
                fd = np.max(np.abs(J - J_fd)) / np.max(np.abs(J_fd))
                row.append(f"{name} vs loop (central differences) {fd:.3g}")
        print(", ".join(row), flush=True)
    if args.trace:
        trace_memory(w_opt, mat, w0)


def central_differences(w_opt, mat, w0, num_steps, h=1e-6):
    run = jax.jit(final, static_argnums=3)
    columns = []
    for i in range(DIM):
        e = np.zeros(DIM)
        e[i] = h
        columns.append(
            (np.asarray(run(w_opt + e, mat, w0, num_steps)) - np.asarray(run(w_opt - e, mat, w0, num_steps))) / (2 * h)
        )
    return np.stack(columns, axis=1)


def trace_memory(w_opt, mat, w0):
    steps = args.trace
    direction = jnp.ones(DIM, w_opt.dtype)

    def iterates(w_opt):
        return notebook_trajectory(w_opt, mat, w0, steps)

    trace, tangent_trace = jax.jit(lambda w: jax.jvp(iterates, (w,), (direction,)))(w_opt)
    ws, weights, s_mem, y_mem, _ = (np.asarray(t, np.float64) for t in trace)
    dws = np.asarray(tangent_trace[0], np.float64)
    print("step  |w-w_opt|   |s| pushed  y.s pushed   weight       pairs>0  identity-scale  |dw - 1| (tangent error)")
    memory = weights.shape[1]
    for k in range(steps):
        idx = (k - 1) % memory
        s, y = s_mem[k, idx], y_mem[k, idx]
        ys = float(y @ s)
        scale = ys / float(y @ y) if float(y @ y) > 0 else 1.0
        if k < 40 or k % 10 == 0 or k >= steps - 5:
            print(
                f"{k:4d}  {np.max(np.abs(ws[k] - 1)):.2e}  {np.linalg.norm(s):.2e}    {ys: .2e}   "
                f"{weights[k, idx]: .2e}   {int(np.sum(weights[k] != 0)):2d}       {scale:.3e}       "
                f"{np.max(np.abs(dws[k] - 1)):.3e}"
            )


if __name__ == "__main__":
    sys.exit(main())
