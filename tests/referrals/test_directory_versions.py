"""Directory imports kept in the database (smart_app/store/directory.py): `flask directory import` stores a checked
file as the next version, a process loads the newest version of each name on its next look, and a version that
fails to load leaves the directory the process serves in place."""

from __future__ import annotations

from referrals.store import store_for
from smart_app.store.db import session_scope
from smart_app.store.directory import load_imports
from smart_app.store.models import DirectoryImport
from tests.referrals import samples


def test_an_import_is_stored_as_a_version_and_loaded_on_the_next_look(app, tmp_path):
    store = store_for(app)
    before = len(store.index.directory.services)
    source = samples.write_hsds_json(tmp_path / "county.json", samples.hsds_services())
    result = app.test_cli_runner().invoke(args=["directory", "import", str(source)])
    assert result.exit_code == 0, result.output
    assert "directory version 1" in result.output and store.version == 0  # stored, not yet loaded here
    assert load_imports(app) and store.version == 1
    assert len(store.index.directory.services) == before + len(samples.hsds_services())
    assert not load_imports(app)  # nothing newer

    again = app.test_cli_runner().invoke(args=["directory", "import", str(source), "--name", "county"])
    assert again.exit_code == 0 and "directory version 2" in again.output
    assert load_imports(app) and store.version == 2
    assert len(store.index.directory.services) == before + len(samples.hsds_services())  # same name: replaced


def test_a_refused_file_stores_nothing_and_a_broken_version_keeps_the_directory(app, tmp_path, caplog):
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: ipv-directory/1\nservices:\n  - id: x\n    program: X\n    name: X\n"
                   "    phones: [{number: 'call me'}]\n")
    result = app.test_cli_runner().invoke(args=["directory", "import", str(bad)])
    assert result.exit_code == 1 and "REFUSED" in result.output
    with session_scope(app) as db:
        assert db.query(DirectoryImport).count() == 0
        db.add(DirectoryImport(name="broken", body="services: [", services=1))
    store = store_for(app)
    served = store.index
    assert not load_imports(app)
    assert store.index is served and store.version == 0
    assert "directory version 1 not loaded" in caplog.text
    assert not load_imports(app)  # the broken version is not tried again at every look
