"""Whisper on the CPU (SPEC §17): faster-whisper's tiny.en from a package (no download), on
speech espeak-ng makes at test time; the model loaded once and run off the event loop; offline
picking it when it is at hand; a model that cannot be fetched explained."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import trio
import trio.lowlevel

from tests.conftest import _captured, clean_env
from tests.fake_brains import FakeLLM, Plan, start_fake
from tests.runtime_helpers import write
from tests.speech_samples import say, wav_file
from tests.turn_set import broken_off
from tests.voice_models import whisper_tiny
from voxbridge.config.model import SpeechConfig, VoiceConfig
from voxbridge.voice.models import whisper_at_hand
from voxbridge.voice.providers import open_providers
from voxbridge.voice.unfinished import SoFar, goes_on
from voxbridge.voice.whisper_stt import WhisperSTT

# What pocketsphinx made of the first (issue 20): "what is a cubicle and ready".
SENTENCES = [
    "what is the capital of France",
    "can you tell me about the trains to the coast tomorrow morning",
    "how far is it from London to Paris",
]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


async def test_whisper_hears_what_was_said() -> None:
    stt = WhisperSTT(whisper_tiny())
    for sentence in SENTENCES:
        assert words(await stt.transcribe(say(sentence))) == words(sentence)


async def test_sounds_that_are_not_speech_give_no_words() -> None:
    stt = WhisperSTT(whisper_tiny())
    rng = np.random.default_rng(1)
    burst = rng.normal(0, 0.3, 4000) * np.hanning(4000)  # a cough-like burst of noise
    noise = np.concatenate([np.zeros(8000), burst, np.zeros(8000)])
    assert await stt.transcribe((noise * 20000).astype("<i2").tobytes()) == ""
    assert await stt.transcribe(bytes(32000)) == ""


async def test_the_model_loads_once_and_runs_off_the_event_loop() -> None:
    a, b = WhisperSTT(whisper_tiny()), WhisperSTT(whisper_tiny())
    await a.warm()
    assert a._model() is b._model()  # one model in the process, shared
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await trio.lowlevel.checkpoint()

    speech = say(SENTENCES[1])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        texts = [await a.transcribe(speech), await b.transcribe(speech)]
        done = True
    assert texts[0] == texts[1]
    assert ticks > 20  # the loop went on while Whisper worked (on the loop it would be 1)


async def test_long_speech_is_transcribed_across_whisper_windows() -> None:
    stt = WhisperSTT(whisper_tiny())
    speech = b"".join(say(SENTENCES[0]) for _ in range(11))  # about 36 s
    text = words(await stt.transcribe(speech))
    assert text.count("france") >= 10


async def test_so_far_tells_the_words_whisper_is_sure_of() -> None:
    stt = WhisperSTT(whisper_tiny())
    for sentence in SENTENCES:  # clear speech, finished: sure of every word
        speech = say(sentence)
        text, sure = await stt.so_far(speech)
        assert text == sure == await stt.transcribe(speech)
    # Broken off at a thinking pause, Whisper often finishes the sentence with a word of its
    # own ("a table for ... it."): the words it is sure of leave it out, and tell more often
    # that the sentence goes on.
    heard = [await stt.so_far(pcm) for pcm in broken_off()]
    for text, sure in heard:
        assert sure == text or words(sure) == words(text)[:-1], (text, sure)
    assert sum(sure != text for text, sure in heard) >= len(heard) // 4
    assert sum(SoFar(*h).goes_on for h in heard) > sum(goes_on(text) for text, _ in heard)


async def test_offline_takes_whisper_when_its_model_is_at_hand(tmp_path: Path) -> None:
    models = tmp_path / "models"
    async with httpx.AsyncClient() as http:
        plain = await open_providers(VoiceConfig(), http, models)
        assert plain.stt.name == "offline"  # pocketsphinx: nothing at hand, nothing fetched
        assert not models.exists()
        (models / "whisper").mkdir(parents=True)
        (models / "whisper" / "tiny.en").symlink_to(whisper_tiny())  # as a download leaves it
        assert whisper_at_hand("tiny.en", models) is not None
        found = await open_providers(VoiceConfig(), http, models)
        assert found.stt.name == "whisper"
        given = VoiceConfig(stt=SpeechConfig(provider="whisper", model=str(whisper_tiny())))
        assert (await open_providers(given, http, tmp_path / "elsewhere")).stt.name == "whisper"


async def test_a_model_that_cannot_be_fetched_says_what_to_do(tmp_path: Path) -> None:
    llm = FakeLLM(Plan([{"reply": "Hi."}]))
    with trio.socket.socket() as closed:  # a port where nothing listens: no network is used
        await closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        write(
            tmp_path,
            "helper.yaml",
            f"llm: {{base_url: '{llm.base_url}/v1', model: m}}\n"
            "voice: {stt: {provider: whisper, model: base.en}}\n",
        )
        wav_file(tmp_path / "q.wav", say("hello there"))
        env = clean_env() | {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_ETAG_TIMEOUT": "2"}
        done = await trio.run_process(
            [sys.executable, "-m", "voxbridge", "talk", "helper", "--in", "q.wav"],
            cwd=tmp_path,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        nursery.cancel_scope.cancel()
    out = subprocess.CompletedProcess(done.args, done.returncode, "", done.stderr.decode())
    _captured.append(out.stderr)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert f"downloading Systran/faster-whisper-base.en from http://127.0.0.1:{port}" in out.stderr
    assert (
        f"the Whisper model 'base.en' could not be downloaded from http://127.0.0.1:{port}"
        in out.stderr
    )
    assert "or set voice.stt.model to a local CTranslate2 model directory" in out.stderr


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        ("huge.en", "'huge.en' is neither a Whisper size (tiny.en, tiny,"),
        ("/nonexistent/model", "'/nonexistent/model': no such directory"),
    ],
)
async def test_a_wrong_model_name_is_explained(tmp_path: Path, model: str, problem: str) -> None:
    from voxbridge.voice.speech import SpeechError

    config = VoiceConfig(stt=SpeechConfig(provider="whisper", model=model))
    async with httpx.AsyncClient() as http:
        with pytest.raises(SpeechError, match=re.escape(problem)):
            await open_providers(config, http, tmp_path)
