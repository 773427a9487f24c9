"""The tablet's "Listen" audio: made by espeak-ng at build time, found by a hash of the exact text on screen, so a
changed wording falls back to the browser's speech instead of reading stale audio."""

from __future__ import annotations

import re

import pytest

from fhir.questionnaires import load_instruments
from smart_app.kiosk import audio
from smart_app.kiosk.questions import listen_text
from tests.kiosk.helpers import GATE, start
from tests.support import tools

pytestmark = pytest.mark.kiosk
AUDIO_SRC = re.compile(r'data-audio="([^"]+)"')


def test_the_build_makes_one_wav_per_question_and_language_and_drops_stale_ones(tmp_path):
    espeak = tools.espeak()
    hits = load_instruments()["hits"]
    (tmp_path / "0123456789abcdef0123456789abcdef.wav").write_bytes(b"stale")
    written, deleted = audio.build(espeak, [hits], tmp_path)
    files = sorted(tmp_path.glob("*.wav"))
    langs = len([c for c in audio.registry.codes() if c not in audio.NO_VOICE])  # espeak-ng cannot read those
    assert written == len(hits.questions) * langs == len(files) and deleted == 1
    assert all(f.read_bytes()[:4] == b"RIFF" and f.stat().st_size > 10_000 for f in files)
    assert audio.build(espeak, [hits], tmp_path) == (0, 0)  # nothing to do twice
    spanish = audio.file_for("es", listen_text(hits, hits.questions[0], "es"))
    assert (tmp_path / spanish.name).exists()


def test_a_question_links_the_file_of_its_exact_text_else_none(app, make_launch, monkeypatch, tmp_path):
    monkeypatch.setattr(audio, "AUDIO_DIR", tmp_path)
    hits = load_instruments()["hits"]
    said = listen_text(hits, hits.questions[0], "en")
    (tmp_path / audio.file_for("en", said).name).write_bytes(b"RIFF")
    client = app.test_client()
    lid = make_launch(client, data=GATE)
    tablet = app.test_client()
    tablet.post("/tablet", data={"code": start(client, lid, "paired")})
    tablet.post("/tablet/q", data={"action": "start"})
    page = tablet.get("/tablet/q").get_data(as_text=True)
    assert AUDIO_SRC.search(page).group(1).endswith(f"/tablet/static/audio/{audio.key('en', said)}.wav")
    assert audio.key("en", said + " ") != audio.key("en", said) != audio.key("es", said)
    # The next question has no file here: the page offers the browser's speech with the same text.
    tablet.post("/tablet/q", data={"action": "answer", "item": hits.questions[0].link_id, "code": "LA6270-8"})
    page = tablet.get("/tablet/q").get_data(as_text=True)
    assert AUDIO_SRC.search(page) is None and 'data-testid="tablet-listen"' in page
