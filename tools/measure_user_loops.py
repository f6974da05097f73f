"""The loops users write, differentiated, against an independent reference (issue: users' own
loops). Prints one line per workload: its relative error to the reference.

    python tools/measure_user_loops.py [float32|float64]

Run in an environment whose optax is the one to measure (a session's, or any); the
references are computed in numpy / float64 from the implicit-function theorem.
"""

from __future__ import annotations

import sys

import jax
import numpy as np
import optax

from lbfgs_gate.suite import user_loops as loops


def relative(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-300))


def main(dtype_name: str) -> None:
    jax.config.update("jax_enable_x64", dtype_name == "float64")
    dtype = np.dtype(dtype_name)
    print(f"optax {optax.__version__}, jax {jax.__version__}, {dtype_name}")
    for name, measure in loops.WORKLOADS.items():
        try:
            got, want = measure(dtype)
            print(f"{name:50s} {relative(got, want):.3g}")
        except Exception as error:  # noqa: BLE001 - a measurement tool: show what broke
            print(f"{name:50s} {type(error).__name__}: {str(error).splitlines()[0][:120]}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "float64")
