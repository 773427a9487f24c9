"""config/gunicorn.conf.py: workers follow the CPUs the process may use (affinity, cgroup quota), 2 to 4; threads
keep about 16 requests in flight per instance; the environment overrides both."""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import pytest

pytestmark = pytest.mark.ops

CONF = Path(__file__).resolve().parents[2] / "config" / "gunicorn.conf.py"


def _conf(monkeypatch, **env: str) -> dict:
    for key in ("GUNICORN_WORKERS", "GUNICORN_THREADS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return runpy.run_path(str(CONF))


def _cgroup(tmp_path: Path, files: dict[str, str], own: str = "/") -> tuple[str, str]:
    for name, text in files.items():
        (tmp_path / "cg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cg" / name).write_text(text)
    (tmp_path / "self-cgroup").write_text(f"0::{own}\n")
    return str(tmp_path / "cg"), str(tmp_path / "self-cgroup")


@pytest.fixture
def many_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(64)))


@pytest.mark.parametrize(("files", "own", "expected"), [
    ({"cpu.max": "200000 100000\n"}, "/", 2),                              # a container limited to 2 CPUs
    ({"cpu.max": "150000 100000\n"}, "/", 2),                              # 1.5 CPUs: rounded up
    ({"cpu.max": "max 100000\n"}, "/", 64),                                # no quota: the affinity
    ({"system.slice/ipv-app@1.service/cpu.max": "300000 100000\n",         # systemd CPUQuota=300%
      "cpu.max": "max 100000\n"}, "/system.slice/ipv-app@1.service", 3),
    ({"system.slice/cpu.max": "200000 100000\n",                          # the slice's quota binds
      "system.slice/ipv-app@1.service/cpu.max": "max 100000\n"}, "/system.slice/ipv-app@1.service", 2),
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, "/", 1),  # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, "/", 64),
    ({}, "/", 64),                                                         # nothing readable
])
def test_cpus_available_reads_the_quota_of_the_process_own_cgroup(tmp_path, many_cpus, monkeypatch, files, own,
                                                                   expected):
    ns = _conf(monkeypatch)
    root, proc = _cgroup(tmp_path, files, own)
    assert ns["cpus_available"](root, proc) == expected


@pytest.mark.parametrize(("cpus", "workers", "threads"), [(1, 2, 8), (2, 2, 8), (3, 3, 5), (4, 4, 4), (64, 4, 4)])
def test_workers_follow_the_cpus_between_2_and_4_and_threads_keep_16_in_flight(monkeypatch, cpus, workers, threads):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cpus)))
    monkeypatch.setattr(Path, "read_text", _no_cgroup(Path.read_text))
    ns = _conf(monkeypatch)
    assert (ns["workers"], ns["threads"]) == (workers, threads)


def test_the_environment_overrides_both(monkeypatch):
    ns = _conf(monkeypatch, GUNICORN_WORKERS="6", GUNICORN_THREADS="3")
    assert (ns["workers"], ns["threads"]) == (6, 3)
    assert _conf(monkeypatch, GUNICORN_WORKERS="8")["threads"] == 4


def _no_cgroup(real):
    def read_text(self, *a, **k):
        if str(self).startswith(("/sys/fs/cgroup", "/proc/self/cgroup")):
            raise OSError("no cgroup in this test")
        return real(self, *a, **k)

    return read_text
