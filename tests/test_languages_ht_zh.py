"""Haitian Creole and Chinese (Simplified, Traditional): the EHR's tags reach the right text (zh-TW, zh-HK and
Cantonese read Traditional, zh-CN Simplified), the Chinese texts hold one script each and only words Hong Kong and
Taiwan write alike, every text keeps its glossary's words (looked for inside Chinese, which has no spaces), the
Kreyòl keeps its orthography, and a Cantonese speaker's pages say that the interpreter speaks the text in Cantonese.

The checks every language shares (complete catalogues, msgfmt, review status, quotation style, every page in every
language pair) are in tests/test_languages.py and tests/test_catalogs.py."""

from __future__ import annotations

import html as html_text
import re
from pathlib import Path

import pytest
import yaml

from config.languages import language, match
from fhir.context import language_tag
from tests.test_catalogs import CONTENT, DIRECTORY, instrument_texts, texts_in

pytestmark = pytest.mark.i18n

ROOT = Path(__file__).resolve().parents[1]
TRANSLATIONS = ROOT / "smart_app" / "translations"
OURS = ("ht", "zh-Hans", "zh-Hant")


def texts(lang: str) -> list[tuple[str, str]]:
    """Every text in ``lang``: the catalogue's translations, content and directory files, instruments."""
    from babel.messages.pofile import read_po

    with (TRANSLATIONS / language(lang).locale / "LC_MESSAGES" / "messages.po").open("rb") as f:
        out = [(m.id, m.string) for m in read_po(f) if isinstance(m.id, str) and m.id and m.string]
    out += [(w, t) for w, t in texts_in(CONTENT, lang) + texts_in(DIRECTORY, lang) + instrument_texts(lang) if t]
    return out


# -- the EHR's language tag -> the text the patient reads ----------------------------------------------------------
def _communication(code: str | None = None, text: str | None = None) -> dict:
    concept: dict = {"coding": [{"system": "urn:ietf:bcp:47", "code": code}]} if code else {}
    if text:
        concept["text"] = text
    return {"language": concept}


@pytest.mark.parametrize(("code", "expected"), [
    ("zh", "zh-Hans"), ("zh-CN", "zh-Hans"), ("zh-SG", "zh-Hans"), ("zh-Hans", "zh-Hans"), ("zh-Hans-CN", "zh-Hans"),
    ("cmn", "zh-Hans"), ("zho", "zh-Hans"), ("zh_CN", "zh-Hans"),
    ("zh-TW", "zh-Hant"), ("zh-HK", "zh-Hant"), ("zh-MO", "zh-Hant"), ("zh-Hant", "zh-Hant"),
    ("zh-Hant-TW", "zh-Hant"), ("cmn-Hant-TW", "zh-Hant"), ("yue", "zh-Hant"), ("yue-HK", "zh-Hant"),
    ("zh-yue", "zh-Hant"), ("yue-Hant", "zh-Hant"),
    # Cantonese written in Simplified characters (Guangzhou): the script decides.
    ("yue-Hans", "zh-Hans"),
    ("ht", "ht"), ("ht-HT", "ht"), ("hat", "ht"), ("HT", "ht"),
])
def test_an_ehr_language_tag_reaches_the_written_text_the_patient_reads(code, expected):
    assert match(language_tag(_communication(code))) == expected


@pytest.mark.parametrize(("text", "expected"), [("Cantonese", "zh-Hant"), ("Mandarin", "zh-Hans"),
                                                ("Chinese", "zh-Hans"), ("Haitian Creole", "ht"),
                                                ("Chinese (Traditional)", "zh-Hant")])
def test_a_language_named_in_words_reaches_it_too(text, expected):
    assert match(language_tag(_communication(text=text))) == expected


def test_cantonese_stays_cantonese_for_the_interpreter():
    """The wire keeps what an interpreter is booked for: Cantonese is not folded into 'zh' (Mandarin)."""
    assert language_tag(_communication("yue")) == "yue"
    assert language_tag(_communication("zh-yue")) == "yue"
    assert language_tag(_communication(text="Cantonese")) == "yue"
    assert language_tag(_communication("zh-HK")) == "zh-HK"
    assert language_tag(_communication("es-MX")) == "es"  # a region that does not change the text is dropped


