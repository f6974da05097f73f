"""Measures how accurate float32 forward derivatives of 50-step L-BFGS unrolls are.

The problem: L2-regularised logistic regression (lbfgs_gate/suite/trees.py, 7 features and a
bias, 32 rows), columns of the design matrix scaled by 10**U(-s, s). The derivative:
d x / d l2 along the regularisation strength (a hyper-parameter a user tunes), by
`jax.jvp` through 50 steps of `chain(scale_by_lbfgs(), scale(-0.5))` in float32. The
oracle: float64 Newton's method and -H^-1 (w, 0) (trees.logistic_solution). For each
(s, l2) cell, prints the largest and median relative error over the seeds, the share
of non-finite tangents, the largest relative distance of the iterate from the solution
(an unroll that has not converged cannot have the implicit derivative), and the largest
error among the unrolls whose iterate converged (|x - x*| <= 1e-5 |x*|).

Run it with the project root on sys.path, in the environment to measure, e.g.
    .nox/patched/bin/python tools/measure_float32_accuracy.py --seeds 64
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lbfgs_gate.suite import trees  # noqa: E402

SCALE_DECADES = (0.0, 0.5, 1.0, 1.5, 2.0)
L2 = (1e-3, 1e-2, 1e-1, 1.0)
# An iterate this close to the solution (relative, float32 rounding is 6e-8) has converged.
CONVERGED = 1e-5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", False)
    jvp = trees.compiled("scale_by_lbfgs_unroll", "jvp", objective="logistic-regression", num_steps=args.steps)
    print(f"optax {trees.version('optax')}, jax {jax.__version__}, {args.steps} steps, {args.seeds} seeds a cell")
    print("scale decades  l2     max rel err  median   non-finite  max |x - x*|/|x*|  converged  max err converged")
    start = time.time()
    for scale_decades in SCALE_DECADES:
        for l2 in L2:
            errors, distances, nonfinite, converged = [], [], 0, []
            for seed in range(args.seeds):
                data, x0 = trees.logistic_problem(seed, np.float32, scale_decades=scale_decades, l2=l2)
                tangent = tuple(np.zeros_like(v) for v in data[:2]) + (np.ones((), np.float32),)
                x, dx = jvp(data, x0, tangent, jax.tree.map(np.zeros_like, x0))
                solution, derivative = trees.logistic_solution(data)
                distances.append(trees.relative_error(x, solution))
                if not trees.all_finite(dx):
                    nonfinite += 1
                    continue
                errors.append(trees.relative_error(dx, derivative))
                if distances[-1] <= CONVERGED:
                    converged.append(errors[-1])
            print(
                f"{scale_decades:<14} {l2:<6g} {max(errors, default=np.nan):<12.2g} "
                f"{np.median(errors) if errors else np.nan:<8.2g} {nonfinite:<11} {max(distances):<18.2g} "
                f"{len(converged):<10} {max(converged, default=np.nan):.2g}",
                flush=True,
            )
    print(f"{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
