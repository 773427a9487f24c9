"""The app's Jinja environment: Flask's, with ``x.name`` on a plain dict read as the key straight away.

Jinja reads ``x.name`` as ``getattr(x, "name")`` and, when that raises AttributeError, as ``x["name"]``. The pages
pass their view models as plain dicts, so most of a page's ``x.name`` took the exception path (a raise and a catch
each). A plain dict (the type itself, not a subclass) has no instance attributes, so for a name that is not one of
the dict type's own attributes (``items``, ``get``...) ``getattr`` always raises and the key is what Jinja reads:
reading the key first gives the same value or the same undefined.

Also the page templates compiled ahead of the start (below)."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
import jinja2
from flask import Flask, current_app
from flask.cli import with_appcontext
from flask.templating import Environment
from jinja2 import Environment as JinjaEnvironment
from jinja2 import FileSystemBytecodeCache
from jinja2.bccache import Bucket

from config.checks import run_mode
from config.current import settings_of

log = logging.getLogger("ipv.templates")

_DICT_ATTRIBUTES = frozenset(dir(dict))


class DictFirstEnvironment(Environment):
    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


# -- page templates compiled ahead ---------------------------------------------------------------------------------
# Compiling the page templates was most of warm-up: a new container (its /tmp a new tmpfs, its root read-only) paid it
# at every start. The image's build compiles them once (`flask --app smart_app:create_build_app compile-templates`)
# into a folder the app reads at start and cannot write (docs/decisions/0019-templates-compiled-at-build.md).
COMPILED_DIR_NAME = "ipv-templates"
_PATTERN = "%s.jinja"


def compiled_templates_dir(configured: str = "") -> Path:
    """The deployment's ``tuning.template_cache_dir``, else var/ipv-templates in the Python environment the app runs
    from (next to Flask's instance folder of an installed app; root's in the image and on a DEPLOY.md host)."""
    return Path(configured).expanduser() if configured else Path(sys.prefix) / "var" / COMPILED_DIR_NAME


def page_templates(env: JinjaEnvironment) -> list[str]:
    """Every page template of the app (Jinja's in-memory cache keeps 400; the app has a few dozen)."""
    return [name for name in env.list_templates() if name.endswith(".html")]


def environment_fingerprint(env: JinjaEnvironment) -> str:
    """What decides a template's compiled code besides its source: the Jinja release, the environment's class and
    syntax, its extensions, and each filter's and test's name with what it is passed (the code calls
    ``f(context, ...)`` for a ``pass_context`` filter). Part of each entry's key, so code compiled by an
    environment made otherwise is never loaded, only compiled again."""
    def passed(functions: dict[str, Any]) -> list[tuple[str, str]]:
        return sorted((name, str(getattr(f, "jinja_pass_arg", None))) for name, f in functions.items())

    def named(value: Any) -> str:
        return getattr(value, "__qualname__", repr(value)) if callable(value) else repr(value)

    parts = [
        jinja2.__version__, f"{type(env).__module__}.{type(env).__qualname__}", named(env.code_generator_class),
        env.block_start_string, env.block_end_string, env.variable_start_string, env.variable_end_string,
        env.comment_start_string, env.comment_end_string, env.line_statement_prefix, env.line_comment_prefix,
        env.trim_blocks, env.lstrip_blocks, env.newline_sequence, env.keep_trailing_newline, env.optimized,
        env.is_async, env.sandboxed, named(env.autoescape), named(env.finalize), sorted(env.extensions),
        getattr(env, "newstyle_gettext", None), passed(env.filters), passed(env.tests),
    ]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


class CompiledTemplates(FileSystemBytecodeCache):
    """Page templates' compiled code in one folder. Jinja keeps the checksum of the source each entry was compiled
    from and loads it only for that very source: a changed template is compiled again, never served old. Entries are
    keyed by the environment too (``environment_fingerprint``). An unreadable or cut entry is compiled again, never a
    failed page. ``may_write`` off (production): a template compiled at run time is kept in memory only, since
    what is in the folder is code the app runs."""

    def __init__(self, directory: Path, env: JinjaEnvironment, *, may_write: bool):
        super().__init__(str(directory), pattern=_PATTERN)
        self.may_write = may_write
        self.fingerprint = environment_fingerprint(env)
        self.loaded = 0  # templates whose code came from the folder (the start's log line)

    def get_cache_key(self, name: str, filename: str | None = None) -> str:
        return hashlib.sha1(f"{self.fingerprint}|{name}|{filename or ''}".encode(), usedforsecurity=False).hexdigest()

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except Exception:  # noqa: BLE001 - an unreadable entry is a miss
            bucket.reset()
        if bucket.code is not None:
            self.loaded += 1

    def dump_bytecode(self, bucket: Bucket) -> None:
        if not self.may_write:
            return
        try:
            super().dump_bytecode(bucket)
        except OSError:  # a full or read-only disk: the template stays compiled in memory
            pass


def compile_into(env: JinjaEnvironment, directory: Path) -> int:
    """Every page template compiled into ``directory`` (emptied of earlier entries first), readable by all: the
    build runs this as root, the app reads as its own user."""
    directory.mkdir(parents=True, exist_ok=True)
    cache = CompiledTemplates(directory, env, may_write=True)
    cache.clear()
    env.bytecode_cache = cache
    if env.cache is not None:
        env.cache.clear()
    names = page_templates(env)
    for name in names:
        env.get_template(name)
    for entry in directory.iterdir():
        entry.chmod(0o644)  # Jinja writes each entry through a temporary file of mode 0600
    directory.chmod(0o755)
    return len(names)


def compiled_templates_for(app: Flask) -> CompiledTemplates | None:
    """The folder's entries for this app, or None (every template compiled at start, kept in memory).

    Production reads the folder only when this process can write neither it nor a file in it: its entries are code
    the app runs, so only the image (root) may have put them there (DEPLOY.md). The demo and the tests compile into
    it as they go."""
    settings = settings_of(app)
    directory = compiled_templates_dir(settings.template_cache_dir)
    if run_mode(settings, app.testing) != "production":
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        return CompiledTemplates(directory, app.jinja_env, may_write=os.access(directory, os.W_OK))
    if not directory.is_dir():
        log.info("no compiled page templates in %s: each is compiled at start", directory)
        return None
    if _may_change(directory):
        log.warning("compiled page templates in %s not used: this process may write there, and they are code it "
                    "would run (DEPLOY.md, the image builds them as root); each is compiled at start", directory)
        return None
    return CompiledTemplates(directory, app.jinja_env, may_write=False)


def _may_change(directory: Path) -> bool:
    try:
        return os.access(directory, os.W_OK) or any(os.access(entry, os.W_OK) for entry in directory.iterdir())
    except OSError:  # unreadable: nothing in it can be loaded anyway
        return True


def init_app(app: Flask) -> None:
    """The compiled templates' folder, read from now on (the environment is complete: every filter is in), and
    ``flask compile-templates``."""
    app.jinja_env.bytecode_cache = compiled_templates_for(app)
    app.cli.add_command(compile_templates_command)


@click.command("compile-templates")
@click.option("--into", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The folder (default: tuning.template_cache_dir, else var/ipv-templates in this Python "
                   "environment).")
@with_appcontext
def compile_templates_command(into: Path | None) -> None:
    """Compile every page template into the folder the app reads at start. The image's build runs it as root with
    ``--app smart_app:create_build_app`` (no deployment, secrets or database needed), so the app, another user,
    cannot change the code it loads; ``make templates`` runs it on a development machine."""
    directory = into or compiled_templates_dir(settings_of(current_app).template_cache_dir)
    count = compile_into(current_app.jinja_env, directory)
    click.echo(f"{count} page templates compiled into {directory}")
