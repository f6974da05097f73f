"""How long `lbfgs-gate check` takes, cold and warm, in units of this machine.

    python tools/benchmark_check.py PYTHON [--runs N]

PYTHON is the interpreter of an environment with optax, jax and lbfgs-gate installed (for
instance a fresh venv: `pip install . optax -c constraints/optax-0.2.4.txt`). The unit is
tools/benchmark_gate.py's: one trace, compile and run of jax.jit(jax.jacfwd(solve)) through an
optax.lbfgs() while-loop solve, with JAX's persistent cache off. "cold" runs the check with an
empty cache folder (XDG_CACHE_HOME in a fresh temporary folder: no compilation cache, no
reports); "warm" runs it again with the same folder. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_gate import measure_unit  # noqa: E402


def timed_check(python: str, cache_home: Path) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HYPOTHESIS_", "JAX_", "XLA_"))}
    env.pop("PYTHONPATH", None)
    env["XDG_CACHE_HOME"] = str(cache_home)
    start = time.perf_counter()
    result = subprocess.run(
        [python, "-m", "lbfgs_gate", "check"], env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True
    )
    return time.perf_counter() - start, result.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("python")
    parser.add_argument("--runs", type=int, default=2, help="warm runs after the cold one")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    unit = measure_unit(Path(args.python), env, naive=1)["unit_seconds"]
    with tempfile.TemporaryDirectory(prefix="check-bench-") as cache_home:
        cold, code = timed_check(args.python, Path(cache_home))
        warm = [timed_check(args.python, Path(cache_home))[0] for _ in range(args.runs)]
    print(
        json.dumps(
            {
                "unit_seconds": round(unit, 2),
                "cold_seconds": round(cold, 1),
                "cold_units": round(cold / unit, 1),
                "warm_seconds": [round(w, 1) for w in warm],
                "warm_units": [round(w / unit, 1) for w in warm],
                "exit": code,
            }
        )
    )


if __name__ == "__main__":
    main()