# -- one script per Chinese text, Hong Kong and Taiwan alike ---------------------------------------------------------
# Characters the two scripts write differently (Simplified, Traditional), among those these texts use.
PAIRS = ("们們 这這 说說 会會 为為 时時 对對 话話 请請 关關 还還 与與 个個 来來 电電 问問 "
         "题題 经經 过過 现現 样樣 应應 该該 给給 认認 识識 帮幫 护護 伤傷 险險 紧緊 远遠 "
         "离離 虑慮 员員 务務 费費 复複 杂雜 诉訴 报報 觉覺 写寫 记記 录錄 随隨 携攜 带帶 "
         "档檔 书書 办辦 处處 发發 当當 临臨 执執 枪槍 权權 抚撫 养養 赔賠 损損 资資 医醫 "
         "疗療 种種 亲親 缘緣 恋戀 订訂 实實 划劃 单單 扫掃 码碼 网網 页頁 钱錢 线線 热熱 "
         "国國 区區 顿頓 诊診 历歷 条條 简簡 转轉 项項 机機 构構 联聯 络絡 频頻 侣侶 胁脅 "
         "骂罵 脏髒 强強 进進 头頭 谁誰 张張 总總 难難 评評 严嚴 杀殺 边邊 择擇 虽雖 让讓 "
         "么麼 级級 决決 卫衛 气氣 结結")
SIMPLIFIED = {p[0] for p in PAIRS.split()}
TRADITIONAL = {p[1] for p in PAIRS.split()}


def test_the_character_pairs_are_pairs():
    assert all(len(p) == 2 and p[0] != p[1] for p in PAIRS.split()) and not SIMPLIFIED & TRADITIONAL


@pytest.mark.parametrize(("lang", "other_script"), [("zh-Hans", TRADITIONAL), ("zh-Hant", SIMPLIFIED)])
def test_each_chinese_text_is_in_one_script(lang, other_script):
    found = texts(lang)
    assert len(found) > 100
    bad = [(where, text) for where, text in found if set(text) & other_script]
    assert bad == []


