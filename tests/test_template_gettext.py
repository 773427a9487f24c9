"""Templates' ``_()`` is bound to the request's catalog once per render: each render in its own language,
the same text, escaping and %-formatting as the per-call lookup (``template_gettext``)."""

from __future__ import annotations

from flask import render_template_string
from flask_babel import force_locale

from smart_app.ops.i18n import template_gettext

PAGE = '{{ _("Screening result") }}|{{ _("Call %(program)s now", program=name) }}|{{ _("100%% sure") }}'


def test_each_render_uses_the_catalog_of_its_moment(app):
    with app.test_request_context("/"):
        with force_locale("es"):
            spanish = render_template_string(PAGE, name="<b>A&B</b>")
        english = render_template_string(PAGE, name="<b>A&B</b>")
    assert spanish.startswith("Resultado de la detección|") and "&lt;b&gt;A&amp;B&lt;/b&gt;" in spanish
    assert english == "Screening result|Call &lt;b&gt;A&amp;B&lt;/b&gt; now|100% sure"


def test_bound_and_per_call_lookups_agree(app):
    with app.test_request_context("/"):
        for lang in ("en", "es", "pt"):
            with force_locale(lang):
                bound = render_template_string(PAGE, name="<i>x</i>")
                app.jinja_env.globals["_"] = template_gettext  # what a render without context processors uses
                unbound = app.jinja_env.from_string(PAGE).render(name="<i>x</i>")
            assert bound == unbound
