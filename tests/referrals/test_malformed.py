"""Hypothesis: any malformed HSDS, FHIR or native input gives a DirectoryError (never another exception)
and a failed reload never leaves a half-loaded directory."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from referrals.errors import DirectoryError
from referrals.loaders.fhir_bundle import parse_bundle
from referrals.loaders.hsds import parse_hsds_data
from referrals.loaders.native import parse_native
from referrals.model import Directory
from referrals.store import DEFAULT_DIRECTORY, DirectoryStore
from tests.referrals import samples

junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


def paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += paths(v, (*prefix, i))
    return out


def mutate(base: Any, data: st.DataObject, n: int) -> Any:
    doc = copy.deepcopy(base)
    for _ in range(n):
        ps = [p for p in paths(doc) if p]
        if not ps:
            return data.draw(junk)
        p = data.draw(st.sampled_from(ps))
        parent = doc
        for key in p[:-1]:
            parent = parent[key]
        action = data.draw(st.sampled_from(["replace", "delete"]))
        if action == "delete":
            del parent[p[-1]]
        else:
            parent[p[-1]] = data.draw(junk)
    return doc


def check(result_or_error) -> None:
    """Either a whole, consistent Directory or DirectoryError; the caller lets anything else fail the test."""
    if isinstance(result_or_error, Directory):
        for s in result_or_error.services:
            assert s.id and s.phones


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NATIVE = yaml.safe_load(DEFAULT_DIRECTORY.read_text())


@SETTINGS
@given(st.data(), st.integers(min_value=1, max_value=4))
def test_mutated_hsds_json(data, n):
    doc = mutate(samples.hsds_services(), data, n)
    try:
        check(parse_hsds_data(doc, "fuzz.json"))
    except DirectoryError as exc:
        assert exc.issues and all(i.file == "fuzz.json" for i in exc.issues)


@SETTINGS
@given(st.data(), st.integers(min_value=1, max_value=4))
def test_mutated_native(data, n):
    doc = mutate(NATIVE, data, n)
    try:
        if not isinstance(doc, dict):
            return  # read_mapping refuses non-mappings before parse_native (tested below)
        check(parse_native(doc, "fuzz.yaml"))
    except DirectoryError as exc:
        assert exc.issues


@SETTINGS
@given(st.data(), st.integers(min_value=1, max_value=4))
def test_mutated_fhir(data, n):
    doc = mutate(samples.fhir_bundle(), data, n)
    try:
        check(parse_bundle(doc, "fuzz.json"))
    except DirectoryError as exc:
        assert exc.issues


def test_a_telecom_system_of_the_wrong_json_type_is_an_issue_not_a_crash():
    # Found by the mutation above: a list where the telecom system's string belongs.
    doc = samples.fhir_bundle()
    service = next(e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "HealthcareService")
    service["telecom"] = [{"system": ["phone"], "value": "617-555-0100"}]
    with pytest.raises(DirectoryError) as exc:
        check(parse_bundle(doc, "fuzz.json"))
    assert any("telecom" in str(i) for i in exc.value.issues)


@settings(max_examples=60, deadline=None)
@given(junk)
def test_arbitrary_json_hsds(doc):
    try:
        check(parse_hsds_data(doc, "x.json"))
    except DirectoryError:
        pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_arbitrary_text_files_never_crash_and_never_half_load(tmp_path_factory, text):
    folder: Path = tmp_path_factory.mktemp("fuzz")
    good = samples.write_hsds_json(folder / "good.json")
    store = DirectoryStore([good])
    before = store.index
    for name in ("x.yaml", "x.json"):
        bad = folder / name
        bad.write_text(text)
        try:
            store.reload([good, bad])
        except DirectoryError:
            assert store.index is before and store.paths == [good]
        else:
            store.reload([good])
            before = store.index


def test_mutation_helper_really_breaks_things():
    """Guard against a fuzzer that only ever produces valid files."""
    doc = samples.hsds_services()
    doc[0]["phones"] = "x"
    doc[1]["phones"] = []
    try:
        parse_hsds_data(json.loads(json.dumps(doc)), "f.json")
    except DirectoryError as exc:
        assert any("phones" in str(i) for i in exc.issues)
    else:
        raise AssertionError("expected DirectoryError")


cell = st.none() | st.text(max_size=10) | st.sampled_from(["", "-1", "999", "24:61", "MO-XX", "svc-chelsea-counsel",
                                                            "loc-cfc", "org-cfc", "voice", "pager", "1e309"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_csv_datapackage(tmp_path_factory, data):
    from referrals.loaders.hsds import load_hsds_datapackage  # not load_source: no catch-all in the way

    tables = {k: [dict(r) for r in v] for k, v in samples.TABLES.items()}
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        table = data.draw(st.sampled_from(sorted(tables)))
        if not tables[table]:
            continue
        row = tables[table][0]
        if not row:  # an earlier draw may have deleted every column of this row
            continue
        col = data.draw(st.sampled_from(sorted(row)))
        value = data.draw(cell)
        if value is None:
            del row[col]
        else:
            row[col] = value
    pkg = samples.write_datapackage(tmp_path_factory.mktemp("pkg"), tables)
    try:
        check(load_hsds_datapackage(pkg))
    except DirectoryError as exc:
        assert all(i.file == str(pkg) for i in exc.issues)
