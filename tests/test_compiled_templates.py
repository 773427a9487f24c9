"""Page templates compiled ahead (smart_app/ops/templating.py, `flask compile-templates`): a start loads
their code from the folder instead of compiling it; a template changed since is compiled again and its new text
renders; a missing folder is a start that compiles; the code is the same whatever the language it was compiled in."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from flask_babel import force_locale
from jinja2 import ChoiceLoader, FileSystemLoader, pass_context

from config import languages
from smart_app import create_app
from smart_app.launch import ehr
from smart_app.ops import templating, warmup
from tests.conftest import app_config, default_context
from tests.support.templates import counting_compiles

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_ehr(monkeypatch):
    monkeypatch.setattr(ehr, "prefetch_issuers", lambda: [])  # no allow-listed EHR is up in these tests


def _app_reading(tmp_path: Path, folder: Path, **extra):
    return create_app(app_config(f"sqlite:///{tmp_path / 'app.db'}", TEMPLATE_CACHE_DIR=str(folder), **extra))


def test_a_start_loads_every_page_template_from_the_folder_the_build_filled(tmp_path, no_ehr, monkeypatch, caplog):
    """The build's command (as the Containerfile runs it), then a start: no page template compiled, all loaded, and
    the warm-up's log line says so (tests/ops/test_image_filesystem.py reads it from the image's app)."""
    folder = tmp_path / "compiled"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    flask = Path(sys.executable).parent / "flask"
    command = [str(flask), "--app", "smart_app:create_build_app", "compile-templates", "--into", str(folder)]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    entries = sorted(folder.iterdir())
    assert entries and all(p.stat().st_mode & 0o777 == 0o644 for p in entries)  # the app's user reads root's files
    assert folder.stat().st_mode & 0o777 == 0o755

    app = _app_reading(tmp_path, folder)
    compiled = counting_compiles(app, monkeypatch)
    with app.app_context(), caplog.at_level(logging.INFO, logger="ipv.warmup"):
        warmup.warm_up(app)
    names = templating.page_templates(app.jinja_env)
    assert f"{len(names)} templates, {len(names)} of them loaded compiled ahead" in caplog.text
    assert compiled == [] and app.jinja_env.bytecode_cache.loaded == len(names) == len(entries)
    assert sorted(folder.iterdir()) == entries  # nothing written: every entry was there for its very source
    app.extensions["db_engine"].dispose()


def test_a_template_changed_after_the_folder_was_filled_renders_its_new_text(app, tmp_path, monkeypatch):
    """Jinja keeps each entry's source checksum: the stale entry is compiled again, never served."""
    pages = tmp_path / "pages"
    pages.mkdir()
    page = pages / "changed.html"
    page.write_text("<p>{{ _('Continue') }}: the old text</p>")
    app.jinja_env.loader = ChoiceLoader([FileSystemLoader(str(pages)), app.jinja_env.loader])
    folder = tmp_path / "compiled"
    templating.compile_into(app.jinja_env, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    page.write_text("<p>{{ _('Continue') }}: the new text</p>")  # after the build: a patched file, a bad copy
    app.jinja_env.cache.clear()  # a new process
    app.jinja_env.bytecode_cache = templating.CompiledTemplates(folder, app.jinja_env, may_write=False)
    compiled = counting_compiles(app, monkeypatch)
    with app.test_request_context():
        html = app.jinja_env.get_template("changed.html").render()
        other = app.jinja_env.get_template("screening/gate.html")
    assert html == "<p>Continue: the new text</p>"
    assert compiled == ["changed.html"] and other is not None  # the unchanged page came from the folder
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # read only: nothing rewritten


def test_the_demo_and_the_tests_keep_what_they_compiled_for_the_next_start(tmp_path, no_ehr, monkeypatch):
    folder = tmp_path / "missing" / "compiled"
    app = _app_reading(tmp_path, folder)
    assert app.jinja_env.bytecode_cache.may_write
    with app.app_context():
        warmup.warm_up(app)
    assert len(list(folder.iterdir())) == len(templating.page_templates(app.jinja_env))
    app.extensions["db_engine"].dispose()


def test_production_starts_without_the_folder_and_compiles_each_template(tmp_path, no_ehr, monkeypatch, caplog):
    monkeypatch.setattr(templating, "run_mode", lambda settings, testing=False: "production")
    folder = tmp_path / "never-built"
    with caplog.at_level(logging.INFO, logger="ipv.templates"):
        app = _app_reading(tmp_path, folder, WARM_UP=True)
    assert app.jinja_env.bytecode_cache is None and not folder.exists()
    assert f"no compiled page templates in {folder}" in caplog.text
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    app.extensions["db_engine"].dispose()


def test_production_never_loads_code_from_a_folder_it_may_write(tmp_path, no_ehr, monkeypatch, caplog):
    """A folder this process made (pytest's tmp_path) is one it may write: its entries could be anyone's code.
    tests/ops/test_kit_permissions.py runs a start as the image's user, where root's folder is used."""
    folder = tmp_path / "compiled"
    builder = create_app(app_config(f"sqlite:///{tmp_path / 'b.db'}"))
    templating.compile_into(builder.jinja_env, folder)
    builder.extensions["db_engine"].dispose()
    monkeypatch.setattr(templating, "run_mode", lambda settings, testing=False: "production")
    with caplog.at_level(logging.WARNING, logger="ipv.templates"):
        app = _app_reading(tmp_path, folder)
    assert app.jinja_env.bytecode_cache is None
    assert f"compiled page templates in {folder} not used: this process may write there" in caplog.text
    app.extensions["db_engine"].dispose()


def test_an_environment_made_otherwise_compiles_again(app, tmp_path, monkeypatch):
    """An entry is keyed by what decides its code: a filter now passed the context needs other code."""
    folder = tmp_path / "compiled"
    templating.compile_into(app.jinja_env, folder)
    app.jinja_env.filters["tel"] = pass_context(lambda context, value: value)
    app.jinja_env.cache.clear()
    app.jinja_env.bytecode_cache = templating.CompiledTemplates(folder, app.jinja_env, may_write=False)
    compiled = counting_compiles(app, monkeypatch)
    app.jinja_env.get_template("screening/gate.html")
    assert compiled == ["screening/gate.html"]


def test_compiled_code_is_the_same_in_every_language(app):
    """The build compiles outside any request, in no language: the code must not depend on one (translations are
    looked up when the page renders, never folded into the code)."""
    env = app.jinja_env
    names = templating.page_templates(env)
    sources = {name: env.loader.get_source(env, name) for name in names}

    def code_in(lang: str | None) -> dict[str, str]:
        with app.test_request_context():
            if lang is None:
                return {n: env.compile(src, n, fn, raw=True) for n, (src, fn, _) in sources.items()}
            with force_locale(lang.replace("-", "_")):
                return {n: env.compile(src, n, fn, raw=True) for n, (src, fn, _) in sources.items()}

    outside = code_in(None)
    for lang in languages.codes():
        assert code_in(lang) == outside, lang


def test_pages_in_each_language_render_from_code_compiled_in_none(tmp_path, client, make_launch, no_ehr, app,
                                                                   monkeypatch):
    folder = tmp_path / "compiled"
    templating.compile_into(app.jinja_env, folder)
    app.jinja_env.cache.clear()
    app.jinja_env.bytecode_cache = templating.CompiledTemplates(folder, app.jinja_env, may_write=False)
    compiled = counting_compiles(app, monkeypatch)
    for lang, words in (("en", "Safety planning ideas"), ("es", "seguridad"), ("pt", "segurança")):
        lid = make_launch(client, context=default_context(patient={**default_context()["patient"], "language": lang}))
        html = client.get(f"/l/{lid}/referrals").get_data(as_text=True)
        assert 'data-testid="safety-ideas"' in html and words in html, lang
    assert compiled == []
