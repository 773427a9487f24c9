"""Scorer worked examples from the published sources (cut-offs declared in each Questionnaire file)."""

from __future__ import annotations

import pytest

from fhir.questionnaires import IncompleteAnswers, load_instruments

INSTRUMENTS = load_instruments()
YES, NO = "LA33-6", "LA32-8"


def score(key: str, **answers: str):
    return INSTRUMENTS[key].score({k.replace("_", "-"): v for k, v in answers.items()})


def test_the_six_bundled_instruments_load_with_their_roles():
    assert {k: i.role for k, i in INSTRUMENTS.items()} == {
        "hits": "screen", "hark": "screen", "pvs": "screen", "wast-short": "screen", "e-hits": "screen",
        "da-5": "danger-check",
    }


# HITS (Sherin 1998): 1 Never .. 5 Frequently, total 4-20, positive when > 10.
def test_hits_all_never_is_4_and_negative():
    r = score("hits", hurt="never", insult="never", threaten="never", scream="never")
    assert (r.score, r.interpretation) == (4, "negative")


def test_hits_worked_example_2_4_2_4_is_12_and_positive():
    r = score("hits", hurt="rarely", insult="fairly-often", threaten="rarely", scream="fairly-often")
    assert (r.score, r.interpretation) == (12, "positive")


@pytest.mark.parametrize(("scream", "total", "expected"), [("fairly-often", 10, "negative"),
                                                           ("frequently", 11, "positive")])
def test_hits_cut_off_is_strictly_greater_than_10(scream, total, expected):
    r = score("hits", hurt="rarely", insult="rarely", threaten="rarely", scream=scream)
    assert (r.score, r.interpretation) == (total, expected)


def test_hits_all_frequently_is_20():
    r = score("hits", hurt="frequently", insult="frequently", threaten="frequently", scream="frequently")
    assert (r.score, r.interpretation, r.danger) == (20, "positive", False)


def test_hits_carries_the_loinc_codes_of_the_design():
    hits = INSTRUMENTS["hits"]
    assert [q.codes[0]["code"] for q in hits.questions] == ["95618-5", "95617-7", "95616-9", "95615-1"]
    assert hits.rule.score_code["code"] == "95614-4"


# HARK (Sohal 2007): any Yes is positive.
def test_hark_all_no_is_negative():
    assert score("hark", humiliation=NO, afraid=NO, rape=NO, kick=NO).interpretation == "negative"


@pytest.mark.parametrize("item", ["humiliation", "afraid", "rape", "kick"])
def test_hark_any_single_yes_is_positive(item):
    answers = {k: NO for k in ("humiliation", "afraid", "rape", "kick")} | {item: YES}
    r = score("hark", **answers)
    assert (r.score, r.interpretation) == (1, "positive")


def test_hark_codes_are_loinc():
    hark = INSTRUMENTS["hark"]
    assert hark.code[0]["code"] == "76499-3" and hark.rule.score_code["code"] == "76504-0"
    assert [q.codes[0]["code"] for q in hark.questions] == ["76500-8", "76501-6", "76502-4", "76503-2"]


# PVS (Feldhaus 1997): positive when any of the three is positive; hurt by someone other than a partner is not.
def test_pvs_hurt_by_someone_else_and_safe_is_negative():
    r = score("pvs", hurt="yes-other", safe="yes", previous="no")
    assert (r.score, r.interpretation) == (0, "negative")


@pytest.mark.parametrize("answers", [
    {"hurt": "yes-partner", "safe": "yes", "previous": "no"},
    {"hurt": "no", "safe": "no", "previous": "no"},
    {"hurt": "no", "safe": "no-relationship", "previous": "yes"},
])
def test_pvs_any_positive_question_is_positive(answers):
    assert score("pvs", **answers).interpretation == "positive"


def test_pvs_not_in_a_relationship_is_not_unsafe():
    assert score("pvs", hurt="no", safe="no-relationship", previous="no").interpretation == "negative"


# WAST-Short (Brown 1996/2000): positive when "a lot of tension" and "great difficulty".
def test_wast_short_a_lot_of_tension_and_great_difficulty_is_positive():
    r = score("wast-short", tension="a-lot-of-tension", arguments="great-difficulty")
    assert (r.score, r.interpretation) == (6, "positive")


@pytest.mark.parametrize(("tension", "arguments"), [("a-lot-of-tension", "some-difficulty"),
                                                    ("some-tension", "great-difficulty"),
                                                    ("no-tension", "no-difficulty")])
def test_wast_short_anything_less_is_negative(tension, arguments):
    assert score("wast-short", tension=tension, arguments=arguments).interpretation == "negative"


# E-HITS (Iverson 2015): five HITS-style items, positive at total >= 7.
def test_e_hits_all_never_is_5_and_negative():
    r = score("e-hits", hurt="never", insult="never", threaten="never", scream="never", sex="never")
    assert (r.score, r.interpretation) == (5, "negative")


@pytest.mark.parametrize(("scream", "total", "expected"), [("rarely", 6, "negative"), ("sometimes", 7, "positive")])
def test_e_hits_cut_off_is_7(scream, total, expected):
    r = score("e-hits", hurt="never", insult="never", threaten="never", scream=scream, sex="never")
    assert (r.score, r.interpretation) == (total, expected)


# DA-5 (Snider 2009): 3+ yes = high risk; a yes to weapon, strangulation, fear for life or escalation = danger.
def da5(**yes: bool):
    items = ("escalation", "weapon", "strangulation", "jealousy", "fear-for-life")
    return INSTRUMENTS["da-5"].score({i: YES if yes.get(i.replace("-", "_")) else NO for i in items})


@pytest.mark.parametrize("item", ["escalation", "weapon", "strangulation", "fear_for_life"])
def test_da5_each_danger_item_raises_the_urgent_path(item):
    r = da5(**{item: True})
    assert r.danger is True and r.danger_items == (item.replace("_", "-"),)


def test_da5_jealousy_alone_is_not_urgent():
    r = da5(jealousy=True)
    assert (r.danger, r.score, r.interpretation) == (False, 1, "negative")


def test_da5_three_yes_is_high_risk():
    r = da5(jealousy=True, weapon=True, strangulation=True)
    assert (r.score, r.interpretation) == (3, "positive")
    assert set(r.danger_items) == {"weapon", "strangulation"}


def test_declined_and_empty_answers_are_declined_without_a_score():
    for r in (INSTRUMENTS["hits"].score({}, declined=True), INSTRUMENTS["hits"].score({"hurt": ""})):
        assert (r.interpretation, r.score, r.answers) == ("declined", None, {})


def test_partly_answered_form_is_refused_naming_the_missing_items():
    with pytest.raises(IncompleteAnswers) as err:
        INSTRUMENTS["hits"].score({"hurt": "never", "insult": "never"})
    assert err.value.missing == ["threaten", "scream"]


def test_an_unknown_answer_code_counts_as_unanswered():
    with pytest.raises(IncompleteAnswers):
        INSTRUMENTS["hits"].score({"hurt": "never", "insult": "never", "threaten": "never", "scream": "always"})
