"""The "Listen" audio for the tablet's questions, made at build time with Debian's espeak-ng (offline, no service).

``python -m smart_app.kiosk`` (run by ``make audio``, a prerequisite of ``make test`` and ``make demo``) writes
one WAV per question and language into `smart_app/kiosk/static/audio/` (not in git), named by a hash of the voice
and the exact text read (``listen_text``). A page asks for the file of the text it shows: a changed wording has
another hash, so stale audio is never served; where no file exists the page falls back to the browser's own
speech (speechSynthesis).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from config import languages as registry
from fhir.questionnaires import Instrument, load_instruments
from smart_app.kiosk.questions import listen_text

AUDIO_DIR = Path(__file__).resolve().parent / "static" / "audio"
# espeak-ng voice per language where the bare language code is not the voice we want. Traditional Chinese is read
# in Cantonese (yue): most Boston patients who read Traditional characters speak it (a Mandarin speaker from Taiwan
# gets the Cantonese too; the interpreter is the answer there).
VOICES = {"en": "en-us", "pt": "pt-br", "zh-Hant": "yue"}
# Languages Debian's espeak-ng cannot read: its Mandarin voice (cmn) spells Simplified characters as pinyin read
# with English letters. No file: the tablet falls back to the browser's own speech.
NO_VOICE = ("zh-Hans",)
WORDS_PER_MINUTE = 140  # a little slower than espeak-ng's default, for a patient listening once


def voice(lang: str) -> str:
    return VOICES.get(lang, lang)


def key(lang: str, text: str) -> str:
    return hashlib.sha256(f"{voice(lang)}\n{text}".encode()).hexdigest()[:32]


def file_for(lang: str, text: str) -> Path:
    return AUDIO_DIR / f"{key(lang, text)}.wav"


def wanted(instruments: Iterable[Instrument], langs: Iterable[str] | None = None) -> dict[Path, tuple[str, str]]:
    """Every file the tablet can ask for: path -> (language, text)."""
    out: dict[Path, tuple[str, str]] = {}
    langs = tuple(lang for lang in (langs if langs is not None else registry.codes()) if lang not in NO_VOICE)
    for inst in instruments:
        for item in inst.questions:
            for lang in langs:
                text = listen_text(inst, item, lang)
                out[file_for(lang, text)] = (lang, text)
    return out


def build(
    espeak: str = "espeak-ng", instruments: Iterable[Instrument] | None = None, directory: Path | None = None
) -> tuple[int, int]:
    """Write the missing files and delete the ones no text asks for: (written, deleted)."""
    directory = directory or AUDIO_DIR
    directory.mkdir(parents=True, exist_ok=True)
    files = {directory / p.name: said for p, said in wanted(instruments or load_instruments().values()).items()}
    written = 0
    for path, (lang, text) in sorted(files.items()):
        if path.exists():
            continue
        tmp = path.with_suffix(".part")
        subprocess.run(
            [espeak, "-v", voice(lang), "-s", str(WORDS_PER_MINUTE), "-w", str(tmp), text],
            check=True,
            capture_output=True,
            timeout=60,
        )
        tmp.replace(path)
        written += 1
    stale = [p for p in directory.glob("*.wav") if p not in files]
    for p in stale:
        p.unlink()
    return written, len(stale)


def main() -> int:
    espeak = os.environ.get("ESPEAK") or shutil.which("espeak-ng")
    if espeak is None:
        print(
            "espeak-ng not found (apt-get install espeak-ng): the tablet falls back to the browser's speech",
            file=sys.stderr,
        )
        return 1
    written, deleted = build(espeak)
    print(f"tablet audio: {written} written, {deleted} stale deleted, in {AUDIO_DIR}")
    return 0
