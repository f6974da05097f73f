"""L-BFGS on the shapes users differentiate: pytree parameters and objectives with data.

`lbfgs_gate/suite/solvers.py` solves quadratics in a flat vector. Here the parameters are a
pytree (nested dicts of arrays of different shapes and a scalar leaf) and the objective
takes its data as a pytree too: a quadratic over the flattened parameters, and an
L2-regularised logistic regression (design matrix, labels, regularisation strength).
As in solvers.py, the data and the start are traced arguments of functions compiled
once per static configuration (solver, derivative, objective, step count, and the
structure, shapes and dtype of the arguments): tracing an L-BFGS solve costs seconds.

The implicit-function oracle for a solution x* of min_x f(data, x) is
dx*/d data = -H^-1 d(grad_x f)/d data, with H = jax.hessian of f at x*, over the
flattened parameters.
"""

from __future__ import annotations

import functools
import textwrap
from importlib.metadata import version  # noqa: F401 - tools print it

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from lbfgs_gate.plugin import patch_state


def tree_quadratic(data, params):
    """1/2 v^T A v - b^T v over v, the parameters flattened: minimised at A^-1 b."""
    A, b = data
    v, _ = ravel_pytree(params)
    return 0.5 * v @ (A @ v) - b @ v


def logistic_regression(data, params):
    """Mean logistic loss of labels y in {0, 1} given X w + bias, plus l2/2 |w|^2 (bias not
    regularised). Smooth and strictly convex in (w, bias) for l2 > 0."""
    X, y, l2 = data
    logits = X @ params["weights"] + params["bias"]
    return jnp.mean(jax.nn.softplus(logits) - y * logits) + 0.5 * l2 * jnp.sum(params["weights"] ** 2)


OBJECTIVES = {"tree-quadratic": tree_quadratic, "logistic-regression": logistic_regression}


def lbfgs_unroll(data, x0, *, objective: str, num_steps: int):
    """The parameters after `num_steps` steps of `optax.lbfgs()` (zoom linesearch), in a lax.scan."""
    fun = functools.partial(OBJECTIVES[objective], data)
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    def body(carry, _):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        return (optax.apply_updates(params, updates), state), None

    (x, _), _ = jax.lax.scan(body, (x0, opt.init(x0)), length=num_steps)
    return x


def scale_by_lbfgs_unroll(data, x0, *, objective: str, num_steps: int, step_size: float = 0.5):
    """`num_steps` of `chain(scale_by_lbfgs(), scale(-step_size))`: no while loop, so
    reverse mode can go through it (the meta-learning unroll)."""
    fun = functools.partial(OBJECTIVES[objective], data)
    opt = optax.chain(optax.scale_by_lbfgs(), optax.scale(-step_size))

    def body(carry, _):
        params, state = carry
        updates, state = opt.update(jax.grad(fun)(params), state, params)
        return (optax.apply_updates(params, updates), state), None

    (x, _), _ = jax.lax.scan(body, (x0, opt.init(x0)), length=num_steps)
    return x


SOLVERS = {"lbfgs_unroll": lbfgs_unroll, "scale_by_lbfgs_unroll": scale_by_lbfgs_unroll}


def tree_sum(tree):
    return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(tree))


@functools.cache
def compiled(name: str, transform: str = "value", **static):
    """One jitted function per (solver, derivative, static configuration).

    transform: "value" (data, x0) -> x; "jvp" (data, x0, data_tangent, x0_tangent) ->
    (x, x_tangent); "grad" (data, x0) -> the reverse-mode gradient of the sum of every
    leaf of x, w.r.t. (data, x0).
    """
    solver = functools.partial(SOLVERS[name], **static)
    if transform == "value":
        jitted = jax.jit(solver)
    elif transform == "jvp":
        jitted = jax.jit(lambda data, x0, ddata, dx0: jax.jvp(solver, (data, x0), (ddata, dx0)))
    elif transform == "grad":
        jitted = jax.jit(jax.grad(lambda data, x0: tree_sum(solver(data, x0)), argnums=(0, 1)))
    else:
        raise ValueError(f"unknown transform {transform!r}")
    return jitted


def implicit_tangent(objective: str, data, solution, data_tangent):
    """dx*/d data along data_tangent, by the implicit-function theorem at `solution`:
    -H^-1 (d grad_x f / d data) data_tangent, H = jax.hessian of f over the flattened
    parameters. In float64 numpy after autodiff in the dtype of the data."""
    flat, unravel = ravel_pytree(solution)

    def gradient(data, v):
        return ravel_pytree(jax.grad(OBJECTIVES[objective], argnums=1)(data, unravel(v)))[0]

    # Jitted: op by op, jax.hessian of a small loss takes seconds; compiled, a fraction.
    hessian = jax.jit(jax.hessian(lambda data, v: OBJECTIVES[objective](data, unravel(v)), argnums=1))(data, flat)
    _, mixed = jax.jit(lambda data, tangent: jax.jvp(lambda d: gradient(d, flat), (data,), (tangent,)))(
        data, data_tangent
    )
    tangent = -np.linalg.solve(np.asarray(hessian, np.float64), np.asarray(mixed, np.float64))
    return unravel(jnp.asarray(tangent, flat.dtype))


