"""Screening instruments as FHIR R4 Questionnaire files: load, validate, score.

Every ``*.json`` file in this folder (and in any folder a deployment adds) is one
instrument. Nothing here knows HITS from HARK: the renderer and scorer are driven
by what the file declares, so a hospital adds an instrument by dropping in a file.

Rules a file must meet on top of FHIR R4 validity (checked at start-up; a bad file
stops the app with a message naming the file and the problem):

- ``id`` (the instrument key), ``url``, ``version``, ``title`` and a source citation
  (extension ``.../StructureDefinition/source``);
- a scoring rule (extension ``.../StructureDefinition/scoring-rule``: ``method`` sum,
  ``comparator`` > | >= , ``threshold``; optional ``scoreCode`` and ``description``);
- every ``choice`` item has ``answerOption`` entries, each a ``valueCoding`` with
  system + code + display and an ordinal score (``ordinalValue`` or ``itemWeight``
  extension, on the option or on its coding);
- danger items are flagged with ``.../danger-item``; the answers that raise the
  urgent path with ``.../danger-answer``; a danger item that means high danger on its own,
  whatever the total, also with ``.../always-high`` (the file's source says on whose authority);
- translated text uses the standard ``translation`` extension on ``_text`` /
  ``_display``; ``.../translation-status`` says whether a language's text is the
  published version or our translation awaiting the site's confirmation, and its ``review`` who checked it
  (``machine-drafted``, ``reviewed by <role>`` or ``validated: <citation>``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

BASE = "http://example.org/fhir/ipv-screen"
SD = f"{BASE}/StructureDefinition"
EXT_SOURCE = f"{SD}/source"
EXT_RULE = f"{SD}/scoring-rule"
EXT_ROLE = f"{SD}/instrument-role"
EXT_DANGER_ITEM = f"{SD}/danger-item"
EXT_DANGER_ANSWER = f"{SD}/danger-answer"
EXT_ALWAYS_HIGH = f"{SD}/always-high"
# An item asking about physical violence: any answer above its lowest score means physical violence was
# reported, which is when the danger check (DA-5, for people who are being physically hurt) follows.
EXT_PHYSICAL_ITEM = f"{SD}/physical-violence-item"
EXT_TRANSLATION_STATUS = f"{SD}/translation-status"
ORDINAL_URLS = (
    "http://hl7.org/fhir/StructureDefinition/ordinalValue",
    "http://hl7.org/fhir/StructureDefinition/itemWeight",
)
TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation"
DEFAULT_DIR = Path(__file__).resolve().parent
COMPARATORS = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
ROLES = ("screen", "danger-check")
# Who has checked a translation: drafted by machine (or by the project team, unreviewed), reviewed by a named
# role (e.g. "reviewed by certified medical interpreter"), or a published validated version (its citation).
REVIEW = re.compile(r"^(machine-drafted|reviewed by \S.*|validated: \S.*)$")


class InstrumentError(Exception):
    """A Questionnaire file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"instrument file {path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass(frozen=True)
class Answer:
    system: str
    code: str
    display: dict[str, str]
    score: int | float
    danger: bool = False

    def text(self, lang: str) -> str:
        return self.display.get(lang) or self.display["en"]


@dataclass(frozen=True)
class Item:
    link_id: str
    type: str  # "choice" | "display"
    text: dict[str, str]
    answers: tuple[Answer, ...] = ()
    codes: tuple[dict[str, str], ...] = ()
    danger: bool = False
    physical: bool = False
    always_high: bool = False  # a danger answer here is high danger whatever the total

    def label(self, lang: str) -> str:
        return self.text.get(lang) or self.text["en"]

    def counted(self, code: str | None) -> bool:
        """The answer ``code`` adds to the total (a "yes"): its score is above this item's lowest."""
        chosen = self.answer(code)
        return chosen is not None and chosen.score > self.lowest

    def answer(self, code: str | None) -> Answer | None:
        return self._by_code.get(code) if code is not None else None

    # Items are read-only and loaded once; each page reading a stored screen looks its answers up again, so the
    # lookups are made once per item (the first of a code wins, as a scan in order would find).
    @cached_property
    def lowest(self) -> int | float:
        return min(a.score for a in self.answers)

    @cached_property
    def _by_code(self) -> dict[str, Answer]:
        by_code: dict[str, Answer] = {}
        for a in self.answers:
            by_code.setdefault(a.code, a)
        return by_code


