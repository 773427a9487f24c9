"""Languages: every catalogue compiles cleanly (``msgfmt -c``), and every page follows one language rule in every
language pair (the clinician's controls in the clinician's language, the patient's words in the patient's)."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import time as datetime_time
from pathlib import Path

import pytest

from config.languages import clinician_codes, direction, language, translated_codes

pytestmark = pytest.mark.i18n

ROOT = Path(__file__).resolve().parents[1]
TRANSLATIONS = ROOT / "smart_app" / "translations"
CATALOGS = sorted(TRANSLATIONS.glob("*/LC_MESSAGES/messages.po"))
MSGID = re.compile(r'^(?:#~ )?msgid "(.*)"$')
CONT = re.compile(r'^(?:#~ )?"(.*)"$')


def test_there_are_catalogues():
    """One catalogue per language of the registry (config/languages.yaml), and none that is not registered."""
    assert {p.parts[-3] for p in CATALOGS} == {language(c).locale for c in translated_codes()}


def _msgids(po: Path) -> list[str]:
    """Every msgid in the file, obsolete (``#~``) ones included: what msgfmt counts as a definition."""
    ids: list[str] = []
    current: list[str] | None = None
    for line in po.read_text(encoding="utf-8").splitlines():
        m = MSGID.match(line)
        if m:
            current = [m.group(1)]
            ids.append("")
            continue
        c = CONT.match(line)
        if current is not None and c:
            current.append(c.group(1))
            ids[-1] = "".join(current)
            continue
        if current is not None:
            ids[-1] = "".join(current)
            current = None
    return [i for i in ids if i]


@pytest.mark.parametrize("po", CATALOGS, ids=lambda p: p.parts[-3])
def test_no_message_is_defined_twice(po):
    ids = _msgids(po)
    assert sorted({i for i in ids if ids.count(i) > 1}) == []


@pytest.mark.parametrize("po", CATALOGS, ids=lambda p: p.parts[-3])
def test_msgfmt_accepts_the_catalogue(po, tmp_path):
    msgfmt = shutil.which("msgfmt")
    if msgfmt is None:
        pytest.skip("GNU gettext's msgfmt is not installed")
    run = subprocess.run([msgfmt, "-c", "-o", str(tmp_path / "out.mo"), str(po)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


# -- one language rule on every page ----------------------------------------------------------------------------
# The clinician's controls (buttons, headings, labels, alerts, table heads) in the clinician's language; what is
# said to or printed for the patient marked data-audience="patient" (or class read-aloud, or a <q>) in the
# patient's language, and a read-aloud line has the clinician's language beneath it. Checked on the markup, page
# by page, for every language pair a deployment can have.
# The English clinician with every patient language of the registry, and a Portuguese clinician with a Spanish
# patient (a deployment's clinician language that is not English).
PAIRS = [*(("en", p) for p in translated_codes()), ("pt", "es")]
CONTROLS = {"button", "legend", "label", "h1", "h2", "h3", "th", "summary", "caption"}
VOID = {"br", "input", "img", "meta", "link", "hr", "wbr", "source", "col", "area", "base", "embed", "track"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    def lang(self) -> str | None:
        node: Node | None = self
        while node is not None:
            if node.attrs.get("lang"):
                return node.attrs["lang"]
            node = node.parent
        return None

    def dir(self) -> str | None:
        node: Node | None = self
        while node is not None:
            if node.attrs.get("dir"):
                return node.attrs["dir"]
            node = node.parent
        return None

    def within(self, test) -> bool:
        node: Node | None = self
        while node is not None:
            if test(node):
                return True
            node = node.parent
        return False

    def text(self, keep=lambda n: True) -> str:
        out = []
        for c in self.children:
            if isinstance(c, str):
                out.append(c)
            elif keep(c):
                out.append(c.text(keep))
        return " ".join(" ".join(out).split())

    def walk(self):
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.walk()

    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())


def parse(html: str) -> Node:
    from html.parser import HTMLParser

    root = Node("#root", {}, None)

    class P(HTMLParser):
        cur = root

        def handle_starttag(self, tag, attrs):
            node = Node(tag, {k: v or "" for k, v in attrs}, self.cur)
            self.cur.children.append(node)
            if tag not in VOID:
                self.cur = node

        def handle_endtag(self, tag):
            node = self.cur
            while node is not None and node.tag != tag:
                node = node.parent
            if node is not None and node.parent is not None:
                self.cur = node.parent

        def handle_data(self, data):
            if self.cur.tag not in ("script", "style"):
                self.cur.children.append(data)

    P().feed(html)
    return root


def catalogue_strings(lang: str) -> dict[str, str]:
    from babel.messages.pofile import read_po

    if lang == "en":
        with (TRANSLATIONS / "messages.pot").open("rb") as f:
            return {m.id: m.id for m in read_po(f) if isinstance(m.id, str) and m.id}
    with (TRANSLATIONS / language(lang).locale / "LC_MESSAGES" / "messages.po").open("rb") as f:
        return {m.id: m.string for m in read_po(f) if isinstance(m.id, str) and m.id and m.string}


def patient_only_words(clang: str, plang: str) -> set[str]:
    """Texts that exist only in the patient's language: seen on a clinician control, the control is in the wrong one."""
    c, p = catalogue_strings(clang), catalogue_strings(plang)
    mine = {" ".join(v.split()) for v in c.values()}
    return {" ".join(p[k].split()) for k in p if p[k] != c.get(k, k)} - mine - {""}


def is_patient(n: Node) -> bool:
    return n.attrs.get("data-audience") == "patient" or "read-aloud" in n.classes() or n.tag == "q"


def language_problems(html: str, clang: str, plang: str, foreign: set[str]) -> list[str]:
    root = parse(html)
    problems = []
    page = next((n for n in root.walk() if n.tag == "html"), None)
    if page is None or page.attrs.get("lang") != clang:
        problems.append(f"<html lang> is {page and page.attrs.get('lang')!r}, not the clinician's {clang!r}")
    if page is not None and page.attrs.get("dir") != direction(clang):
        problems.append(f"<html dir> is {page.attrs.get('dir')!r}, not the clinician's {direction(clang)!r}")
    for n in root.walk():
        audience = n.attrs.get("data-audience")
        if is_patient(n) and n.parent is not None and not n.parent.within(is_patient) and n.lang() != plang:
            problems.append(f"patient text in {n.lang()!r}: {n.text()[:80]!r}")
        # Each line runs in its own language's direction (Arabic right to left, the clinician's beneath left to right).
        if is_patient(n) and n.lang() == plang and n.dir() != direction(plang):
            problems.append(f"patient text {plang!r} with dir {n.dir()!r}: {n.text()[:80]!r}")
        if audience == "clinician" and n.lang() != clang:
            problems.append(f"clinician echo in {n.lang()!r}: {n.text()[:80]!r}")
        if audience == "clinician" and n.dir() != direction(clang):
            problems.append(f"clinician echo with dir {n.dir()!r}: {n.text()[:80]!r}")
        if "said" in n.classes():
            said = [c for c in n.children if isinstance(c, Node) and is_patient(c)]
            echo = [c for c in n.children if isinstance(c, Node) and c.attrs.get("data-audience") == "clinician"]
            if not said or not said[0].text():
                problems.append("a read-aloud line without the patient's words")
            if plang != clang and (not echo or not echo[0].text()):
                problems.append(f"read-aloud line without the clinician's language beneath: {n.text()[:80]!r}")
        if ("read-aloud" in n.classes() or n.tag == "q") and plang != clang and n.parent is not None:
            if not any(isinstance(c, Node) and "clinician-text" in c.classes() and c.lang() == clang
                       for c in n.parent.children):
                problems.append(f"read-aloud line without the clinician's language beneath: {n.text()[:80]!r}")
        control = n.tag in CONTROLS or n.attrs.get("role") == "alert"
        if control and not n.within(is_patient) and not n.within(lambda m: m.attrs.get("data-testid") == "lang-switch"):
            if n.lang() != clang:
                problems.append(f"control <{n.tag}> in {n.lang()!r}: {n.text()[:80]!r}")
            words = n.text(keep=lambda m: not is_patient(m) and m.attrs.get("lang") in (None, clang))
            if words in foreign:
                problems.append(f"control <{n.tag}> in the patient's language: {words[:80]!r}")
    return problems


def clinician_pages(app, make_launch, plang: str) -> dict[str, str]:
    """Every page of a visit, over HTTP: gate, questions, result, danger check, referrals, handout (card and full
    page), consent, confirmation, nothing-written."""
    from sandbox_ehr.harness.launches import default_context
    from tests.writeback.support import REFERRAL, SCREENING, consent

    ctx = default_context()
    ctx["patient"] = {**ctx["patient"], "language": plang, "languages": [plang]}
    visit = {"screening": dict(SCREENING, danger=True), "referral": REFERRAL}
    pages: dict[str, str] = {}
    client = app.test_client()

    def get(name: str, url: str) -> None:
        resp = client.get(url)
        assert resp.status_code == 200, (name, resp.status_code)
        pages[name] = resp.get_data(as_text=True)

    lid = make_launch(client, context=ctx, iss=DOWN_ISS)
    get("gate", f"/l/{lid}/")
    lid = make_launch(client, context=ctx, data={"gate": {"status": "confirmed"}}, iss=DOWN_ISS)
    get("questions", f"/l/{lid}/screen?instrument=hits")
    # The danger check is asked where the result would be, after a positive screen that reported physical violence.
    lid = make_launch(client, context=ctx, iss=DOWN_ISS, data={"gate": {"status": "confirmed"}, "screening": dict(
        SCREENING, danger_check_due=True, physical_violence=True)})
    get("danger questions", f"/l/{lid}/result")
    assert 'data-instrument="da-5"' in pages["danger questions"]
    lid = make_launch(client, context=ctx, data=visit, iss=DOWN_ISS)
    for name, path in [("result", "result"), ("referrals", "referrals"), ("handout", "handout"),
                       ("full handout", "handout?layout=page"), ("consent", "consent")]:
        get(name, f"/l/{lid}/{path}")
    pages["consent, update preview"] = client.post(f"/l/{lid}/consent", data={"shown": "1", "action": "preview",
                                                   "channel": "phone"}).get_data(as_text=True)
    pages["consent refused"] = client.post(f"/l/{lid}/consent", data={"shown": "1", "consent": "yes"}).get_data(
        as_text=True)
    assert consent(client, lid, channel="phone", resources=["ServiceRequest"]).status_code == 302
    get("confirmation", f"/l/{lid}/consent/done")
    lid = make_launch(client, context=ctx, data=visit, iss=DOWN_ISS)
    pages["nothing written"] = client.post(f"/l/{lid}/consent", data={"consent": "no"}).get_data(as_text=True)
    return pages


def worklist_pages(app, make_launch) -> dict[str, str]:
    from sqlalchemy import select

    from sandbox_ehr.harness.launches import SNOMED_SW, role, worker_context
    from smart_app.store.db import session_scope
    from smart_app.store.models import ReferralRecord

    client = app.test_client()
    lid = make_launch(client, context=worker_context("Practitioner/sw", "Sam Social", [role(
        [SNOMED_SW], locations=["Location/loc-mgh-chelsea"], organizations=["Organization/org-mgh"])],
        "openid fhirUser user/Task.rus user/ServiceRequest.rus"), iss=DOWN_ISS, kind="standalone")
    with app.app_context(), session_scope(app) as db:
        rid = db.scalar(select(ReferralRecord.id))
    pages = {"queue": client.get(f"/l/{lid}/worklist").get_data(as_text=True)}
    pages["referral in the queue"] = client.get(f"/l/{lid}/worklist/{rid}").get_data(as_text=True)
    return pages


DOWN_ISS = "http://127.0.0.1:9/fhir"  # nothing listens: the chart writes stay queued


@pytest.mark.parametrize(("clang", "plang"), PAIRS, ids=[f"{c}-clinician-{p}-patient" for c, p in PAIRS])
def test_every_page_keeps_the_clinicians_language_and_says_the_patients_words_in_theirs(app, make_launch,
                                                                                        clang, plang):
    from config.current import replace_settings

    replace_settings(app, clinician_language=clang)
    pages = clinician_pages(app, make_launch, plang)
    pages.update(worklist_pages(app, make_launch))
    foreign = patient_only_words(clang, plang)
    problems = {name: language_problems(html, clang, plang, foreign) for name, html in pages.items()}
    assert {name: p for name, p in problems.items() if p} == {}
    # Every page that reads the patient a translation says it is not a validated version, once.
    for name in ("gate", "questions", "danger questions", "result", "referrals", "consent"):
        assert pages[name].count('data-testid="translation-note"') == 1, name
    # The words read aloud are there, in the patient's language, on the pages where the clinician reads them.
    for name in ("questions", "consent", "consent, update preview"):
        said = [n for n in parse(pages[name]).walk() if is_patient(n) and n.text()]
        assert said and all(n.lang() == plang for n in said), name


# -- complete catalogues ------------------------------------------------------------------------------------------
def _extract(tmp_path: Path, cfg: str, *args: str) -> set[str]:
    import sys

    from babel.messages.pofile import read_po

    (tmp_path / "babel.cfg").write_text(cfg)
    pot = tmp_path / "out.pot"
    subprocess.run([sys.executable, "-m", "babel.messages.frontend", "extract", "-F", str(tmp_path / "babel.cfg"),
                    *args, "-o", str(pot), "--no-location", "."], check=True, cwd=ROOT, capture_output=True)
    with pot.open("rb") as f:
        return {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(f) if m.id}


def _entries(lang: str) -> dict[str, object]:
    from babel.messages.pofile import read_po

    path = (TRANSLATIONS / "messages.pot" if lang == "en"
            else TRANSLATIONS / language(lang).locale / "LC_MESSAGES" / "messages.po")
    with path.open("rb") as f:
        cat = read_po(f, locale=None if lang == "en" else language(lang).locale)
    return {(m.id if isinstance(m.id, str) else m.id[0]): m for m in cat if m.id}


def test_english_source_catalogue_has_every_string_in_the_code(tmp_path):
    """English is the source: the template (.pot) the other languages are made from holds every string the code
    and templates use (``pybabel extract`` as smart_app/translations/README.md says, after adding strings)."""
    in_code = _extract(tmp_path, (ROOT / "babel.cfg").read_text(), "-k", "p_", "-k", "_l")
    assert len(in_code) > 300
    assert sorted(in_code - set(_entries("en"))) == []


@pytest.mark.parametrize("lang", [c for c in clinician_codes() if c != "en"])
def test_catalogue_is_complete_clinician_side_too(lang):
    """Every string of the source catalogue translated, none fuzzy: a deployment may set clinician_language to it."""
    entries = _entries(lang)
    assert sorted(set(_entries("en")) - set(entries)) == []
    untranslated = [k for k, m in entries.items() if not m.string or (isinstance(m.string, tuple | list)
                                                                       and not all(m.string))]
    fuzzy = [k for k, m in entries.items() if "fuzzy" in m.flags]
    assert untranslated == [] and fuzzy == []


@pytest.mark.parametrize("lang", translated_codes())
def test_everything_said_to_the_patient_is_translated(tmp_path, lang):
    """Read-aloud words (``p_`` in templates and code) in the patient's language; the printed handout's words are
    the content file's (tests/test_catalogs.py), its ``_()`` strings the clinician's controls."""
    said = _extract(tmp_path, "[python: smart_app/**.py]\n[jinja2: smart_app/**/templates/**.html]\n"
                    "[jinja2: smart_app/templates/**.html]\n", "-k", "p_", "--no-default-keywords")
    assert len(said) >= 10
    from smart_app.screening.education import NOT_ALONE, SCRIPT

    said |= set(SCRIPT) | {NOT_ALONE}  # the universal-education script, read aloud (marked N_ there)
    entries = _entries(lang)
    missing = [s for s in said if s not in entries or not entries[s].string or "fuzzy" in entries[s].flags]
    assert missing == []


@pytest.mark.parametrize("lang", translated_codes())
def test_catalogue_states_its_review_status(lang):
    """machine-drafted, reviewed by <role> or validated: <citation>, in the catalogue's header comment."""
    po = TRANSLATIONS / language(lang).locale / "LC_MESSAGES" / "messages.po"
    head = po.read_text(encoding="utf-8").split('msgid ""')[0]
    assert re.search(r"^# Review status: (machine-drafted|reviewed by \w.*|validated: \S.*)", head, re.M), head
    # The registry says the same (the pages' honest line comes from it).
    assert re.search(rf"^# Review status: {re.escape(language(lang).review)}\b", head, re.M), head


@pytest.mark.parametrize("lang", translated_codes())
def test_placeholders_survive_translation(lang):
    for key, m in _entries(lang).items():
        ids = m.id if isinstance(m.id, tuple | list) else (m.id,)
        strings = m.string if isinstance(m.string, tuple | list) else (m.string,)
        wanted = sorted(re.findall(r"%\(\w+\)[sd]", ids[-1]))
        for form in strings:
            if form:  # an empty one is untranslated: Flask-Babel shows the English
                assert sorted(re.findall(r"%\(\w+\)[sd]", form)) == wanted, (lang, key)


# -- review status, one quotation style, the chosen words -------------------------------------------------------
REVIEW = re.compile(r"^(machine-drafted|reviewed by \S.*|validated: \S.*)$")


def _texts(lang: str) -> list[tuple[str, str]]:
    """Every text in ``lang``: its catalogue, the content and directory files, the instruments."""
    from tests.test_catalogs import CONTENT, DIRECTORY, instrument_texts, texts_in

    out = [(k, s) for k, m in _entries(lang).items() for s in (m.string if isinstance(m.string, tuple | list)
                                                               else (m.string,)) if s]
    out += [(w, t) for w, t in texts_in(CONTENT, lang) + texts_in(DIRECTORY, lang) + instrument_texts(lang) if t]
    return out


@pytest.mark.parametrize("lang", translated_codes())
def test_every_translation_states_who_checked_it(lang):
    import yaml

    from fhir.questionnaires import load_instruments

    for name in ("content.yaml", "boston.yaml"):
        data = yaml.safe_load((ROOT / "config" / "directory" / name).read_text(encoding="utf-8"))
        assert REVIEW.match(data["translations"][lang]["review"]), name
    for key, inst in load_instruments().items():
        status = inst.translation_status[lang]
        assert REVIEW.match(status["review"]), key
        # Not validated: the page says so (instrument.html's note), and the file says it is ours.
        if not status["review"].startswith("validated:"):
            assert status["status"] == "unconfirmed" and "not a validated version" in status["note"], key


@pytest.mark.parametrize("lang", translated_codes())
def test_one_quotation_style_per_language(lang):
    import yaml

    rule = yaml.safe_load((TRANSLATIONS / f"glossary-{lang}.yaml").read_text(encoding="utf-8"))["quotes"]
    bad = [(w, t) for w, t in _texts(lang) if any(q in t for q in rule["never"])]
    assert bad == []


@pytest.mark.parametrize("lang", translated_codes())
def test_one_time_format_babels_short_time(lang):
    from babel.dates import format_time

    from referrals.hours import fmt_minutes

    locale = language(lang).locale
    assert fmt_minutes(8 * 60 + 30, lang) == format_time(datetime_time(8, 30), "short", locale=locale)
    assert fmt_minutes(17 * 60 + 30, lang) == format_time(datetime_time(17, 30), "short", locale=locale)
    bad = [(w, t) for w, t in _texts(lang) if re.search(r"\d\s?(am|pm|a\.m\.|p\.m\.)(?!\w)|\d+h\b", t, re.I)]
    assert bad == []


def test_portuguese_wording_chosen_in_the_glossary():
    from fhir.questionnaires import load_instruments

    da5 = next(i for i in load_instruments().values() if i.role == "danger-check")
    choke = next(item.text["pt"] for item in da5.items if "choke" in item.text["en"])
    assert "esganar" in choke and "sufocar" not in choke  # smother is not choke
    texts = " ".join(t for _, t in _texts("pt"))
    assert "secretaria do tribunal" in texts and "cartório" not in texts
    assert "afastamento do lar" in texts.lower() and "saída do lar" not in texts
    assert "parceiro abusivo ou de uma parceira abusiva" in texts


def test_spanish_wording_chosen_in_the_glossary():
    from fhir.questionnaires import load_instruments

    texts = _texts("es")
    joined = " ".join(t for _, t in texts)
    assert "línea directa" not in joined.lower() and "línea de ayuda" in joined.lower()
    assert re.search(r"\brefier[ao]n?\b|\breferimos\b", joined) is None and "derivamos" in joined
    wast = load_instruments()["wast-short"]
    assert all("¿" in item.text["es"] and item.text["es"].endswith("?") for item in wast.questions)  # questions
