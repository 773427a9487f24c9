"""Language: the patient languages of the registry (`config/languages.yaml`). The patient's language comes from
Patient.communication (read at launch) and can be switched on the page (one switch).

Two languages at once on the screening, referral, consent and handout pages: the clinician's own text in
the deployment's language (``clinician_language``, default English), everything said, read aloud or printed
for the patient in the patient's language (``p_()``, content files, instrument text), with the clinician's
language beneath each question."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.support import NullTranslations
from flask import Flask, current_app, g, request
from flask_babel import Babel, force_locale, get_locale, get_translations
from jinja2 import pass_context, pass_eval_context
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from markupsafe import Markup, escape

from config import languages as registry
from config.current import current_settings

SUPPORTED = registry.codes()
babel = Babel()


def select_locale() -> str:
    """The page's language: the clinician's. Bilingual pages and launch pages fix it in ``g.locale``; every
    other page (the queue, the report, errors) is the deployment's clinician language. ``?lang=`` is the
    patient's language (read by the launch pages), never the page's."""
    chosen = g.get("locale")
    return babel_locale(chosen if chosen in SUPPORTED else clinician_locale())


def babel_locale(code: str) -> str:
    """Babel's name for a registered language (its catalogue's folder): ``zh_Hant`` for ``zh-Hant``."""
    return code.replace("-", "_")


def patient_locale(context: dict[str, Any]) -> str:
    """The patient's language from Patient.communication (read at launch) when we have it; else English."""
    patient = context.get("patient") or {}
    for lang in [patient.get("language"), *(patient.get("languages") or [])]:
        found = registry.match(lang)
        if found:
            return found
    return "en"


def clinician_locale() -> str:
    """The deployment's language for the clinician's own text (``clinician_language``; default English)."""
    lang = current_settings().clinician_language
    return lang if lang in registry.clinician_codes() else "en"


def _babel_context() -> Any:
    """Flask-Babel's per-request namespace (``g._flask_babel``), or None outside an app context."""
    try:
        return g._flask_babel
    except AttributeError:
        g._flask_babel = SimpleNamespace()
        return g._flask_babel
    except RuntimeError:  # no application context: Flask-Babel translates nothing there either
        return None


def current_translations() -> NullTranslations:
    """The catalog Flask-Babel would use now, looked up once per request and locale.

    Flask-Babel resolves the domain, the request's locale and ``str(locale)`` on every ``gettext`` (about 9 us
    each; the referral page makes 140 calls). The answer changes only when the request's locale does
    (``force_locale`` puts another Locale object in place), so it is kept beside that Locale object.
    Catalogs are static files: nothing patient-specific is cached, and only for this request."""
    ctx = _babel_context()
    if ctx is None:
        return get_translations()
    locale = getattr(ctx, "babel_locale", None) or get_locale()
    memo = getattr(ctx, "ipv_catalog", None)
    if memo is not None and memo[0] is locale:
        return memo[1]
    catalog = get_translations()
    ctx.ipv_catalog = (locale, catalog)
    return catalog


def locale_tag() -> str:
    """``str(get_locale())``, worked out once per request and locale (kept beside the Locale object, as the
    catalog is): Flask-Babel's lookup goes through ``g``'s proxy three times and Babel builds the string anew."""
    ctx = _babel_context()
    if ctx is None:
        return str(get_locale())
    locale = getattr(ctx, "babel_locale", None) or get_locale()
    memo = getattr(ctx, "ipv_locale_tag", None)
    if memo is not None and memo[0] is locale:
        return memo[1]
    tag = str(locale)
    ctx.ipv_locale_tag = (locale, tag)
    return tag


def page_lang() -> str:
    """<html lang>: the page's language (the clinician's), as a BCP 47 tag."""
    tag = locale_tag() if _babel_context() is not None else str(get_locale() or "en")
    return tag.replace("_", "-")


def gettext(message: str, **params: Any) -> str:
    """``flask_babel.gettext`` with the catalog lookup done once per request (same result)."""
    s = current_translations().ugettext(message)
    return s % params if params else s