def logistic_problem(
    seed: int, dtype, *, scale_decades: float = 1.0, l2: float | None = None, rows: int = 32, features: int = 7
):
    """A logistic-regression problem drawn from `seed`: a design matrix whose columns have
    scales 10**U(-scale_decades, scale_decades) (uneven, as raw features are), labels drawn
    from a logistic model, l2 = 10**U(-3, 0) unless given. Returns (data, x0): x0 is zero,
    {"weights": (features,), "bias": ()}, 8 parameters by default."""
    rng = np.random.default_rng(seed)
    scales = 10.0 ** rng.uniform(-scale_decades, scale_decades, features)
    X = rng.normal(size=(rows, features)) * scales
    w = rng.normal(size=features) / scales
    y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-(X @ w)))).astype(float)
    drawn_l2 = 10.0 ** rng.uniform(-3, 0)
    data = (X.astype(dtype), y.astype(dtype), np.asarray(drawn_l2 if l2 is None else l2, dtype))
    return data, {"weights": np.zeros(features, dtype), "bias": np.zeros((), dtype)}


def logistic_solution(data, iterations: int = 50):
    """The minimiser of logistic_regression and its derivative w.r.t. l2, by Newton's method
    in float64 numpy: an oracle independent of jax and of the dtype under test.

    Returns (solution, d solution / d l2 = -H^-1 (w, 0)), each as the parameters' pytree."""
    X, y, l2 = (np.asarray(v, np.float64) for v in data)
    design = np.hstack([X, np.ones((len(y), 1))])
    regulariser = np.diag([*np.full(X.shape[1], float(l2)), 0.0])
    theta = np.zeros(design.shape[1])

    def hessian(theta):
        p = 1 / (1 + np.exp(-(design @ theta)))
        return design.T @ (design * (p * (1 - p))[:, None]) / len(y) + regulariser

    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(design @ theta)))
        gradient = design.T @ (p - y) / len(y) + regulariser @ theta
        theta = theta - np.linalg.solve(hessian(theta), gradient)
    derivative = -np.linalg.solve(hessian(theta), np.append(theta[:-1], 0.0))
    return ({"weights": theta[:-1], "bias": theta[-1]}, {"weights": derivative[:-1], "bias": derivative[-1]})


def flat(tree) -> np.ndarray:
    """The leaves of a pytree, flattened and concatenated in float64."""
    return np.asarray(ravel_pytree(tree)[0], np.float64)


def relative_error(got, expected) -> float:
    return float(np.linalg.norm(flat(got) - flat(expected)) / np.linalg.norm(flat(expected)))


def all_finite(tree) -> bool:
    return bool(np.all(np.isfinite(flat(tree))))


def literal(tree) -> str:
    """Python source for a pytree of arrays (dicts, tuples, lists), exact to the last bit."""
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{key!r}: {literal(value)}" for key, value in tree.items()) + "}"
    if isinstance(tree, tuple | list):
        items = ", ".join(literal(value) for value in tree)
        return f"({items},)" if isinstance(tree, tuple) else f"[{items}]"
    array = np.asarray(tree)
    values = np.array2string(array, separator=", ", precision=17, threshold=10_000, max_line_width=10_000)
    return f"jnp.array({values}, dtype=jnp.{array.dtype.name})"


def tree_report(what: str, *, solver: str, transform: str, data, x0, tangents=None, got=None, **static) -> str:
    """A failure message: what failed, the environment, and lines that reproduce it."""
    dtype = np.asarray(jax.tree.leaves(x0)[0]).dtype
    options = ", ".join(f"{key}={value!r}" for key, value in static.items())
    arguments = "data, x0" + (", *tangents" if transform == "jvp" else "")
    lines = [
        what,
        f"optax {version('optax')}, jax {version('jax')}; patch state: {patch_state()}",
        f"problem: {static.get('objective')}, dtype {dtype.name}, solver {solver}, derivative {transform}, {options}",
    ]
    if got is not None:
        lines.append(f"got: {literal(got)}")
    reproduction = [
        "import jax, jax.numpy as jnp",
        f'jax.config.update("jax_enable_x64", {dtype == np.float64})',
        "from lbfgs_gate.suite import trees  # run from the project root",
        f"data = {literal(data)}",
        f"x0 = {literal(x0)}",
    ]
    if tangents is not None:
        reproduction.append(f"tangents = {literal(tangents)}")
    reproduction.append(f"print(trees.compiled({solver!r}, {transform!r}, {options})({arguments}))")
    lines += ["reproduce:", textwrap.indent("\n".join(reproduction), "    ")]
    return "\n".join(lines)
