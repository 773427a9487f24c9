"""The hash-pinned locks (requirements/*.lock, made by `make lock`) agree with pyproject.toml: every declared
requirement is pinned to a version it allows, every pin carries its hashes, a package shared by two locks has
one version, and pyproject.toml caps every dependency below its next major release."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = canonicalize_name(PYPROJECT["project"]["name"])
LOCKS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


def read_lock(name: str) -> dict[str, list[tuple[Version, str | None, list[str]]]]:
    """name -> [(version, marker, hashes)] (a universal lock may pin two versions under different markers)."""
    pins: dict[str, list[tuple[Version, str | None, list[str]]]] = {}
    current: list[str] | None = None
    for line in (LOCKS / name).read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = []
            marker = match.group(3).strip() if match.group(3) else None
            pins.setdefault(canonicalize_name(match.group(1)), []).append((Version(match.group(2)), marker, current))
        elif line.strip().startswith("--hash=") and current is not None:
            current.append(line.strip().removeprefix("--hash=").rstrip(" \\"))
        elif line and not line.startswith((" ", "#")):
            raise AssertionError(f"{name}: not a pin: {line!r}")
    return pins


RUNTIME, DEV, BUILD_SYSTEM = read_lock("runtime.lock"), read_lock("dev.lock"), read_lock("build-system.lock")
DEPENDENCIES = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
EXTRAS = {extra: [Requirement(r) for r in reqs]
          for extra, reqs in PYPROJECT["project"]["optional-dependencies"].items()}
BUILD_REQUIRES = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
PY311 = {"python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux",
         "platform_system": "Linux", "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def _pinned_for_linux_311(pins, name: str) -> Version | None:
    for version, marker, _ in pins.get(canonicalize_name(name), []):
        if marker is None or Marker(marker).evaluate(PY311):
            return version
    return None


@pytest.mark.parametrize("lock, requirements", [
    ("runtime.lock", DEPENDENCIES),
    ("dev.lock", DEPENDENCIES + EXTRAS["dev"] + EXTRAS["build"] + BUILD_REQUIRES),
    ("build-system.lock", BUILD_REQUIRES),
])
def test_every_declared_requirement_is_pinned_to_a_version_it_allows(lock, requirements):
    pins = read_lock(lock)
    for req in requirements:
        if canonicalize_name(req.name) == PROJECT:  # dev pulls in our own build extra
            continue
        version = _pinned_for_linux_311(pins, req.name)
        assert version is not None, f"{req.name} is not in requirements/{lock}: run make lock"
        assert req.specifier.contains(version, prereleases=True), \
            f"requirements/{lock} pins {req.name}=={version}, pyproject.toml asks {req.specifier}: run make lock"


def test_every_pin_carries_sha256_hashes():
    for name, pins in (("runtime.lock", RUNTIME), ("dev.lock", DEV), ("build-system.lock", BUILD_SYSTEM)):
        assert pins, name
        for package, entries in pins.items():
            for version, _, hashes in entries:
                assert hashes and all(h.startswith("sha256:") and len(h) == 71 for h in hashes), \
                    f"{name}: {package}=={version} has no hash"


def test_the_venv_and_the_image_get_the_same_versions():
    """dev.lock (the venv of `make test` and CI) holds the runtime and build-system locks' pins exactly."""
    for name, lock in (("runtime.lock", RUNTIME), ("build-system.lock", BUILD_SYSTEM)):
        for package, entries in lock.items():
            # Markers may differ (a dev tool can need everywhere what the app needs on one platform only).
            versions = {v for v, _, _ in entries}
            assert versions == {v for v, _, _ in DEV[package]}, f"{package}: {name} and dev.lock differ"


def test_the_image_lock_holds_no_build_or_test_tool():
    for tool in ("zipcodes", "pytest", "playwright", "hypothesis", "ruff", "radon", "uv", "setuptools", "wheel"):
        assert tool not in RUNTIME, f"{tool} would be installed in the image"


def test_every_dependency_is_capped_below_its_next_major():
    for req in DEPENDENCIES + [r for reqs in EXTRAS.values() for r in reqs]:
        if canonicalize_name(req.name) == PROJECT:
            continue
        lower = [Version(s.version) for s in req.specifier if s.operator == ">="]
        upper = [Version(s.version) for s in req.specifier if s.operator == "<"]
        assert lower and upper, f"{req}: want >=X,<next major"
        pinned = _pinned_for_linux_311(DEV, req.name)
        assert upper[0] == Version(f"{pinned.major + 1}") or (pinned.major == 0 and upper[0] == Version("1")), \
            f"{req}: the cap should be the release after the locked {pinned}'s major"