def label_for(table: dict[str, Callable[[], str]], code: str) -> str:
    """The translated words for ``code`` from a table of lazy translations, else the code itself: only the
    label shown is translated (building every label of a table first cost ~70 gettext calls a page)."""
    words = table.get(code)
    return words() if words else code


def _catalog_for(lang: str) -> NullTranslations:
    """The catalog for ``lang``: looked up under ``force_locale`` once per app and language (switching the locale
    parses it again, on every request that read a line aloud), then kept beside the app as Flask-Babel keeps its
    own. Catalogs are static files: the key is the language only."""
    try:
        catalogs: dict[str, NullTranslations] = current_app.extensions.setdefault("ipv_catalogs", {})
    except RuntimeError:  # no application context: Flask-Babel translates nothing there either
        return get_translations()
    catalog = catalogs.get(lang)
    if catalog is None:
        with force_locale(babel_locale(lang)):
            catalog = catalogs[lang] = get_translations()
    return catalog


def patient_gettext(message: str, **params: Any) -> str:
    """``p_()``: a patient-facing string (read aloud, printed, said) in the patient's language, whatever the
    page's language. Extracted like ``_()`` (``pybabel extract -k p_``)."""
    lang = g.get("patient_locale") or g.get("locale") or "en"
    s = _catalog_for(lang).ugettext(message)
    return s % params if params else s


@dataclass(frozen=True)
class ReadAloud:
    """A line the clinician says to the patient: ``text`` in the patient's language (``lang``), and beneath it,
    when the languages differ, the same line in the clinician's (``clinician`` in ``clinician_lang``) so the
    clinician knows what they are reading. Templates render it with ``_said.html``."""

    text: str
    lang: str
    clinician: str | None
    clinician_lang: str

    def as_data(self) -> dict[str, Any]:
        # What ``asdict`` gives while every field is a string or None, without its recursive copy.
        return dict(vars(self))


def read_aloud(message: str, **params: Any) -> ReadAloud:
    """``message`` as a read-aloud line: the patient's language (``p_``) with the clinician's beneath."""
    clang = g.get("locale") or "en"
    plang = g.get("patient_locale") or clang  # the language ``p_`` says it in
    said = _catalog_for(plang).ugettext(message)
    said = said % params if params else said
    echo = None
    if plang != clang:  # the clinician's words beneath only where the languages differ
        echo = _catalog_for(clang).ugettext(message)
        echo = echo % params if params else echo
    return ReadAloud(text=said, lang=plang, clinician=echo, clinician_lang=clang)


def language_name(code: str, in_lang: str | None = None) -> str:
    """``code``'s name in ``in_lang`` (default: the page's language, the clinician's): "Arabic", "árabe"."""
    try:
        name = Locale.parse(babel_locale(code)).get_display_name(babel_locale(in_lang or g.get("locale") or "en"))
    except (UnknownLocaleError, ValueError):
        return code
    return name or code


def _review_words(review: str) -> str:
    if review.startswith("reviewed by "):
        return gettext("Review: reviewed by %(role)s.", role=review.removeprefix("reviewed by "))
    return gettext("Review: machine-drafted.")


def translation_note(lang: str, review: str | None = None) -> str | None:
    """The honest line, in the clinician's language, for text read to the patient in ``lang`` that is not a
    validated version (None for English and for a validated text). ``review``: the text's own review status (an
    instrument's), else the language's catalogue's (the registry's)."""
    entry = registry.language(lang)
    if entry is None or entry.source:
        return None
    review = review or entry.review
    if review.startswith("validated:"):
        return None
    name = language_name(lang)
    if entry.reads == "clinician":
        line = gettext("%(language)s text: our translation for reading aloud, not a validated version.", language=name)
    else:
        line = gettext("%(language)s text: translation for reading aloud with an interpreter; not a validated "
                       "version.", language=name)
    return f"{line} {_review_words(review)}"


