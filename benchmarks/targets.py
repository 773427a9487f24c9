"""Targets and the figures from before the renovation, so each bench prints a figure beside its target (pass/miss),
the same figure measured at commit fb2f31d (the last commit before the feature packages and the one typed settings
model, measured on a machine of the same kind: 2 shared cores) where one was measured, and the machine's load while
it ran (CPU figures grow with the load of the other processes on the same cores: read them against it).

Targets: docs/decisions and the open issues name them (pages near a bare Flask page, the callback, a start that
costs little, the launch at the floor of EHR calls, the whole journey against hello-world under load).
"""

from __future__ import annotations

import os

BEFORE_COMMIT = "fb2f31d"

# name -> (target, "max" when at most the target passes / "min" when at least)
TARGETS: dict[str, tuple[float, str]] = {
    "page_ms": (2.5, "max"),  # app CPU per page in-process (gate, screen, result, referrals, consent)
    "callback_ms": (10.0, "max"),  # app CPU of /callback, steady state
    "callback_rounds": (2, "max"),  # sequential EHR rounds of /callback, steady state
    "first_launch_calls": (2, "max"),  # EHR calls of the first launch of a process started after launches
    "create_and_warm_s": (0.6, "max"),  # create_app() plus the warm-up, CPU, fresh process
    "start_s": (0.6, "max"),  # import smart_app + create_app() + warm-up, CPU, fresh process
    "worker_rss_mb": (100.0, "max"),  # gunicorn worker RSS after preload
    "load_p95_ratio": (5.0, "max"),  # the journey's p95 against hello-world's, N = 100
    "load_throughput_ratio": (0.3, "min"),  # the journey's requests/s against hello-world's, N = 100
}

# Measured at BEFORE_COMMIT with the same benches (CPU time, 2 cores): None where that commit had no such figure.
BEFORE: dict[str, float] = {
    "import_s": 0.24,
    "create_app_s": 0.46,
    "start_s": 0.90,
    "worker_rss_mb": 87.0,
    "callback_ms": 12.3,
    "page_ms.gate": 1.55,
    "page_ms.result": 3.01,
    "page_ms.referrals": 2.11,
    "page_ms.consent": 1.67,
}


def verdict(name: str, value: float) -> str:
    target, sense = TARGETS[name]
    ok = value <= target if sense == "max" else value >= target
    return "pass" if ok else "miss"


def target_text(name: str, unit: str = "") -> str:
    target, sense = TARGETS[name]
    return f"{'<=' if sense == 'max' else '>='} {target:g}{unit}"


def judged(name: str, value: float, unit: str = "", *, fmt: str = ".2f") -> str:
    """``1.93 ms (target <= 2.5 ms: pass)``."""
    return f"{value:{fmt}}{unit} (target {target_text(name, unit)}: {verdict(name, value)})"


def before(name: str, unit: str = "", *, fmt: str = ".2f") -> str:
    """``at fb2f31d 1.55 ms`` or ``at fb2f31d: not measured``."""
    value = BEFORE.get(name)
    return f"at {BEFORE_COMMIT} {value:{fmt}}{unit}" if value is not None else f"at {BEFORE_COMMIT}: not measured"


def load() -> str:
    """The machine's load averages (1, 5 minutes) and CPUs: printed beside each figure."""
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f} on {os.cpu_count()} CPUs"
