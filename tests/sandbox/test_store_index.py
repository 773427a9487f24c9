"""The sandbox store's search index (identifier, patient): same answers as a full scan, kept on update and delete,
rebuilt for a store written before it existed."""

from __future__ import annotations

import sqlite3

from sandbox_ehr.store import Store


def note(patient: str, value: str, system: str = "urn:ipv-screen:writeback") -> dict:
    return {"resourceType": "DocumentReference", "status": "current",
            "identifier": [{"system": system, "value": value}], "subject": {"reference": f"Patient/{patient}"},
            "content": [{"attachment": {"contentType": "text/plain", "data": "aGk="}}]}


def ids(result) -> set[str]:
    return {r["id"] for r in result}


def test_indexed_searches_equal_the_scan(tmp_path):
    store = Store(str(tmp_path / "s.db"))
    made = [store.create(note(f"p{i % 3}", f"ref-{i}")) for i in range(30)]
    one = store.search("DocumentReference", {"identifier": ["urn:ipv-screen:writeback|ref-7"]})
    assert ids(one) == {made[7]["id"]}
    assert ids(store.search("DocumentReference", {"identifier": ["ref-7"]})) == {made[7]["id"]}
    assert store.search("DocumentReference", {"identifier": ["urn:other|ref-7"]}) == []
    assert len(store.search("DocumentReference", {"identifier": ["urn:ipv-screen:writeback|"]})) == 30
    by_patient = store.search("DocumentReference", {"patient": ["Patient/p1"]})
    assert ids(by_patient) == {m["id"] for i, m in enumerate(made) if i % 3 == 1}
    both = store.search("DocumentReference", {"patient": ["p1"], "identifier": ["urn:ipv-screen:writeback|ref-7"]})
    assert ids(both) == {made[7]["id"]}
    either = store.search("DocumentReference", {"identifier": ["urn:ipv-screen:writeback|ref-1,ref-2"]})
    assert ids(either) == {made[1]["id"], made[2]["id"]}
    # Update moves the keys; delete removes them.
    store.update({**made[7], "identifier": [{"system": "urn:ipv-screen:writeback", "value": "ref-77"}]})
    assert store.search("DocumentReference", {"identifier": ["urn:ipv-screen:writeback|ref-7"]}) == []
    assert len(store.search("DocumentReference", {"identifier": ["urn:ipv-screen:writeback|ref-77"]})) == 1
    store.delete("DocumentReference", made[7]["id"])
    assert store.search("DocumentReference", {"identifier": ["urn:ipv-screen:writeback|ref-77"]}) == []
    store.close()


def test_an_old_store_is_indexed_when_opened(tmp_path):
    path = str(tmp_path / "old.db")
    store = Store(path)
    made = store.create(note("p1", "ref-old"))
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM fhir_search_key")
    conn.commit()
    conn.close()
    again = Store(path)
    assert ids(again.search("DocumentReference", {"identifier": ["urn:ipv-screen:writeback|ref-old"]})) == {made["id"]}
    again.close()
