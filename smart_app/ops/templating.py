"""The app's Jinja environment: Flask's, with three of Jinja's per-use steps made cheaper, same results.

- ``x.name`` on a plain dict is read as the key straight away. Jinja reads ``x.name`` as ``getattr(x, "name")`` and,
  when that raises AttributeError, as ``x["name"]``. The pages pass their view models as plain dicts, so most of a
  page's ``x.name`` took the exception path (a raise and a catch each). A plain dict (the type itself, not a
  subclass) has no instance attributes, so for a name that is not one of the dict type's own attributes (``items``,
  ``get``...) ``getattr`` always raises and the key is what Jinja reads: reading the key first gives the same value
  or the same undefined.
- A call in a template (``_()``, ``url_for``, ``csrf_token``...) of a plain function or bound method looks for its
  ``pass_context``/``pass_eval_context``/``pass_environment`` mark in the function's own attributes, where the
  decorators put it. Jinja asks ``hasattr`` three times a call (the object, its ``__call__``, the object again),
  each a raised and caught AttributeError when the mark is absent, as it is for most. Anything else (a macro, a
  callable object, a ``pass_context`` function, whose loop and block variables Jinja derives a context for) is
  called by Jinja's own ``Context.call``.
- A template's globals are handed to each new context (every render and every include copies them) as the
  environment's own dict when the template has no globals of its own, which is the same mapping as the
  ``ChainMap`` Jinja makes (an empty map in front of the environment's dict), copied at C speed instead of a
  Python-level lookup per global.

Also the page templates compiled ahead of the start (below).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections import ChainMap
from pathlib import Path
from types import FunctionType, MethodType
from typing import Any

import click
import jinja2
from flask import Flask, current_app
from flask.cli import with_appcontext
from flask.templating import Environment
from jinja2 import Environment as JinjaEnvironment
from jinja2 import FileSystemBytecodeCache, Template, pass_environment, pass_eval_context
from jinja2.bccache import Bucket
from jinja2.runtime import Context, new_context
from jinja2.utils import internalcode

from config.checks import run_mode
from config.current import settings_of

log = logging.getLogger("ipv.templates")

_DICT_ATTRIBUTES = frozenset(dir(dict))
# The marks Jinja's decorators set (``jinja_pass_arg``), read from the decorators themselves.
_EVAL_CONTEXT = pass_eval_context(lambda: None).jinja_pass_arg  # type: ignore[attr-defined]
_ENVIRONMENT = pass_environment(lambda: None).jinja_pass_arg  # type: ignore[attr-defined]


class PlainCallContext(Context):
    @internalcode
    def call(__self, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        kind = type(__obj)
        if kind is FunctionType:
            own = __obj.__dict__
        elif kind is MethodType and type(__obj.__func__) is FunctionType:
            own = __obj.__func__.__dict__  # a bound method's attributes are its function's
        else:
            return Context.call(__self, __obj, *args, **kwargs)
        mark = own.get("jinja_pass_arg")
        if mark is _EVAL_CONTEXT:
            args = (__self.eval_ctx, *args)
        elif mark is _ENVIRONMENT:
            args = (__self.environment, *args)
        elif mark is not None:
            return Context.call(__self, __obj, *args, **kwargs)
        kwargs.pop("_block_vars", None)
        kwargs.pop("_loop_vars", None)
        try:
            return __obj(*args, **kwargs)
        except StopIteration:
            return __self.environment.undefined("value was undefined because a callable raised a StopIteration "
                                                "exception")


class FlatGlobalsTemplate(Template):
    def new_context(self, vars: dict[str, Any] | None = None, shared: bool = False,
                    locals: Any = None) -> Context:
        scope: Any = self.globals
        if type(scope) is ChainMap and len(scope.maps) == 2 and not scope.maps[0]:
            scope = scope.maps[1]  # the environment's globals, read only here
        return new_context(self.environment, self.name, self.blocks, vars, shared, scope, locals)


class DictFirstEnvironment(Environment):
    context_class = PlainCallContext
    template_class = FlatGlobalsTemplate

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
