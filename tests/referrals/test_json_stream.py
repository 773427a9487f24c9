"""An HSDS JSON array is decoded one service at a time (issue 14: the whole parse tree never exists at once).
The loaded directory, and every refusal, must be exactly what decoding the whole file gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from referrals.errors import DirectoryError
from referrals.loaders.common import json_array_items, read_json
from referrals.loaders.hsds import load_hsds_json, parse_hsds_data
from referrals.loaders.native import dump_native
from tests.referrals import samples


def whole_file_outcome(path: Path) -> object:
    """The loader as it was: the whole file decoded, then validated."""
    try:
        return dump_native(parse_hsds_data(read_json(path), str(path)))
    except DirectoryError as exc:
        return [str(i) for i in exc.issues]


def streamed_outcome(path: Path) -> object:
    try:
        return dump_native(load_hsds_json(path))
    except DirectoryError as exc:
        return [str(i) for i in exc.issues]


@pytest.mark.parametrize("text", [
    json.dumps(samples.hsds_services()),
    json.dumps(samples.hsds_services(), indent=2).replace("\n", "\r\n"),
    "\n \t" + json.dumps(samples.hsds_services(), separators=(",", ":")) + "\n\n",
])
def test_streamed_directory_equals_whole_file(tmp_path, text):
    path = tmp_path / "d.json"
    path.write_text(text)
    assert json_array_items(path, text) is not None  # this document is read item by item
    streamed = streamed_outcome(path)
    assert isinstance(streamed, dict) and len(streamed["services"]) == 2
    assert streamed == whole_file_outcome(path)


def test_an_object_document_is_not_streamed(tmp_path):
    text = json.dumps({"contents": samples.hsds_services()})
    path = tmp_path / "d.json"
    path.write_text(text)
    assert json_array_items(path, text) is None
    assert streamed_outcome(path) == whole_file_outcome(path)


@pytest.mark.parametrize("text", ["[]", " [ ] ", "[1 2]", "[{},]", "[", "[{}] x", "[{}][]", "\ufeff[]", "[{\"id\": }]"])
def test_edge_documents_match_the_whole_file_decoder(tmp_path, text):
    path = tmp_path / "d.json"
    path.write_text(text, encoding="utf-8")
    outcome = streamed_outcome(path)
    assert isinstance(outcome, list) and outcome  # each of these is refused...
    assert outcome == whole_file_outcome(path)  # ...with the same words, line and column


EDITS = st.sampled_from(["delete", "insert", "truncate"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data(), st.integers(min_value=0, max_value=4))
def test_mangled_documents_match_the_whole_file_decoder(tmp_path, data, indent):
    text = json.dumps(samples.hsds_services(), indent=indent or None)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        at = data.draw(st.integers(min_value=0, max_value=len(text)))
        edit = data.draw(EDITS)
        if edit == "delete":
            text = text[:at] + text[at + 1:]
        elif edit == "insert":
            text = text[:at] + data.draw(st.sampled_from(list(",:[]{}\" 1x\n"))) + text[at:]
        else:
            text = text[:at]
    path = tmp_path / "d.json"
    path.write_text(text, encoding="utf-8")
    assert streamed_outcome(path) == whole_file_outcome(path)