@dataclass(frozen=True)
class ScoringRule:
    method: str
    comparator: str
    threshold: float
    description: str = ""
    score_code: dict[str, str] | None = None

    def positive(self, total: float) -> bool:
        return COMPARATORS[self.comparator](total, self.threshold)

    @property
    def cutoff(self) -> str:
        """The cut-off as a person reads it: "> 10", "≥ 3"."""
        threshold = int(self.threshold) if float(self.threshold).is_integer() else self.threshold
        return f"{'>' if self.comparator == '>' else '≥'} {threshold}"


@dataclass(frozen=True)
class Instrument:
    key: str
    url: str
    version: str
    title: dict[str, str]
    role: str
    source: str
    rule: ScoringRule
    items: tuple[Item, ...]
    code: tuple[dict[str, str], ...] = ()
    translation_status: dict[str, dict[str, str]] = field(default_factory=dict)
    path: str = ""

    @cached_property
    def questions(self) -> tuple[Item, ...]:
        """The items answered (not display text); made once per loaded instrument."""
        return tuple(i for i in self.items if i.type == "choice")

    def label(self, lang: str) -> str:
        return self.title.get(lang) or self.title["en"]

    def has_version(self, lang: str) -> bool:
        """Every item's text (and every answer's) in ``lang``: the instrument can be read in it."""
        return all(lang in i.text and all(lang in a.display for a in i.answers) for i in self.items)

    @property
    def short_name(self) -> str:
        """'HITS' from 'HITS (Hurt, Insult, Threaten, Scream)', 'DA-5' from 'Danger check (DA-5)'."""
        head, _sep, tail = self.label("en").partition(" (")
        inner = tail.rstrip(")")
        return inner if inner and " " not in inner else head

    def counted_items(self, answers: dict[str, str]) -> tuple[str, ...]:
        """The items whose answer adds to the total (every "yes"), in the file's order; ``answers`` {linkId: code}."""
        return tuple(q.link_id for q in self.questions if q.counted(answers.get(q.link_id)))

    def always_high_items(self, answers: dict[str, str]) -> tuple[str, ...]:
        """The items flagged always-high answered with a danger answer: high danger whatever the total."""
        return tuple(q.link_id for q in self.questions
                     if q.always_high and (chosen := q.answer(answers.get(q.link_id))) is not None and chosen.danger)

    def score(self, answers: dict[str, str | None], *, declined: bool = False) -> ScreenResult:
        """Score answers {linkId: answer code}. ``declined`` (or no answer at all) gives
        "declined"; a partly answered form is refused (``IncompleteAnswers``)."""
        if declined or not any(answers.get(q.link_id) for q in self.questions):
            return ScreenResult(self, {}, None, "declined", False, ())
        chosen: dict[str, Answer] = {}
        missing = []
        for q in self.questions:
            ans = q.answer(answers.get(q.link_id))
            if ans is None:
                missing.append(q.link_id)
            else:
                chosen[q.link_id] = ans
        if missing:
            raise IncompleteAnswers(missing)
        total = sum(a.score for a in chosen.values())
        total = int(total) if float(total).is_integer() else total
        danger_items = tuple(q.link_id for q in self.questions if q.danger and chosen[q.link_id].danger)
        interpretation = "positive" if self.rule.positive(total) else "negative"
        physical = any(q.physical and chosen[q.link_id].score > q.lowest for q in self.questions)
        return ScreenResult(self, chosen, total, interpretation, bool(danger_items), danger_items, physical)


class IncompleteAnswers(ValueError):
    def __init__(self, missing: list[str]):
        super().__init__(f"unanswered: {', '.join(missing)}")
        self.missing = missing


@dataclass(frozen=True)
class ScreenResult:
    instrument: Instrument
    answers: dict[str, Answer]
    score: int | float | None
    interpretation: str  # positive | negative | declined
    danger: bool
    danger_items: tuple[str, ...]
    physical_violence: bool = False  # an item flagged physical-violence-item was answered above its lowest

    def answers_state(self) -> dict[str, dict[str, Any]]:
        """The launch-data shape: {linkId: {code, system, display, score}} (English display)."""
        return {k: {"code": a.code, "system": a.system, "display": a.display["en"], "score": a.score}
                for k, a in self.answers.items()}


# ---------------------------------------------------------------------------- loading


