"""`python -m benchmarks` (`make bench`): run every benchmarks/bench_*.py ``main()`` in name order.

Benchmarks print figures; they never fail on timing. Pass names to run some: `python -m benchmarks ranking`.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    wanted = set(argv if argv is not None else sys.argv[1:])
    sys.argv = sys.argv[:1]  # benchmark names are ours: each bench's own argument parser sees none
    here = Path(__file__).resolve().parent
    failures = 0
    for path in sorted(here.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if wanted and name not in wanted and path.stem not in wanted:
            continue
        print(f"== {path.stem} ==", flush=True)
        module = importlib.import_module(f"benchmarks.{path.stem}")
        environ = dict(os.environ)  # what a benchmark sets for its app (a deployment file...) stays with it
        try:
            module.main()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failures += 1
            print(f"!! {path.stem} failed: {exc.__class__.__name__}: {exc}", flush=True)
        finally:
            os.environ.clear()
            os.environ.update(environ)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
