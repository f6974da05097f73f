"""The corpus of users' loops (lbfgs_gate/suite/corpus.py) as one table: the release as published
against the release with the series, judged by the rule test_never_worse.py holds the series to.

    python tools/never_worse.py [--release 0.2.8] [--series patches/series]

Run where optax, jax and lbfgs_gate import (`.nox/patched/bin/python tools/never_worse.py` from the
clone; the release defaults to the installed optax's version). Each tree is measured as the gate's
sessions record the release (lbfgs_gate.pipeline.release_derivatives: only that tree's optax on the
path, reused while nothing changed). Exit status 1 if any measurement falls short, the registered
limit's included: the table is what a change of the series' derivative rule is judged by.
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib.metadata import version
from pathlib import Path

from lbfgs_gate import PATCHES_DIR, pipeline, tree
from lbfgs_gate.suite import corpus


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", help="the optax release (default: the installed optax's version)")
    parser.add_argument("--series", type=Path, default=PATCHES_DIR / "series", help="the series file")
    arguments = parser.parse_args()
    release = arguments.release or version("optax")
    start = time.monotonic()
    published = corpus.load(pipeline.release_derivatives(pipeline.pristine_tree(release)))
    patched = tree.prepare(release, arguments.series, report=lambda _: None)
    series = corpus.load(pipeline.release_derivatives(patched, state="with the series"))
    print(f"\noptax {release}\n{'workload':44s} {'dtype':8s} {'published':>10s} {'series':>10s} {'bound':>8s}  verdict")
    short = []
    for (name, dtype), error in published.items():
        bound = corpus.bound(error, dtype)
        got = series.get((name, dtype))
        ok = isinstance(got, float) and got <= bound
        if not ok:
            short.append(f"{name} {dtype}")
        print(
            f"{name:44s} {dtype:8s} {corpus.shown(error)[:10]:>10s} {corpus.shown(got)[:10]:>10s} "
            f"{bound:8.2g}  {'PASS' if ok else 'SHORT'}"
        )
    print(f"\n{len(short)} short of the rule; {time.monotonic() - start:.0f} s")
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())
