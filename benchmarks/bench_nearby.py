"""Nearest-site search at every directory size: the grid index against a brute-force scan, and the
crossover that sets ``referrals.index.BRUTE_FORCE_MAX_SITES``. Targets: ≤ 0.1 ms median for the
default directory, ≤ 2 ms median at 200k services (printed as pass/miss, never asserted)."""

from __future__ import annotations

import random
import statistics
import time

from benchmarks.bench_ranking import generate
from referrals import index as index_module
from referrals.index import DirectoryIndex
from referrals.loaders.hsds import parse_hsds_data
from referrals.model import Directory
from referrals.store import DEFAULT_DIRECTORY, merge

SIZES = (6, 50, 200, 500, 1_000, 2_000, 5_000, 20_000, 200_000)
QUERIES = 400


def _origins(n: int, seed: int = 5) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [(rng.uniform(41.3, 42.8), rng.uniform(-73.3, -70.0)) for _ in range(n)]


def _median_ms(index: DirectoryIndex, origins: list[tuple[float, float]]) -> float:
    times = []
    for o in origins:
        t0 = time.perf_counter()
        index.nearby(o, 0, 10)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _directory(n: int) -> Directory:
    from referrals.loaders import load_source

    if n == 6:
        return load_source(DEFAULT_DIRECTORY)
    return merge([load_source(DEFAULT_DIRECTORY), parse_hsds_data(generate(n), "bench")])


def _index(directory: Directory, brute: bool) -> DirectoryIndex:
    """The index as built with the scan forced on or off (the index decides when it is built)."""
    saved = index_module.BRUTE_FORCE_MAX_SITES
    index_module.BRUTE_FORCE_MAX_SITES = 10**9 if brute else -1
    try:
        return DirectoryIndex(directory)
    finally:
        index_module.BRUTE_FORCE_MAX_SITES = saved


def main() -> None:
    origins = _origins(QUERIES)
    print(f"nearby(): median ms over {QUERIES} random Southern New England origins, k=10 "
          f"(threshold in use: {index_module.BRUTE_FORCE_MAX_SITES} located sites)")
    print(f"{'services':>9} {'sites':>7} {'grid':>8} {'brute':>8} {'in use':>8}")
    crossover = None
    for n in SIZES:
        directory = _directory(n)
        index = _index(directory, brute=False)
        sites = index.located_sites
        grid = _median_ms(index, origins)
        brute = _median_ms(_index(directory, brute=True), origins) if n <= 20_000 else float("nan")
        used = brute if sites <= index_module.BRUTE_FORCE_MAX_SITES else grid
        if crossover is None and brute == brute and brute > grid:
            crossover = sites
        print(f"{n:>9,} {sites:>7,} {grid:>8.3f} {brute:>8.3f} {used:>8.3f}")
        if n == 6:
            print(f"  default directory: {used:.3f} ms (target ≤ 0.1 ms: {'pass' if used <= 0.1 else 'miss'})")
        if n == 200_000:
            print(f"  200k services: {used:.3f} ms (target ≤ 2 ms: {'pass' if used <= 2 else 'miss'})")
    print(f"measured crossover: brute force loses from about {crossover} located sites")


if __name__ == "__main__":
    main()
