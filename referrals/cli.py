"""``ipv-directory``: validate, import and list referral directory sources (for IT).

  ipv-directory validate FILE        check a file (our YAML, HSDS 3.0 JSON, HSDS CSV datapackage, FHIR Bundle)
  ipv-directory import FILE          validate, convert to our format and place it where the app loads it
  ipv-directory list                 the services the app would load now

Exit codes: 0 ok, 1 the file was refused (problems printed, one per line), 2 usage error.
The app reads its deployment's ``tuning.directory_paths`` at start (default: config/directory/boston.yaml plus
every file in the import folder, ``tuning.directory_import_dir`` or instance/directory/); restart it, or let it
reload, after an import. Without --into or paths, this reads those settings from the deployment file
IPV_DEPLOYMENT names (the sandbox's when unset).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from config.files import SettingsError
from config.settings import Settings, load_settings
from referrals.errors import DirectoryError
from referrals.loaders import FORMATS, load_source
from referrals.loaders.native import dump_native
from referrals.model import text_in
from referrals.ranking import describe_hours
from referrals.store import build, configured_paths, default_import_dir


def _tuning() -> Settings:
    """The deployment's settings (where the app loads the directory from); exit 2 naming what is wrong."""
    try:
        return load_settings()
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"settings: {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def _configured() -> list[Path]:
    settings = _tuning()
    return configured_paths(settings.directory_paths, settings.directory_import_dir)


def _fail(exc: DirectoryError) -> int:
    print(f"REFUSED: {len(exc.issues)} problem(s); nothing was loaded.", file=sys.stderr)
    for issue in exc.issues:
        print(f"  {issue}", file=sys.stderr)
    return 1


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        d = load_source(args.file, fmt=args.format)
    except DirectoryError as exc:
        return _fail(exc)
    sites = sum(len(s.sites) for s in d.services)
    print(f"OK: {args.file}: {len(d.services)} service(s), {sites} site(s)")
    return 0


class _PlainDumper(yaml.SafeDumper):
    """Writes a loaded directory's shared objects (equal texts, sources: see model.Compactor) in full at every
    use, not as YAML anchors and aliases a person editing the file would trip over."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def native_text(directory: Any) -> str:
    """A loaded directory as the native YAML an import keeps (a file, or a row of the database's imports)."""
    return yaml.dump(dump_native(directory), Dumper=_PlainDumper, sort_keys=False, allow_unicode=True, width=120)


def cmd_import(args: argparse.Namespace) -> int:
    try:
        d = load_source(args.file, fmt=args.format)
    except DirectoryError as exc:
        return _fail(exc)
    target_dir = Path(args.into) if args.into else default_import_dir(_tuning().directory_import_dir)
    name = args.name or re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(args.file).stem).strip("-") or "imported"
    target = target_dir / f"{name}.yaml"
    target_dir.mkdir(parents=True, exist_ok=True)
    text = native_text(d)
    # Write beside the target, check the whole configured directory loads with it, then rename:
    # the app never sees a half-written or failing file.
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp.yaml", dir=target_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        paths = [p for p in _configured() if p.resolve() != target.resolve()]
        index = build([*paths, Path(tmp)])
        os.replace(tmp, target)
    except DirectoryError as exc:
        return _fail(exc)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"IMPORTED: {len(d.services)} service(s) -> {target} "
          f"(the app will serve {len(index.entries) + len(index.emergency)} service(s) after a restart)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.paths] if args.paths else _configured()
    try:
        index = build(paths)
    except DirectoryError as exc:
        return _fail(exc)
    services = index.directory.services
    if args.json:
        print(json.dumps([{"id": s.id, "program": s.program, "kind": s.kind, "scope": s.scope,
                           "needs": sorted(s.needs), "languages": sorted(s.languages),
                           "phones": [p.dial() for p in s.phones], "sites": [t.id for t in s.sites]}
                          for s in services], indent=1))
        return 0
    print(f"{len(services)} service(s) from: {', '.join(str(p) for p in paths)}")
    for s in services:
        phone = s.main_phone()
        hours = describe_hours(s.hours) or "hours not given"
        print(f"{s.id:28} {text_in(s.name, 'en')[:40]:40} {phone.dial() if phone else '-':22} {hours}")
        if args.verbose:
            for t in s.sites:
                where = "address hidden" if s.hides_address else (t.address.line if t.address else "") or ""
                print(f"    site {t.id:24} {text_in(t.name, 'en')[:40]:40} {where}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ipv-directory", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check a directory file; print every problem")
    v.add_argument("file")
    v.add_argument("--format", choices=("auto", *FORMATS), default="auto")
    v.set_defaults(func=cmd_validate)
    i = sub.add_parser("import", help="validate and place a file where the app loads it")
    i.add_argument("file")
    i.add_argument("--format", choices=("auto", *FORMATS), default="auto")
    i.add_argument("--name", help="name of the imported file (default: the source's name)")
    i.add_argument("--into", help="folder to write to (default: the deployment's "
                   "tuning.directory_import_dir, else instance/directory/)")
    i.set_defaults(func=cmd_import)
    ls = sub.add_parser("list", help="list the services the app would load")
    ls.add_argument("paths", nargs="*", help="sources to list (default: the deployment's "
                    "tuning.directory_paths)")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("-v", "--verbose", action="store_true", help="also list sites")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
