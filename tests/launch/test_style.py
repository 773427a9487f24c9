"""smart_style_url: only safe values reach the stylesheet."""

from __future__ import annotations

from fhir.smart.style import cached_style, fetch_style, sanitize_style, style_css
from fhir.smart.ttl_cache import RefreshingCache
from tests.launch.fakes import FakeAdapter


def test_sanitize_keeps_colours_fonts_dims_and_drops_the_rest():
    doc = {"color_background": "#f6f7f9", "color_text": "rgb(10, 20, 30)", "font_family_body": "system-ui, sans-serif",
           "dim_border_radius": "4px", "color_error": "red;} body{display:none", "font_family_heading": "x</style>",
           "dim_font_size": "calc(100vw)", "unknown": "#fff", "color_modal_backdrop": "", "color_success": 5}
    assert sanitize_style(doc) == {"color_background": "#f6f7f9", "color_text": "rgb(10, 20, 30)",
                                   "font_family_body": "system-ui, sans-serif", "dim_border_radius": "4px"}
    assert sanitize_style(["not", "a", "dict"]) == {}


def test_css_has_custom_properties_and_base_rules():
    css = style_css({"color_background": "#fff", "font_family_body": "Arial", "color_error": "}"})
    assert "--smart-color-background: #fff;" in css and "--smart-font-family-body: Arial;" in css
    assert "body { font-family: var(--smart-font-family-body); background-color: var(--smart-color-background); }" \
        in css
    assert "color-error" not in css


def test_fetch_style_never_fails_a_launch():
    fake = FakeAdapter()
    fake.add("GET", "https://ehr/style.json", (200, {"color_text": "#111"}))
    fake.add("GET", "https://ehr/huge.json", (200, "x" * 20000))
    http = fake.session()
    assert fetch_style("https://ehr/style.json", http=http) == {"color_text": "#111"}
    assert fetch_style("https://ehr/missing.json", http=http) == {}
    assert fetch_style("https://ehr/huge.json", http=http) == {}
    assert fetch_style("file:///etc/passwd", http=http) == {} and fetch_style(None, http=http) == {}


def test_a_style_file_is_read_once_per_url_even_when_it_could_not_be_used():
    fake = FakeAdapter()
    fake.add("GET", "https://ehr/style.json", (200, {"color_text": "#111"}))
    http, cache = fake.session(), RefreshingCache(3600, max_entries=2)
    for _ in range(3):
        assert cached_style("https://ehr/style.json", cache, http=http) == {"color_text": "#111"}
        assert cached_style("https://ehr/missing.json", cache, http=http) == {}
        assert cached_style(None, cache, http=http) == {} and cached_style("", cache, http=http) == {}
    assert [c.url for c in fake.calls] == ["https://ehr/style.json", "https://ehr/missing.json"]
    cached_style("https://ehr/style.json", cache, http=http)["color_text"] = "red"  # a copy: the cache keeps its own
    assert cached_style("https://ehr/style.json", cache, http=http) == {"color_text": "#111"}
    for n in range(5):  # URLs named by token responses: the cache stays at its bound
        cached_style(f"https://ehr/other-{n}.json", cache, http=http)
    assert len(cache) == 2
