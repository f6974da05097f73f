"""Measures how far forward derivatives of converged L-BFGS solves are from the implicit answer.

The implicit-function properties of lbfgs_gate/suite/test_properties.py assert
|H J - I| <= IMPLICIT_TOLERANCE, with J = d x*/d b from jax.jacfwd through the
solve and H the Hessian at the solution. This script draws the same problems
(float64, dense strategy, starts away from the optimum, each objective in its
property's domain), steering toward the largest |H J - I| with hypothesis.target,
runs the same solve (IMPLICIT_SOLVE), and prints the distribution of |H J - I|
over the solves that reached their tolerance, and the worst problem: the numbers
that justify (or refute) the tolerance, for the optax imported here.

    python tools/measure_implicit_tolerance.py --seed 7     # the README's numbers
    python tools/measure_implicit_tolerance.py [--examples N] [--objectives ...]
        [--eigen-decades LO HI] [--data-decades LO HI]     # another domain

Run it in a session environment (e.g. the patched one) with the project root on
sys.path. Not a test: it asserts nothing, it reports.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings, target

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
jax.config.update("jax_enable_x64", True)

from lbfgs_gate.suite import solvers  # noqa: E402
from lbfgs_gate.suite import strategies as problems  # noqa: E402
from lbfgs_gate.suite.claims import DOMAIN, HESSIANS, IMPLICIT_SOLVE, LOG_SUM_EXP_DOMAIN  # noqa: E402


def measure(
    objective: str, examples: int, random_seed: int, domain=None, starts=problems.AWAY_FROM_OPTIMUM
) -> list[tuple[float, int, float, object]]:
    static = dict(IMPLICIT_SOLVE, objective=objective)
    value = solvers.compiled("lbfgs_solve", "value", **static)
    jacobian = solvers.compiled("lbfgs_solve", "jacfwd", 1, **static)
    results = []

    @seed(random_seed)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.generate, Phase.target],
        suppress_health_check=list(HealthCheck),
    )
    @given(problem=problems.quadratic_problems(np.float64, domain or DOMAIN[np.float64], starts=starts, dense=True))
    def run(problem):
        x, steps, residual = value(*problem.args())
        if not (float(residual) <= static["rel_tol"] and int(steps) >= 1):
            return
        J = np.asarray(jacobian(*problem.args()))
        H = HESSIANS[objective](problem.A)(np.asarray(x))
        error = float(np.linalg.norm(H @ J - np.eye(H.shape[0]), 2))
        target(error, label="|H J - I|")
        results.append((error, int(steps), float(residual), problem))

    run()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="problems drawn per objective")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eigen-decades", type=float, nargs=2)
    parser.add_argument("--data-decades", type=float, nargs=2)
    parser.add_argument("--objectives", nargs="+", default=sorted(HESSIANS), choices=sorted(HESSIANS))
    args = parser.parse_args()
    import optax

    print(f"optax {optax.__version__} from {Path(optax.__file__).parent}; jax {jax.__version__}")
    for objective in args.objectives:
        start = time.perf_counter()
        domain = LOG_SUM_EXP_DOMAIN if objective == "log-sum-exp" else DOMAIN[np.float64]
        if args.eigen_decades:
            domain = dataclasses.replace(domain, eigen_decades=tuple(args.eigen_decades))
        if args.data_decades:
            domain = dataclasses.replace(domain, data_decades=tuple(args.data_decades))
        results = measure(objective, args.examples, args.seed, domain)
        errors = np.array([r[0] for r in results])
        if not len(errors):
            print(f"{objective}: no solve reached its tolerance")
            continue
        worst = max(results, key=lambda r: r[0])
        q50, q99, q999 = np.quantile(errors, [0.5, 0.99, 0.999])
        print(
            f"{objective}: {len(errors)} converged solves of {args.examples} drawn "
            f"({time.perf_counter() - start:.0f} s); |H J - I|: median {q50:.2g}, 99% {q99:.2g}, "
            f"99.9% {q999:.2g}, max {errors.max():.3g}"
        )
        error, steps, residual, problem = worst
        print(
            f"  worst: steps {steps}, relative residual {residual:.3g}, "
            f"cond {np.linalg.cond(problem.A):.3g}, n {problem.b.shape[0]}, start {problem.start}"
        )
        print(
            f"  A = {np.asarray(problem.A).tolist()}\n  b = {np.asarray(problem.b).tolist()}\n"
            f"  x0 = {np.asarray(problem.x0).tolist()}"
        )


if __name__ == "__main__":
    main()