# -- the glossaries --------------------------------------------------------------------------------------------------
def glossary(lang: str) -> dict:
    return yaml.safe_load((TRANSLATIONS / f"glossary-{lang}.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("lang", OURS)
def test_no_text_uses_a_word_its_glossary_forbids(lang):
    """Chinese has no spaces: the forbidden words are looked for inside the text, not between word boundaries."""
    rules = glossary(lang)["terms"]
    assert {"court", "holidays", "referral", "advocate", "abuse", "partner", "safety", "restraining order",
            "protective order", "hotline", "choke"} <= set(rules)
    cjk = lang.startswith("zh")
    found = texts(lang)
    for concept, rule in rules.items():
        for word in rule["never"]:
            pattern = re.compile(re.escape(word) if cjk else rf"(?<!\w){re.escape(word)}(?!\w)", re.I)
            bad = [(where, text) for where, text in found if pattern.search(text)]
            assert bad == [], f"{lang}: {concept}: {word!r} in {bad[:2]}"


@pytest.mark.parametrize("lang", OURS)
def test_the_chosen_words_are_the_ones_used(lang):
    """The glossary's word for each key concept is what the 209A text and the instruments actually say."""
    joined = " ".join(text for _, text in texts(lang))
    for concept in ("court", "restraining order", "protective order", "hotline", "advocate", "partner", "choke",
                    "vacate order", "clerk's office"):
        assert glossary(lang)["terms"][concept]["use"] in joined, (lang, concept)


def test_kreyol_keeps_its_orthography():
    """Standard Kreyòl writes è, ò and à only: an é, ê, ô or ç is French that slipped in."""
    bad = [(where, text) for where, text in texts("ht") if re.search(r"[éêôçûî]", text)]
    assert bad == []


def test_the_choking_question_says_choke_not_smother():
    from fhir.questionnaires import load_instruments

    da5 = next(i for i in load_instruments().values() if i.role == "danger-check")
    item = next(item for item in da5.items if "choke" in item.text["en"])
    assert "trangle" in item.text["ht"] and "toufe" not in item.text["ht"]
    for lang in ("zh-Hans", "zh-Hant"):
        assert "掐住" in item.text[lang] and "窒息" not in item.text[lang]


def test_a_phone_number_inside_chinese_is_a_link():
    """Chinese runs words together: each number has a space before it, so the page's phone links find it."""
    from referrals.phones import numbers_in

    for lang in ("zh-Hans", "zh-Hant"):
        for where, text in texts(lang):
            written = re.findall(r"1-\d{3}-\d{3}-\d{4}", text)
            assert len(numbers_in(text)) == len(written), (lang, where, text)


@pytest.mark.parametrize("lang", OURS)
def test_every_instrument_says_it_is_read_with_an_interpreter(lang):
    from fhir.questionnaires import load_instruments

    for key, inst in load_instruments().items():
        status = inst.translation_status[lang]
        assert status["review"] == "machine-drafted", key
        assert "translation for reading aloud with an interpreter; not a validated version" in status["note"], key
    assert "spoken Cantonese" in load_instruments()["hits"].translation_status["zh-Hant"]["note"]


# -- what the interpreter needs beyond the text (pages over HTTP) ---------------------------------------------------
DOWN_ISS = "http://127.0.0.1:9/fhir"  # nothing listens: nothing is read from or written to an EHR


def _questions_page(app, make_launch, ehr_language: str) -> str:
    from sandbox_ehr.harness.launches import default_context

    ctx = default_context()
    ctx["patient"] = {**ctx["patient"], "language": ehr_language, "languages": [ehr_language]}
    client = app.test_client()
    lid = make_launch(client, context=ctx, data={"gate": {"status": "confirmed"}}, iss=DOWN_ISS)
    resp = client.get(f"/l/{lid}/screen?instrument=hits")
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


def _note(html: str, testid: str) -> str | None:
    found = re.search(rf'data-testid="{testid}">([^<]*)<', html)
    return " ".join(html_text.unescape(found.group(1)).split()) if found else None


def test_a_cantonese_speaker_is_read_traditional_chinese_that_the_interpreter_says_in_cantonese(app, make_launch):
    html = _questions_page(app, make_launch, "yue-HK")
    assert '<html lang="en"' in html  # the clinician's page
    assert re.search(r'class="read-aloud"[^>]*>[^<]*伴侶', html) or re.search(r'lang="zh-Hant"[^>]*>[^<]*伴侶', html)
    assert "not a validated version" in _note(html, "translation-note")
    assert _note(html, "spoken-note") == ("The patient speaks Cantonese: the interpreter reads the Chinese "
                                          "(Traditional) text and says it in Cantonese.")


@pytest.mark.parametrize(("tag", "says"), [
    ("zh-HK", "ask whether the patient speaks Cantonese or Mandarin"),
    ("zh-TW", None), ("zh-CN", None), ("ht-HT", None), ("es", None), ("en", None),
    ("so", "The patient's language (Somali) has no text in this app: use an interpreter, who interprets from the "
           "English text shown."),
])
def test_the_interpreters_note_says_only_what_the_text_does_not(app, make_launch, tag, says):
    note = _note(_questions_page(app, make_launch, tag), "spoken-note")
    assert (note is None) if says is None else (says in note)


def test_a_patient_whose_language_has_no_text_gets_the_english_questions(app, make_launch):
    html = _questions_page(app, make_launch, "so")
    assert 'data-testid="translation-note"' not in html  # nothing translated: nothing to call unvalidated
    assert "How often does your partner" in html


@pytest.mark.parametrize(("ehr_language", "lang", "welcome", "first"), [
    ("yue-HK", "zh-Hant", "想問您幾個問題", "第 1 題，共 4 題"),
    ("zh-CN", "zh-Hans", "想问您几个问题", "第 1 题，共 4 题"),
    ("ht-HT", "ht", "Kèk kesyon pou ou", "Kesyon 1 sou 4"),
])
def test_the_clinic_tablet_speaks_to_the_patient_in_their_language(app, make_launch, ehr_language, lang, welcome,
                                                                    first):
    """The tablet is read by the patient alone: its own words too (not only the questions) in the patient's."""
    from sandbox_ehr.harness.launches import default_context
    from tests.kiosk.helpers import GATE, start

    ctx = default_context()
    ctx["patient"] = {**ctx["patient"], "language": ehr_language, "languages": [ehr_language]}
    client = app.test_client()
    lid = make_launch(client, context=ctx, data=GATE)
    tablet = app.test_client()
    tablet.post("/tablet", data={"code": start(client, lid, "paired")})
    page = tablet.get("/tablet/q").get_data(as_text=True)
    assert f'<html lang="{lang}"' in page and welcome in page
    tablet.post("/tablet/q", data={"action": "start"})
    page = tablet.get("/tablet/q").get_data(as_text=True)
    assert first in page and "伴侶" * (lang == "zh-Hant") in page and "patnè" * (lang == "ht") in page


@pytest.mark.parametrize(("lang", "hours"), [("ht", "lendi-vandredi 08:30-17:30"), ("zh-Hans", "周一-周五 08:30-17:30"),
                                             ("zh-Hant", "週一-週五 上午8:30-下午5:30")])
def test_the_wallet_card_gives_opening_hours_in_the_patients_words(app, make_launch, lang, hours):
    """CLDR has no Haitian Creole day names: the card says them in Kreyòl, not in English."""
    from sandbox_ehr.harness.launches import default_context
    from tests.writeback.support import REFERRAL, SCREENING

    client = app.test_client()
    lid = make_launch(client, context=default_context(), data={"screening": SCREENING, "referral": REFERRAL},
                      iss=DOWN_ISS)
    page = client.get(f"/l/{lid}/handout?lang={lang}").get_data(as_text=True)
    assert f'data-audience="patient" lang="{lang}"' in page and f"({hours})" in page
