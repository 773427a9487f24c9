"""The queue's filter, sort, page and row links are built from one ``url_for`` of the page (a query string or the
referral's id added to it): they must be the URLs ``url_for`` itself makes, whatever the values hold."""

from __future__ import annotations

import pytest
from flask import url_for

from smart_app.worklist.views import query_url, row_url

pytestmark = pytest.mark.worklist

AWKWARD = ["plain", "two words", "a&b=c", "x+y", "50%", "slash/and?query", "hash#tag", "quote'\"", "é ü 中",
           "!$'()*,/:;?@", "~-._", "<script>", "tab\tand\nline", "[brackets]{braces}|^`\\"]


@pytest.mark.parametrize("base_url", ["http://localhost/", "http://localhost/behind/a proxy/"])
def test_query_links_are_what_url_for_makes(app, base_url):
    with app.test_request_context("/", base_url=base_url):
        base = url_for("worklist.index", lid="L1")
        cases = [{}, {"status": ""}, {"status": None, "page": ""}, {"page": 2}, {"program": "x", "page": 0}]
        cases += [{"program": value, "sort": "program", "page": ""} for value in AWKWARD]
        cases += [{value: "v", "urgency": value} for value in AWKWARD]
        for values in cases:
            expected = url_for("worklist.index", lid="L1",
                               **{k: v for k, v in values.items() if v not in (None, "")})
            assert query_url(base, values) == expected, values


@pytest.mark.parametrize("base_url", ["http://localhost/", "http://localhost/behind/a proxy/"])
def test_row_links_are_what_url_for_makes(app, base_url):
    with app.test_request_context("/", base_url=base_url):
        base = url_for("worklist.index", lid="L1")
        for rid in ["3f2a9c", "a b", "50%", "a&b=c+d", "é", "x?y#z", "<>\"", "~-._", 12345]:
            assert row_url(base, rid) == url_for("worklist.history", lid="L1", rid=rid), rid
