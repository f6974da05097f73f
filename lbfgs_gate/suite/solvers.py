"""L-BFGS solves written once, with the problem as traced arguments.

Every function here takes the problem (A, b, x0) as arguments, never as closure
constants, so one compiled function serves every example of a shape and dtype
(tracing and compiling an L-BFGS solve costs seconds; running it, milliseconds).
Static choices (step counts, tolerances, memory) are keyword arguments bound by
`functools.partial` before `jax.jit`, one compile per configuration.
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax


def quadratic(A, b):
    """f(x) = 1/2 x^T A x - b^T x, minimised at A^-1 b."""
    return lambda x: 0.5 * x @ (A @ x) - b @ x


def log_sum_exp_quadratic(A, b):
    """A smooth, strictly convex function that is not a quadratic."""
    return lambda x: jax.nn.logsumexp(x) + 0.5 * x @ (A @ x) - b @ x


OBJECTIVES = {"quadratic": quadratic, "log-sum-exp": log_sum_exp_quadratic}


def exact_options(exact: bool, transformation=optax.lbfgs) -> dict:
    """The arguments asking `transformation` for the exact derivative of an unroll (the
    series' option `exact_unroll_derivatives`, patch 0007), where `exact` and where this
    optax has it; else none. Without it, derivatives flow through the heuristics as this
    optax computes them: as published, 0.2.4 gives the exact derivative of the steps (from
    0.2.5 on the first step's scale is stopped); the series without 0007 does not."""
    if exact and "exact_unroll_derivatives" in inspect.signature(transformation).parameters:
        return {"exact_unroll_derivatives": True}
    return {}


def _lbfgs_step(fun, opt):
    value_and_grad = optax.value_and_grad_from_state(fun)

    def step(params, state):
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(params, updates), state, value, grad

    return step


def lbfgs_trajectory(A, b, x0, *, num_steps: int, objective: str = "quadratic", exact: bool = False):
    """Iterates and values of `num_steps` steps of `optax.lbfgs()` (zoom linesearch);
    `exact`: with the exact derivative of the steps (`exact_options`)."""
    fun = OBJECTIVES[objective](A, b)
    opt = optax.lbfgs(**exact_options(exact))
    step = _lbfgs_step(fun, opt)

    def body(carry, _):
        params, state = carry
        params, state, value, _ = step(params, state)
        return (params, state), (params, value)

    _, (iterates, values) = jax.lax.scan(body, (x0, opt.init(x0)), length=num_steps)
    return iterates, values


def lbfgs_fixed_steps(A, b, x0, *, num_steps: int, objective: str = "quadratic", exact: bool = False):
    """The iterate after `num_steps` steps of `optax.lbfgs()` (zoom linesearch)."""
    iterates, _ = lbfgs_trajectory(A, b, x0, num_steps=num_steps, objective=objective, exact=exact)
    return iterates[-1]


def lbfgs_solve(
    A, b, x0, *, max_steps: int = 50, rel_tol: float = 1e-6, objective: str = "quadratic", extra_steps: int = 0
):
    """`optax.lbfgs()` in a `lax.while_loop`, stopped when |g| <= rel_tol |g0|, then
    `extra_steps` more steps.

    Returns (x, number of steps before the extra ones, |g| / |g0| where the loop stopped).
    A tolerance relative to the initial gradient stops the solve before the
    curvature pairs become rounding noise (see docs/tests.md, the property suite's domains).

    Forward derivatives lag the iterates by a step: with the preconditioner P held
    constant, the tangent's step is x_dot <- x_dot - step * P * (tangent of the
    gradient), so it reaches the implicit-function derivative one step after P
    (and the iterate) have. A solve whose derivatives are wanted takes one extra step.
    """
    fun = OBJECTIVES[objective](A, b)
    opt = optax.lbfgs()
    step = _lbfgs_step(fun, opt)
    grad0_norm = jnp.linalg.norm(jax.grad(fun)(x0))

    def grad_norm(params):
        return jnp.linalg.norm(jax.grad(fun)(params))

    def keep_going(carry):
        params, _, count = carry
        return (count < max_steps) & (grad_norm(params) > rel_tol * grad0_norm)

    def body(carry):
        params, state, count = carry
        params, state, _, _ = step(params, state)
        return params, state, count + 1

    carry = jax.lax.while_loop(keep_going, body, (x0, opt.init(x0), 0))
    residual = grad_norm(carry[0]) / grad0_norm
    for _ in range(extra_steps):
        carry = body(carry)
    x, _, count = carry
    return x, count, residual


def scale_by_lbfgs_unroll(A, b, x0, *, num_steps: int, step_size: float = 0.5, exact: bool = False):
    """`num_steps` of `chain(scale_by_lbfgs(), scale(-step_size))` in a `lax.scan`.

    No linesearch, so no while loop: this unroll can be differentiated in
    reverse mode.
    """
    x, _ = scale_by_lbfgs_unroll_with_state(A, b, x0, num_steps=num_steps, step_size=step_size, exact=exact)
    return x


def scale_by_lbfgs_unroll_with_state(A, b, x0, *, num_steps: int, step_size: float = 0.5, exact: bool = False):
    """`scale_by_lbfgs_unroll`, returning the optimizer's final state with the iterate, as a
    loop that hands its state on (to warm-start the next solve, or to checkpoint) does."""
    fun = quadratic(A, b)
    opt = optax.chain(optax.scale_by_lbfgs(**exact_options(exact, optax.scale_by_lbfgs)), optax.scale(-step_size))

    def body(carry, _):
        params, state = carry
        updates, state = opt.update(jax.grad(fun)(params), state, params)
        return (optax.apply_updates(params, updates), state), None

    (x, state), _ = jax.lax.scan(body, (x0, opt.init(x0)), length=num_steps)
    return x, state


def _zero_cotangent(leaf):
    """A zero cotangent for one output leaf: float0 for integers (the state's counters)."""
    if jnp.issubdtype(leaf.dtype, jnp.inexact):
        return jnp.zeros_like(leaf)
    return np.zeros(leaf.shape, jax.dtypes.float0)


def notebook_unroll(A, b, x0, *, num_steps: int, learning_rate: float = 0.1, exact: bool = False):
    """The first loop of optax's examples/lbfgs.ipynb, in a `lax.scan`.

    f(w) = 1/2 (w - b)^T A (w - b), minimised at b (the notebook's `w_opt`), so that
    d x / d b is the identity at the solution; `scale_by_lbfgs()` as a preconditioner
    and `w = w - lr * u`, as the notebook writes it.
    """

    def fun(w):
        return 0.5 * (w - b).dot(jnp.dot(A, w - b))

    opt = optax.scale_by_lbfgs(**exact_options(exact, optax.scale_by_lbfgs))

    def body(carry, _):
        w, state = carry
        _, g = jax.value_and_grad(fun)(w)
        u, state = opt.update(g, state, w)
        return (w - learning_rate * u, state), None

    (x, _), _ = jax.lax.scan(body, (x0, opt.init(b)), length=num_steps)
    return x


def tangent_residual(grad_fn, x, dx, theta, dtheta):
    """How far a forward derivative through a solve is from the implicit one, from the
    solve's own optimality condition: the check a user can run on any solve.

    x solves grad_fn(x, theta) = 0 (to its tolerance) and dx is its tangent along dtheta,
    however computed (jvp through the loop, the series' rule, custom_root). The tangent of
    the optimality condition, r = H dx + (d grad / d theta) dtheta, is zero for the implicit
    derivative dx* = -H^-1 (d grad / d theta) dtheta, and dx - dx* = H^-1 r, so the relative
    error of dx is at most cond(H) times the number returned, |r| / |(d grad / d theta) dtheta|.
    A small number says the derivative is right; a large one, that it is not (in silence
    otherwise: a finite, wrong derivative). Works on pytrees and complex leaves.
    """

    def norm(tree):
        return jnp.sqrt(sum(jnp.sum(jnp.abs(leaf) ** 2) for leaf in jax.tree.leaves(tree)))

    residual = jax.jvp(grad_fn, (x, theta), (dx, dtheta))[1]
    forcing = jax.jvp(lambda t: grad_fn(x, t), (theta,), (dtheta,))[1]
    return norm(residual) / norm(forcing)


def implicit_lbfgs_solve(A, b, x0, *, max_steps: int = 100, rel_tol: float = 1e-10, objective: str = "quadratic"):
    """The README's recipe: an `optax.lbfgs()` solve differentiated implicitly.

    `jax.lax.custom_root` runs the solve (`lbfgs_solve`, a while loop) without
    differentiating it, and differentiates its root x* of grad f(x) = 0 through the
    implicit function theorem: the tangent solves H dx = -(d grad f / d theta) dtheta with
    H the Hessian at x*, in forward and reverse mode alike, with respect to everything
    `optimality` closes over (here A and b).
    """
    fun = OBJECTIVES[objective](A, b)

    def optimality(x):
        return jax.grad(fun)(x)

    def solve(_, x0):
        return lbfgs_solve(A, b, x0, max_steps=max_steps, rel_tol=rel_tol, objective=objective)[0]

    def tangent_solve(linear, y):
        # A dense solve with the Hessian, fine for a few hundred parameters; for more, a
        # matrix-free solver (jax.scipy.sparse.linalg.cg(linear, y)[0]) needs no matrix.
        return jnp.linalg.solve(jax.jacfwd(linear)(y), y)

    return jax.lax.custom_root(optimality, x0, solve, tangent_solve)


def compiled(name: str, transform: str = "value", argnum: int | tuple = 1, **static):
    """One jitted function per (solver, derivative, static configuration).

    transform: "value", "jacfwd" (Jacobian of the final iterate w.r.t. argument
    `argnum`: 0 = A, 1 = b, 2 = x0), "jvp" (takes tangents for A, b, x0 after the
    primals), "grad" (reverse mode, of sum(x) w.r.t. argument `argnum`) or
    "vjp_with_state" (the same by `jax.vjp` of a solver that also returns its state,
    pulled back with zeros on the state).

    Spellings of one configuration share one function: defaults are filled in and
    `argnum` is ignored where the transform takes none, so a configuration is traced
    once per process however a test names it (tracing costs seconds).
    """
    defaults = {
        key: parameter.default
        for key, parameter in inspect.signature(SOLVERS[name]).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    argnum = tuple(argnum) if isinstance(argnum, list | tuple) else argnum
    if transform in ("value", "jvp"):
        argnum = None
    return _compiled(name, transform, argnum, tuple(sorted({**defaults, **static}.items())))


@functools.cache
def _compiled(name: str, transform: str, argnum, static: tuple):
    return _jitted(name, transform, argnum, static)


def _jitted(name: str, transform: str, argnum, static: tuple):
    solver = functools.partial(SOLVERS[name], **dict(static))

    def final_iterate(A, b, x0):
        out = solver(A, b, x0)
        return out[0] if isinstance(out, tuple) and name == "lbfgs_solve" else out

    if transform == "value":
        return jax.jit(solver)
    if transform == "jacfwd":
        return jax.jit(jax.jacfwd(final_iterate, argnums=argnum))
    if transform == "jvp":
        return jax.jit(lambda A, b, x0, dA, db, dx0: jax.jvp(final_iterate, (A, b, x0), (dA, db, dx0)))
    if transform == "grad":
        return jax.jit(jax.grad(lambda A, b, x0: jnp.sum(final_iterate(A, b, x0)), argnums=argnum))
    if transform == "vjp_with_state":

        def pullback(A, b, x0):
            arguments = [A, b, x0]

            def of(argument):
                return solver(*arguments[:argnum], argument, *arguments[argnum + 1 :])

            (x, state), vjp = jax.vjp(of, arguments[argnum])
            # The cotangent a loss of the iterate alone hands back: ones on x, zeros on the state.
            return vjp((jnp.ones_like(x), jax.tree.map(_zero_cotangent, state)))[0]

        return jax.jit(pullback)
    raise ValueError(f"unknown transform {transform!r}")


SOLVERS = {
    "lbfgs_trajectory": lbfgs_trajectory,
    "lbfgs_fixed_steps": lbfgs_fixed_steps,
    "lbfgs_solve": lbfgs_solve,
    "scale_by_lbfgs_unroll": scale_by_lbfgs_unroll,
    "scale_by_lbfgs_unroll_with_state": scale_by_lbfgs_unroll_with_state,
    "notebook_unroll": notebook_unroll,
    "implicit_lbfgs_solve": implicit_lbfgs_solve,
}