def load_instrument(path: Path, fhir_validate: bool = True) -> Instrument:
    """Read and check one Questionnaire file; raises InstrumentError naming the file. ``fhir_validate``: also
    validate it against the FHIR R4 Questionnaire model (the checks this module makes come after either way)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InstrumentError(path, f"cannot read file ({type(exc).__name__})") from None
    except json.JSONDecodeError as exc:
        raise InstrumentError(path, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(raw, dict) or raw.get("resourceType") != "Questionnaire":
        raise InstrumentError(path, "resourceType must be Questionnaire")
    if fhir_validate:
        _fhir_validate(path, raw)
    return _build(path, raw)


def _fhir_validate(path: Path, raw: dict[str, Any]) -> None:
    from fhir.resources.R4B.questionnaire import Questionnaire

    try:
        Questionnaire.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InstrumentError(path, f"not a valid FHIR R4 Questionnaire: {where}: {first.get('msg')}") from None


def _ext(element: dict[str, Any], url: str) -> dict[str, Any] | None:
    return next((e for e in element.get("extension") or [] if e.get("url") == url), None)


def _sub(ext: dict[str, Any], name: str) -> Any:
    for e in ext.get("extension") or []:
        if e.get("url") == name:
            return next((v for k, v in e.items() if k.startswith("value")), None)
    return None


def language_key(tag: str) -> str:
    """A translation's language as the app keys it: the language with its script, without the region ("pt-BR" ->
    "pt", "zh-Hant-TW" -> "zh-Hant"): a script is a different written text, a region mostly is not."""
    parts = tag.replace("_", "-").split("-")
    script = next((p.title() for p in parts[1:] if len(p) == 4 and p.isalpha()), None)
    return f"{parts[0].lower()}-{script}" if script else parts[0].lower()


def _translations(base: str | None, underscore: dict[str, Any] | None) -> dict[str, str]:
    texts = {"en": base} if base else {}
    for e in (underscore or {}).get("extension") or []:
        if e.get("url") == TRANSLATION:
            lang, content = _sub(e, "lang"), _sub(e, "content")
            if lang and content:
                texts[language_key(str(lang))] = content
    return texts


def _ordinal(option: dict[str, Any]) -> float | None:
    for holder in (option, option.get("valueCoding") or {}):
        for url in ORDINAL_URLS:
            ext = _ext(holder, url)
            if ext is not None and isinstance(ext.get("valueDecimal", ext.get("valueInteger")), int | float):
                return ext.get("valueDecimal", ext.get("valueInteger"))
    return None


def _fail(path: Path, problem: str) -> NoReturn:
    raise InstrumentError(path, problem)


def _build(path: Path, raw: dict[str, Any]) -> Instrument:
    for name in ("id", "url", "version", "title"):
        if not raw.get(name):
            _fail(path, f"missing '{name}'")
    source = _ext(raw, EXT_SOURCE)
    if not source or not source.get("valueString", "").strip():
        _fail(path, f"no source citation (extension {EXT_SOURCE})")
    role_ext = _ext(raw, EXT_ROLE)
    role = role_ext.get("valueCode") if role_ext else "screen"
    if role not in ROLES:
        _fail(path, f"instrument-role must be one of {', '.join(ROLES)}, not {role!r}")
    rule = _scoring_rule(path, raw)
    items = _items(path, raw.get("item") or [])
    return Instrument(raw.get("id"), raw["url"], raw["version"], _translations(raw["title"], raw.get("_title")),
                      role, source["valueString"], rule, tuple(items), tuple(raw.get("code") or ()),
                      _translation_status(path, raw), str(path))


def _scoring_rule(path: Path, raw: dict[str, Any]) -> ScoringRule:
    """The cut-off as the file declares it; nothing is assumed."""
    rule_ext = _ext(raw, EXT_RULE)
    if not rule_ext:
        _fail(path, f"no scoring rule (extension {EXT_RULE}) - the cut-off must be declared in the file")
    method, comparator, threshold = _sub(rule_ext, "method"), _sub(rule_ext, "comparator"), _sub(rule_ext, "threshold")
    if method != "sum":
        _fail(path, f"scoring-rule method must be 'sum', not {method!r}")
    if comparator not in COMPARATORS:
        _fail(path, f"scoring-rule comparator must be one of {', '.join(COMPARATORS)}, not {comparator!r}")
    if not isinstance(threshold, int | float):
        _fail(path, "scoring-rule threshold must be a number")
    return ScoringRule(method, comparator, float(threshold), _sub(rule_ext, "description") or "",
                       _sub(rule_ext, "scoreCode"))


def _items(path: Path, raw_items: list[dict[str, Any]]) -> list[Item]:
    items: list[Item] = []
    seen: set[str] = set()
    for n, it in enumerate(raw_items, start=1):
        link = it.get("linkId")
        if link in seen:
            _fail(path, f"item {n}: duplicate linkId {link!r}")
        seen.add(link)
        text = _translations(it.get("text"), it.get("_text"))
        if "en" not in text:
            _fail(path, f"item {link!r}: no text")
        if it.get("type") == "display":
            items.append(Item(link, "display", text))
        else:
            items.append(_choice_item(path, it, link, text))
    if not any(i.type == "choice" for i in items):
        _fail(path, "no questions (choice items)")
    return items


def _flag(element: dict[str, Any], url: str) -> bool:
    return bool((_ext(element, url) or {}).get("valueBoolean"))


def _choice_item(path: Path, it: dict[str, Any], link: str, text: dict[str, str]) -> Item:
    if it.get("type") != "choice":
        _fail(path, f"item {link!r}: type {it.get('type')!r} not supported (choice or display)")
    if it.get("item"):
        _fail(path, f"item {link!r}: nested items are not supported")
    options = it.get("answerOption") or []
    if not options:
        _fail(path, f"item {link!r}: no answerOption")
    answers = [_answer(path, link, m, opt) for m, opt in enumerate(options, start=1)]
    if len({a.code for a in answers}) != len(answers):
        _fail(path, f"item {link!r}: duplicate answer codes")
    danger = _flag(it, EXT_DANGER_ITEM)
    if danger and not any(a.danger for a in answers):
        _fail(path, f"item {link!r}: flagged danger-item but no answer is flagged danger-answer")
    always_high = _flag(it, EXT_ALWAYS_HIGH)
    if always_high and not danger:
        _fail(path, f"item {link!r}: flagged always-high but not danger-item (which answer would count?)")
    return Item(link, "choice", text, tuple(answers), tuple(it.get("code") or ()), danger,
                _flag(it, EXT_PHYSICAL_ITEM), always_high)


def _answer(path: Path, link: str, m: int, opt: dict[str, Any]) -> Answer:
    coding = opt.get("valueCoding")
    if not coding or not coding.get("code") or not coding.get("system") or not coding.get("display"):
        _fail(path, f"item {link!r} answer {m}: needs valueCoding with system, code and display")
    score = _ordinal(opt)
    if score is None:
        _fail(path, f"item {link!r} answer {coding['code']!r}: no ordinal score (ordinalValue or itemWeight)")
    return Answer(coding["system"], coding["code"], _translations(coding["display"], coding.get("_display")),
                  score, _flag(opt, EXT_DANGER_ANSWER))


def _translation_status(path: Path, raw: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Per language: whether its translation is published (validated) or unconfirmed, with a note."""
    status = {}
    for e in raw.get("extension") or []:
        if e.get("url") == EXT_TRANSLATION_STATUS:
            lang = language_key(str(_sub(e, "lang") or ""))
            if _sub(e, "status") not in ("published", "unconfirmed"):
                _fail(path, "translation-status status must be 'published' or 'unconfirmed'")
            review = _sub(e, "review") or "machine-drafted"
            if not REVIEW.match(review):
                _fail(path, "translation-status review must be 'machine-drafted', 'reviewed by <role>' or "
                            "'validated: <citation>'")
            status[lang] = {"status": _sub(e, "status"), "note": _sub(e, "note") or "", "review": review}
    return status


def load_instruments(directories: list[Path | str] | None = None,
                     validate_bundled: bool = True) -> dict[str, Instrument]:
    """All instruments in ``directories`` (default: this folder), keyed by Questionnaire.id.
    A later folder may not silently replace an earlier instrument: duplicate ids are an error.
    ``validate_bundled`` False: the files shipped in this folder skip the FHIR R4 model validation (the app's
    start-up: the test suite validates them, tests/screening/test_loader.py); a site's own files never do."""
    found: dict[str, Instrument] = {}
    for directory in directories or [DEFAULT_DIR]:
        directory = Path(directory)
        if not directory.is_dir():
            raise InstrumentError(directory, "instrument folder not found")
        bundled = directory.resolve() == DEFAULT_DIR.resolve()
        for path in sorted(directory.glob("*.json")):
            inst = load_instrument(path, fhir_validate=validate_bundled or not bundled)
            if inst.key in found:
                raise InstrumentError(path, f"id {inst.key!r} already defined in {found[inst.key].path}")
            found[inst.key] = inst
    return found