def instrument_note(status: dict[str, str] | None, lang: str) -> str | None:
    """The line under an instrument read in ``lang``: its translation's honest line (``status``: the
    Questionnaire's translation-status for ``lang``), or, when it has no version in ``lang``, the interpreter's
    path: the English text is shown to interpret from."""
    if registry.language(lang) is None or lang == registry.SOURCE:
        return None
    if status is None:
        return gettext("No %(language)s version of this questionnaire: use an interpreter, who interprets from the "
                       "English text shown.", language=language_name(lang))
    return translation_note(lang, status.get("review"))


# Regions where a Chinese speaker most often speaks Cantonese, though the tag says only "Chinese".
CANTONESE_REGIONS = ("HK", "MO")


def spoken_note(lang: str, ehr_tag: str | None) -> str | None:
    """What the interpreter needs beyond the text, in the clinician's language. ``ehr_tag``: the patient's language
    as the EHR gave it (fhir/context.py), ``lang``: the language of the text on the page.

    - a language the app has no text in (the page is in English): use an interpreter, from the English shown;
    - a spoken language written as another (Cantonese, read in Traditional Chinese): the interpreter says the
      written text in the spoken language;
    - Chinese from Hong Kong or Macau: ask which Chinese the patient speaks. None otherwise."""
    parts = (ehr_tag or "").replace("_", "-").split("-")
    spoken = parts[0].lower()
    if not spoken or spoken == registry.SOURCE:
        return None
    found = registry.match(ehr_tag)
    if found is None and lang == registry.SOURCE:
        return gettext("The patient's language (%(language)s) has no text in this app: use an interpreter, who "
                       "interprets from the English text shown.", language=language_name(spoken))
    if found != lang:
        return None  # the clinician chose another language for the text: nothing to add about the EHR's
    if spoken != lang.split("-")[0]:
        return gettext("The patient speaks %(spoken)s: the interpreter reads the %(written)s text and says it in "
                       "%(spoken)s.", spoken=language_name(spoken), written=language_name(lang))
    if spoken == "zh" and any(p.upper() in CANTONESE_REGIONS for p in parts[1:]):
        return gettext("Chinese from Hong Kong or Macau: ask whether the patient speaks Cantonese or Mandarin; the "
                       "interpreter says the written text in that language.")
    return None


def _as_template_text(rv: str, autoescape: bool, params: dict[str, Any]) -> str:
    """A translation as Jinja's newstyle gettext returns it: escaped, always %-formatted."""
    if autoescape:
        rv = Markup(rv)
    if not params and "%" not in rv:
        return rv  # what ``rv % {}`` gives, without formatting
    return rv % params


@pass_context
def template_gettext(context: Context, message: str, **params: Any) -> str:
    """A template's ``_()`` as Jinja's newstyle gettext computes it."""
    return _as_template_text(current_translations().ugettext(message), context.eval_ctx.autoescape, params)


def _bound_gettext() -> dict[str, Any]:
    """Context processor: each ``render_template`` call's ``_()`` bound to the request's catalog.

    The catalog is looked up once per render instead of once per string (``current_translations`` reaches
    ``g`` through its proxy on every call: about half of a template ``_()``'s cost, and pages make 30 to 60).
    Same result as ``template_gettext``: nothing in a render changes the page's locale (``p_()`` forces the
    patient's only inside its own lookup). Templates rendered without Flask's context processors keep the
    global ``template_gettext``."""
    lookup = current_translations().ugettext

    @pass_eval_context
    def bound(eval_ctx: EvalContext, message: str, **params: Any) -> str:
        return _as_template_text(lookup(message), eval_ctx.autoescape, params)

    return {"_": bound, "gettext": bound}


# Stands for the launch id in a cached language switch: the id is the only per-launch part of its links.
LID_STANDIN = "__lid__"
LANG_NAV_ENTRIES = 512  # pages x patient languages x instruments x clinician languages, with room


