"""Records the primal L-BFGS results of the optax installed here, bit for bit.

Run it on a release as published, in its pinned environment (the `record_reference`
nox session does exactly that); test_primal_identity.py then checks that a patched
build of the same release, in the same environment, reproduces every bit.

    python tools/record_primal_reference.py            # writes tests/lbfgs/data/primal-optax-V-jax-W.json
    python tools/record_primal_reference.py --output F --expect-optax-in DIR

The gate's patched sessions use the second form, with PYTHONPATH set to the release's
unpacked sdist, to record the release as published on the machine they run on
(gatekit.sessions.record_primal_reference).
"""

import argparse
import json
import sys
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402

from tests.lbfgs import primal  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="where to write the record (default: tests/lbfgs/data/...)")
    parser.add_argument("--expect-optax-in", type=Path,
                        help="refuse unless the optax imported here comes from this folder")
    args = parser.parse_args()
    import optax

    imported_from = Path(optax.__file__).resolve().parent.parent
    if args.expect_optax_in and imported_from != args.expect_optax_in.resolve():
        print(f"error: optax is imported from {imported_from}, not {args.expect_optax_in}: "
              "put that folder first on PYTHONPATH", file=sys.stderr)
        return 2
    records = []
    for problem in primal.problems():
        for dtype in ("float32", "float64"):
            # float32 runs with x64 off, as a float32 user runs them (see tests/lbfgs/conftest.py).
            jax.config.update("jax_enable_x64", dtype == "float64")
            outputs = primal.run(problem, dtype)
            records.append(
                {
                    "problem": problem["name"],
                    "dtype": dtype,
                    "outputs": {key: primal.encode(value) for key, value in outputs.items()},
                }
            )
    path = args.output or primal.reference_path()
    reference = {
        "recorded_with": {"optax": version("optax"), "jax": version("jax"), "jaxlib": version("jaxlib"),
                          "numpy": version("numpy")},
        "num_steps": primal.NUM_STEPS,
        "problems": [
            {key: (value.tolist() if hasattr(value, "tolist") else value) for key, value in p.items()}
            for p in primal.problems()
        ],
        "records": records,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}: "
          f"{len(records)} runs of optax {version('optax')} from {imported_from}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
