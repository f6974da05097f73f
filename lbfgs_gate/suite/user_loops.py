"""Loops as users write them, each with an independent reference for its derivative.

`run_opt` is the loop of optax's L-BFGS how-to, in its shape: `optax.lbfgs()` (or any
optimizer taking `value`, `grad` and `value_fn`) in a `lax.while_loop`, stopped on the
gradient norm the state carries. The objectives are optax's own non-convex test
functions (Rosenbrock, Himmelblau, Beale), given a parameter that moves their minimiser,
so that the minimiser's derivative is the implicit-function theorem's,
dx*/dtheta = -H(x*)^-1 d(grad f)/dtheta, evaluated at the known exact minimiser. Each
workload returns (the derivative the loop gives, the reference), both as numpy arrays.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jax.random as jrd
import numpy as np
import optax

from lbfgs_gate.suite import solvers

# The stopping tolerance on |g| of each dtype's solves.
TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-11}
MAX_ITER = 500


def lbfgs_step(fun, opt, module=optax):
    """The how-to's step on (params, state): `opt.update` with the value and gradient the state
    carries. `module` is the optax that runs it (test_never_worse.py passes the release's too)."""
    value_and_grad_fun = module.value_and_grad_from_state(fun)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad_fun(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        params = module.apply_updates(params, updates)
        return params, state

    return step


def run_opt(init_params, fun, opt, max_iter, tol, module=optax):
    """The how-to's loop: L-BFGS steps while |g| >= tol (and at least one step)."""

    def continuing_criterion(carry):
        _, state = carry
        iter_num = module.tree_utils.tree_get(state, "count")
        grad = module.tree_utils.tree_get(state, "grad")
        err = module.tree_utils.tree_l2_norm(grad)
        return (iter_num == 0) | ((iter_num < max_iter) & (err >= tol))

    init_carry = (init_params, opt.init(init_params))
    return jax.lax.while_loop(continuing_criterion, lbfgs_step(fun, opt, module), init_carry)


# --- optax's non-convex test functions, each with a parameter that moves its minimiser -------


def rosenbrock(x, theta):
    """sum 100 (x_{i+1} - x_i^2)^2 + (t_i - x_i)^2, i < n - 1: the minimiser is all ones at theta = 1."""
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (theta - x[:-1]) ** 2)


def himmelblau(x, theta):
    """(x0^2 + x1 - t0)^2 + (x0 + x1^2 - t1)^2: at theta = (11, 7), a minimiser is (3, 2)."""
    return (x[0] ** 2 + x[1] - theta[0]) ** 2 + (x[0] + x[1] ** 2 - theta[1]) ** 2


def beale(x, theta):
    """sum_k (t_k - x0 + x0 x1^k)^2, k = 1..3: at theta = (1.5, 2.25, 2.625), the minimiser is (3, 0.5).

    The powers are products: `x1 ** float_array` has a NaN tangent where x1 < 0 (through
    log x1), which the solve visits from (1, 1): a NaN of the objective, not of optax."""
    y = x[1]
    return (
        (theta[0] - x[0] + x[0] * y) ** 2
        + (theta[1] - x[0] + x[0] * y * y) ** 2
        + (theta[2] - x[0] + x[0] * y * y * y) ** 2
    )


FUNCTIONS = {
    # name: (f, theta at which the minimiser is known, the minimiser, the start)
    "rosenbrock-8": (rosenbrock, np.ones(7), np.ones(8), np.zeros(8)),
    "himmelblau": (himmelblau, np.array([11.0, 7.0]), np.array([3.0, 2.0]), np.array([1.0, 1.0])),
    "beale": (beale, np.array([1.5, 2.25, 2.625]), np.array([3.0, 0.5]), np.array([1.0, 1.0])),
}


def implicit_jvp(f, x_star, theta, dtheta):
    """-H^-1 (d grad f / d theta) dtheta at the exact minimiser, in float64 numpy."""
    grad_x = jax.grad(f, argnums=0)
    hessian = np.asarray(jax.jacfwd(grad_x, argnums=0)(x_star, theta), np.float64)
    mixed = np.asarray(jax.jacfwd(grad_x, argnums=1)(x_star, theta), np.float64)
    return -np.linalg.solve(hessian, mixed @ np.asarray(dtheta, np.float64))


def _run_opt_jvp(name, dtype, opt=None):
    f, theta, x_star, x0 = FUNCTIONS[name]
    theta, x_star, x0 = (np.asarray(v, dtype) for v in (theta, x_star, x0))
    dtheta = np.linspace(1.0, 2.0, theta.shape[0]).astype(dtype)
    opt = opt or optax.lbfgs()
    tol = TOLERANCE[np.dtype(dtype)]

    @jax.jit
    def derivative(theta, x0, dtheta):
        def solution(theta):
            return run_opt(x0, functools.partial(f, theta=theta), opt, MAX_ITER, tol)[0]

        return jax.jvp(solution, (theta,), (dtheta,))

    x, dx = derivative(theta, x0, dtheta)
    want = implicit_jvp(f, x_star, theta, dtheta)
    assert np.allclose(np.asarray(x, np.float64), x_star, atol=1e-2), f"{name}: the solve found {x}, not {x_star}"
    return np.asarray(dx), want


def notebook_problem(dtype):
    """The data of the first loop of optax's examples/lbfgs.ipynb, drawn as it draws them (keys 0
    and 1, in the dtype JAX is set to: x64 on for float64): (A = N N^T, w_opt = ones, w0)."""
    mat = jrd.normal(jrd.PRNGKey(0), (8, 8))
    mat = np.asarray(mat.dot(mat.T), dtype)
    w0 = np.asarray(jrd.normal(jrd.PRNGKey(1), (8,)), dtype)
    return mat, np.ones(8, dtype), w0


# --- the workloads ---------------------------------------------------------------------------


def run_opt_rosenbrock(dtype):
    return _run_opt_jvp("rosenbrock-8", dtype)


def run_opt_himmelblau(dtype):
    return _run_opt_jvp("himmelblau", dtype)


def run_opt_beale(dtype):
    return _run_opt_jvp("beale", dtype)


def run_opt_backtracking_quadratic(dtype):
    """scale_by_lbfgs with the backtracking linesearch, in run_opt, on a quadratic: jvp w.r.t. b."""
    A, b, x0, db = _quadratic(dtype)
    opt = optax.chain(
        optax.scale_by_lbfgs(),
        optax.scale(-1.0),  # a descent direction, as optax.lbfgs() chains it
        optax.scale_by_backtracking_linesearch(max_backtracking_steps=15, store_grad=True),
    )
    tol = TOLERANCE[np.dtype(dtype)]

    @jax.jit
    def derivative(b, db):
        def solution(b):
            return run_opt(x0, lambda x: 0.5 * x @ A @ x - b @ x, opt, MAX_ITER, tol)[0]

        return jax.jvp(solution, (b,), (db,))[1]

    return np.asarray(derivative(b, db)), np.linalg.solve(A.astype(np.float64), db.astype(np.float64))


def _quadratic(dtype, n=5, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = (q * np.geomspace(1.0, 30.0, n)) @ q.T
    b = rng.normal(size=n)
    return A.astype(dtype), b.astype(dtype), np.zeros(n, dtype), np.linspace(1.0, 2.0, n).astype(dtype)


def vmap_over_problems(dtype):
    """jax.vmap of jacfwd of the while-loop solve over four quadratics: each A_i^-1."""
    problems = [_quadratic(dtype, seed=seed) for seed in range(4)]
    A = np.stack([p[0] for p in problems])
    b = np.stack([p[1] for p in problems])
    x0 = np.stack([p[2] for p in problems])
    tol = 1e-10 if np.dtype(dtype) == np.float64 else 1e-5
    jacobian = jax.jit(
        jax.vmap(jax.jacfwd(lambda A, b, x0: solvers.lbfgs_solve(A, b, x0, max_steps=200, rel_tol=tol)[0], argnums=1))
    )
    return np.asarray(jacobian(A, b, x0)), np.linalg.inv(A.astype(np.float64))


def forward_against_reverse(dtype):
    """jacfwd and jacrev of one fixed-step scale_by_lbfgs unroll: the same program, the same derivative."""
    A, b, x0, _ = _quadratic(dtype)
    static = dict(num_steps=60, step_size=0.5)
    forward = jax.jit(jax.jacfwd(functools.partial(solvers.scale_by_lbfgs_unroll, **static), argnums=1))
    reverse = jax.jit(jax.jacrev(functools.partial(solvers.scale_by_lbfgs_unroll, **static), argnums=1))
    return np.asarray(reverse(A, b, x0)), np.asarray(forward(A, b, x0), np.float64)


def _second_derivative_through_unroll(dtype, second_derivative):
    """`second_derivative` (a transform of a function of b) of 1/2 |x(b) - t|^2, x(b) a converged
    60-step scale_by_lbfgs unroll, and A^-2, what it must be (x is linear in b at the solution)."""
    A, b, x0, _ = _quadratic(dtype)
    t = np.linspace(-1.0, 1.0, b.shape[0]).astype(dtype)
    static = dict(num_steps=60, step_size=0.5)

    def outer(b):
        x = solvers.scale_by_lbfgs_unroll(A, b, x0, **static)
        return 0.5 * jnp.sum((x - t) ** 2)

    inverse = np.linalg.inv(A.astype(np.float64))
    return np.asarray(jax.jit(second_derivative(outer))(b)), inverse @ inverse


def hessian_through_unroll(dtype):
    """jax.hessian of 1/2 |x(b) - t|^2, x(b) a converged fixed-step scale_by_lbfgs unroll: A^-2."""
    return _second_derivative_through_unroll(dtype, jax.hessian)


def second_forward_derivative_through_unroll(dtype):
    """jacfwd of jacfwd of 1/2 |x(b) - t|^2, x(b) a converged fixed-step scale_by_lbfgs unroll: A^-2
    (forward over forward: no reverse mode, so only the memory's second derivative can be wrong)."""
    return _second_derivative_through_unroll(dtype, lambda f: jax.jacfwd(jax.jacfwd(f)))


def hessian_through_solve(dtype):
    """jacfwd of jacfwd (reverse mode cannot enter the linesearch) of 1/2 |x*(b) - t|^2 through the
    while-loop optax.lbfgs() solve: A^-2."""
    A, b, x0, _ = _quadratic(dtype)
    t = np.linspace(-1.0, 1.0, b.shape[0]).astype(dtype)
    tol = 1e-10 if np.dtype(dtype) == np.float64 else 1e-5

    def outer(b):
        x = solvers.lbfgs_solve(A, b, x0, max_steps=200, rel_tol=tol)[0]
        return 0.5 * jnp.sum((x - t) ** 2)

    inverse = np.linalg.inv(A.astype(np.float64))
    hessian = jax.jit(jax.jacfwd(jax.jacfwd(outer)))
    return np.asarray(hessian(b)), inverse @ inverse


WORKLOADS = {
    "run_opt, Rosenbrock 8-D, jvp": run_opt_rosenbrock,
    "run_opt, Himmelblau, jvp": run_opt_himmelblau,
    "run_opt, Beale, jvp": run_opt_beale,
    "run_opt, backtracking linesearch, jvp": run_opt_backtracking_quadratic,
    "vmap of jacfwd over 4 solves": vmap_over_problems,
    "jacrev against jacfwd, one unroll": forward_against_reverse,
    "jax.hessian through a scale_by_lbfgs unroll": hessian_through_unroll,
    "jacfwd(jacfwd) through a scale_by_lbfgs unroll": second_forward_derivative_through_unroll,
    "jacfwd(jacfwd) through an optax.lbfgs() solve": hessian_through_solve,
}