def lang_nav(endpoint: str, lid: str, extra: dict[str, str], current: str) -> Markup:
    """The patient-language switch's links for ``endpoint`` (``extra``: its other URL values, an instrument key),
    ``current`` shown as chosen: rendered once per app, page, languages and instrument (nine languages made it
    a page's largest block of ``url_for`` calls), then the launch's id put in. Holds no patient data."""
    cache: dict[tuple[Any, ...], str] = current_app.extensions.setdefault("ipv_lang_nav", {})
    key = (endpoint, tuple(sorted(extra.items())), current, locale_tag(), request.script_root)
    html = cache.get(key)
    if html is None:
        html = current_app.jinja_env.get_template("screening/_lang_nav.html").render(
            ep=endpoint, lid=LID_STANDIN, extra=extra, current=current)
        if len(cache) >= LANG_NAV_ENTRIES:
            cache.clear()
        cache[key] = html
    return Markup(html.replace(LID_STANDIN, str(escape(lid))))


FRAGMENT_ENTRIES = 512


def fragment(name: str, *parts: Any, caller: Callable[[], str]) -> Markup:
    """``{% call fragment("name", part, ...) %}...{% endcall %}``: the block's HTML, rendered once per app, name,
    ``parts``, clinician and patient language, then reused. For blocks whose words depend only on those: a block
    that reads the launch (its id, a CSRF token, anything of the patient's) stays outside, and ``parts`` name only
    what is the same for every patient (a flag of the page, directory facts). Holds no patient data."""
    cache: dict[tuple[Any, ...], str] = current_app.extensions.setdefault("ipv_fragments", {})
    parts = tuple(tuple(part) if isinstance(part, list) else part for part in parts)  # a list of facts: its items
    key = (name, parts, locale_tag(), g.get("patient_locale"), request.script_root)
    html = cache.get(key)
    if html is None:
        html = str(caller())
        if len(cache) >= FRAGMENT_ENTRIES:
            cache.clear()
        cache[key] = html
    return Markup(html)


# Stands for a choice's attribute (checked, selected) in a rendered-once block: the choice is the patient's answer,
# so it is marked in on each request (``choose``), never kept in the block.
_CHOICE = "\x1fchoice:{}\x1f"
_CHOICE_MARK = re.compile("\x1fchoice:([^\x1f]*)\x1f")


def choice_mark(value: str) -> Markup:
    """Where ``value``'s option or radio button takes the attribute ``choose`` gives the chosen one."""
    return Markup(_CHOICE.format(escape(value)))


def choose(html: str, chosen: str | None, attribute: str) -> Markup:
    """``{% filter choose(chosen, "checked") %}``: ``attribute`` where ``choice_mark(chosen)`` stands, nothing at
    the other marks (what ``{% if x == chosen %}checked{% endif %}`` gives)."""
    html = str(html)
    if chosen is not None:
        html = html.replace(_CHOICE.format(escape(chosen)), attribute)
    return Markup(_CHOICE_MARK.sub("", html))


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", "translations")
    babel.init_app(app, locale_selector=select_locale)
    # Templates' _() through the per-request catalog (Flask-Babel installs its own lookup per call).
    app.jinja_env.install_gettext_callables(
        gettext=lambda s: current_translations().ugettext(s),
        ngettext=lambda s, p, n: current_translations().ungettext(s, p, n),
        pgettext=lambda c, s: current_translations().upgettext(c, s),
        npgettext=lambda c, s, p, n: current_translations().unpgettext(c, s, p, n),
        newstyle=True,
    )
    # ``_()`` itself skips Jinja's alias layers (two more Context.call per string); same result as newstyle.
    app.jinja_env.globals["_"] = app.jinja_env.globals["gettext"] = template_gettext
    app.jinja_env.globals["p_"] = patient_gettext
    app.jinja_env.globals["page_lang"] = page_lang
    app.jinja_env.globals["lang_dir"] = registry.direction
    app.jinja_env.globals["patient_languages"] = registry.languages
    app.jinja_env.globals["language_name"] = language_name
    app.jinja_env.globals["translation_note"] = translation_note
    app.jinja_env.globals["spoken_note"] = spoken_note
    app.jinja_env.globals["lang_nav"] = lang_nav
    app.jinja_env.globals["fragment"] = fragment
    app.jinja_env.globals["choice_mark"] = choice_mark
    app.jinja_env.filters["choose"] = choose
    app.context_processor(_bound_gettext)
