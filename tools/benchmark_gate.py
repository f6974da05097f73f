"""Times the gate as a user meets it: a fresh clone, the README's commands, cold then warm.

cold: a fresh clone with empty caches (uv's, pip's, JAX's compilation cache under the
      clone's build/), so every wheel and sdist is downloaded and every program compiled.
warm: the same clone run again: caches full, session environments reused.

For each run and session it reports the wall time, each phase (install, record of the
primal reference, tests) from the session's verdict.json, JAX's traces, compiles and
persistent-cache hits, and the hypothesis examples per property; and, measured in the same
run, the cost of the unit this machine sets: one trace, compile and run of
`jax.jit(jax.jacfwd(solve))` through an `optax.lbfgs()` while-loop solve, so that every
time is also given as a multiple of it (numbers from different machines then compare).
Beside it, the naive way of checking a property: a fresh compile per example.

    python tools/benchmark_gate.py [--sessions unpatched patched] [--fork PATH] [--json FILE]

Run it on a quiet machine: two runs of the same thing side by side differ by 10 to 20 %
on two cores.
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

ROOT = Path(__file__).resolve().parent.parent
SETUP = f"{sys.executable} -m venv .venv && .venv/bin/python -m pip install -q -r requirements/tools.txt"

# The unit: one trace-compile-run of jacfwd through an optax.lbfgs() while-loop solve,
# the problem as arguments (as the suite does); then the same solve checked the naive
# way, with the problem closed over, so that each example is a fresh compile.
UNIT = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np, optax
jax.config.update("jax_enable_x64", True)

def solve(A, b, x0):
    fun = lambda x: 0.5 * x @ (A @ x) - b @ x
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)
    def step(carry):
        x, state, k = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(x, updates), state, k + 1
    def going(carry):
        x, _, k = carry
        return (k < 100) & (jnp.linalg.norm(jax.grad(fun)(x)) > 1e-10)
    return jax.lax.while_loop(going, step, (x0, opt.init(x0), 0))[0]

rng = np.random.default_rng(0)
def problem():
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    return (q * np.logspace(0, 2, 5)) @ q.T, rng.standard_normal(5), np.zeros(5)

start = time.perf_counter()
jax.block_until_ready(jax.jit(jax.jacfwd(solve, argnums=1))(*problem()))
unit = time.perf_counter() - start
naive = []
for _ in range(int(sys.argv[1])):
    A, b, x0 = problem()
    start = time.perf_counter()
    jax.block_until_ready(jax.jit(jax.jacfwd(lambda b: solve(A, b, x0)))(b))
    naive.append(time.perf_counter() - start)
print(json.dumps({"unit_seconds": unit, "naive_seconds_per_example": sum(naive) / len(naive)}))
"""


def measure_unit(python: Path, env: dict, naive: int = 3) -> dict:
    """The unit, in `python`'s environment, with JAX's persistent cache off (a real compile)."""
    env = {k: v for k, v in env.items() if not k.startswith("JAX_")}
    result = subprocess.run([str(python), "-c", UNIT, str(naive)], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the unit could not be measured: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_sessions(clone: Path, sessions: list[str], env: dict, posargs: list[str] = ()) -> dict:
    """One `nox -s SESSION` per session, timed; with each session's verdict.json."""
    results = {}
    for session in sessions:
        command = [str(clone / ".venv/bin/nox"), "-s", session, *(["--", *posargs] if posargs else [])]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True)
        wall = round(time.perf_counter() - start, 1)
        name = "fork" if session == "fork" else session
        report = clone / "build" / ("fork" if name == "fork" else f"reports/{name}") / "verdict.json"
        document = json.loads(report.read_text()) if report.is_file() else {}
        results[session] = {
            "exit": done.returncode,
            "wall_seconds": wall,
            "verdict": document.get("verdict", "none"),
            "phases": document.get("phases", {}),
            "compiles": document.get("compiles", {}),
            "examples": document.get("examples", {}),
        }
        print(f"  {session}: {wall:.0f} s, verdict {results[session]['verdict']}", flush=True)
    return results


def _examples(session: dict) -> str:
    valid = [e.get("valid", 0) for e in session["examples"].values()]
    return f"{min(valid)}-{max(valid)}" if valid else "-"


def _compiles(session: dict) -> str:
    counts = {}
    for source in session["compiles"].values():
        for key, value in source.items():
            counts[key] = counts.get(key, 0) + value
    return (
        f"{int(counts.get('traces', 0))} traces, {int(counts.get('backend_compiles', 0))} compiles "
        f"({int(counts.get('persistent_cache_hits', 0))} from the cache)"
    )


def table(results: dict) -> str:
    unit = results["unit"]["unit_seconds"]
    lines = [
        "| run | session | wall | install | record | tests | JAX | examples per property | examples/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run, sessions in results["runs"].items():
        total = 0.0
        for name, session in sessions.items():
            total += session["wall_seconds"]
            phases = session["phases"]
            cells = [f"{phases[p]:.0f} s" if p in phases else "-" for p in ("install", "record", "tests")]
            valid = sum(e.get("valid", 0) for e in session["examples"].values())
            rate = f"{valid / phases['tests']:.0f}" if phases.get("tests") else "-"
            lines.append(
                f"| {run} | {name} | {session['wall_seconds']:.0f} s ({session['wall_seconds'] / unit:.1f} u) "
                f"| {' | '.join(cells)} | {_compiles(session)} | {_examples(session)} | {rate} |"
            )
        lines.append(f"| {run} | **all** | **{total:.0f} s ({total / unit:.1f} u)** | | | | | | |")
    naive = results["unit"]["naive_seconds_per_example"]
    lines += [
        "",
        f"unit u = one trace-compile-run of jit(jacfwd) through an optax.lbfgs() while-loop solve: "
        f"{unit:.2f} s here; the naive way (a fresh compile per example): {1 / naive:.2f} examples/s.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", nargs="+", default=["unpatched", "patched"])
    parser.add_argument("--fork", help="also time `nox -s fork -- FORK`, warm (a local optax checkout)")
    parser.add_argument("--runs", nargs="+", default=["cold", "warm"], choices=["cold", "warm"])
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "benchmark-gate.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gate-benchmark-") as scratch:
        clone = Path(scratch) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = dict(
            os.environ, UV_CACHE_DIR=str(Path(scratch) / "uv-cache"), PIP_CACHE_DIR=str(Path(scratch) / "pip-cache")
        )
        if "cold" not in args.runs:  # warm only: the user's own caches
            env = dict(os.environ)
        start = time.perf_counter()
        subprocess.run(["bash", "-c", SETUP], cwd=clone, env=env, check=True)
        results = {
            "machine": {"cores": os.cpu_count(), "load_before": os.getloadavg()},
            "setup_seconds": round(time.perf_counter() - start, 1),
            "runs": {},
        }
        for run in args.runs:
            print(f"{run}:", flush=True)
            results["runs"][run] = run_sessions(clone, args.sessions, env)
        if args.fork:
            print("fork (warm):", flush=True)
            run_sessions(clone, ["fork"], env, [args.fork])  # cold: builds its environment and cache
            results["runs"]["fork warm"] = run_sessions(clone, ["fork"], env, [args.fork])
        results["unit"] = measure_unit(clone / ".nox" / args.sessions[0] / "bin" / "python", env)
    text = table(results)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")
    failed = [
        f"{run} {name}"
        for run, sessions in results["runs"].items()
        for name, s in sessions.items()
        if s["verdict"] != "green" and name != "fork"
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
