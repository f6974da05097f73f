"""Failure messages that are bug reports: environment, problem, and a reproduction."""

from __future__ import annotations

import textwrap
from importlib.metadata import version

import numpy as np

from tests.conftest import patch_state


def _literal(array) -> str:
    return np.array2string(np.asarray(array), separator=", ", precision=17, threshold=10_000,
                           max_line_width=10_000)


def problem_report(what: str, *, A, b, x0, solver: str, derivative: str, dtype, objective="quadratic",
                   got=None, **static) -> str:
    """A failure message: what failed, where, and lines that reproduce it outside the suite."""
    dtype_name = np.dtype(dtype).name
    options = "".join(f", {key}={value!r}" for key, value in static.items())
    if objective != "quadratic":
        options += f", objective={objective!r}"
    call = {
        "value": f"solvers.{solver}(A, b, x0{options})",
        "jacfwd": f"jax.jacfwd(lambda b: solvers.{solver}(A, b, x0{options}))(b)",
        "grad": f"jax.grad(lambda b: solvers.{solver}(A, b, x0{options}).sum())(b)",
    }.get(derivative, f"{derivative} of solvers.{solver}(A, b, x0{options})")
    reproduction = textwrap.dedent(f"""\
        import jax, jax.numpy as jnp
        jax.config.update("jax_enable_x64", {dtype_name == "float64"})
        from tests.lbfgs import solvers  # run from the project root
        A = jnp.array({_literal(A)}, dtype=jnp.{dtype_name})
        b = jnp.array({_literal(b)}, dtype=jnp.{dtype_name})
        x0 = jnp.array({_literal(x0)}, dtype=jnp.{dtype_name})
        print({call})""")
    lines = [
        what,
        f"optax {version('optax')}, jax {version('jax')}; patch state: {patch_state()}",
        f"problem: {objective}, dtype {dtype_name}, solver {solver}{options}, derivative {derivative}",
    ]
    if got is not None:
        lines.append(f"got: {_literal(got)}")
    lines += ["reproduce:", textwrap.indent(reproduction, "    ")]
    return "\n".join(lines)
