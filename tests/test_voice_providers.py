"""Speech providers against real servers on 127.0.0.1 (and the real offline engines)."""

from __future__ import annotations

import io
import wave

import httpx
import pytest
import trio

from tests.fake_brains import Plan, start_fake
from tests.fake_speech import FakeOpenAIAudio, FakeWyoming
from tests.speech_samples import say
from voxbridge import Secret
from voxbridge.config.model import SpeechConfig
from voxbridge.voice.audio import RATE
from voxbridge.voice.espeak_tts import EspeakTTS
from voxbridge.voice.openai_audio import OpenAISTT, OpenAITTS
from voxbridge.voice.speech import SpeechError
from voxbridge.voice.sphinx_stt import SphinxSTT
from voxbridge.voice.wyoming import WyomingSTT, WyomingTTS


async def collect(tts: OpenAITTS | WyomingTTS | EspeakTTS, text: str) -> list[bytes]:
    pieces: list[bytes] = []

    async def keep(pcm: bytes) -> None:
        pieces.append(pcm)

    await tts.synthesize(text, keep)
    return pieces


def openai(base: str, **kw: object) -> SpeechConfig:
    settings: dict[str, object] = {"provider": "openai", "base_url": base + "/v1", "model": "m"}
    return SpeechConfig(**(settings | kw))  # type: ignore[arg-type]


async def test_openai_transcription_sends_a_wav(nursery: trio.Nursery) -> None:
    fake = FakeOpenAIAudio(stt=Plan([{"text": "turn it up"}]))
    await start_fake(nursery, fake)  # type: ignore[arg-type]
    async with httpx.AsyncClient() as http:
        stt = OpenAISTT(openai(fake.base_url, api_key=Secret("sk-stt"), language="en"), http)
        assert await stt.transcribe(b"\x01\x00" * RATE) == "turn it up"
    (upload,) = fake.uploads
    assert (upload["model"], upload["language"], upload["filename"]) == ("m", "en", "utterance.wav")
    with wave.open(io.BytesIO(upload["audio"])) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (
            RATE,
            1,
            2,
            RATE,
        )
    assert fake.headers[0]["authorization"] == "Bearer sk-stt"


async def test_openai_speech_streams_pcm(nursery: trio.Nursery) -> None:
    fake = FakeOpenAIAudio(tts=Plan([{"seconds": 1.0, "chunk_delay": 0.05}]))
    await start_fake(nursery, fake)  # type: ignore[arg-type]
    async with httpx.AsyncClient() as http:
        tts = OpenAITTS(openai(fake.base_url, voice="af_bella", speed=1.1), http)
        assert tts.rate == 24_000
        pieces = await collect(tts, "Hello there.")
    assert len(pieces) > 5  # handed on as it came, not all at the end
    assert all(len(p) % 2 == 0 for p in pieces)  # whole samples, though the server split them
    assert sum(len(p) for p in pieces) == 2 * 24_000
    (asked,) = [r for r in fake.requests if r["kind"] == "tts"]
    assert asked == {
        "kind": "tts",
        "model": "m",
        "input": "Hello there.",
        "voice": "af_bella",
        "response_format": "pcm",
        "speed": 1.1,
    }


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"status": 401}], r"refused: HTTP 401 .*Check its api_key"),
        ([{"status": 503}], r"HTTP 503 \(after 3 tries\)"),
        ([{"json": {"error": "use mp3"}}], r"sent application/json, not audio"),
        ([{"hang": True}], r"no answer within 0.5s"),
    ],
)
async def test_openai_speech_failures(
    nursery: trio.Nursery, steps: list[dict[str, object]], message: str
) -> None:
    fake = FakeOpenAIAudio(tts=Plan(steps))
    await start_fake(nursery, fake)  # type: ignore[arg-type]
    async with httpx.AsyncClient() as http:
        tts = OpenAITTS(openai(fake.base_url, api_key=Secret("sk-secret-tts"), timeout=0.5), http)
        with pytest.raises(SpeechError, match=message) as info:
            await collect(tts, "hi")
    assert "sk-secret-tts" not in str(info.value)


async def test_openai_transcription_failures(nursery: trio.Nursery) -> None:
    fake = FakeOpenAIAudio(stt=Plan([{"status": 500}, {"status": 500}, {"text": "third time"}]))
    await start_fake(nursery, fake)  # type: ignore[arg-type]
    async with httpx.AsyncClient() as http:
        stt = OpenAISTT(openai(fake.base_url), http)
        assert await stt.transcribe(bytes(3200)) == "third time"  # 5xx retried
        fake.stt = Plan([{"status": 404}])
        with pytest.raises(SpeechError, match=r"HTTP 404 .*is the model 'm' there"):
            await stt.transcribe(bytes(3200))
        unreachable = OpenAISTT(openai("http://127.0.0.1:9", timeout=1), http)
        with pytest.raises(SpeechError, match=r"http://127.0.0.1:9/v1: cannot reach it"):
            await unreachable.transcribe(bytes(3200))


async def test_wyoming_transcription_and_speech() -> None:
    with FakeWyoming(transcript="lights on", rate=16_000, channels=2).serving() as fake:
        config = SpeechConfig(provider="wyoming", uri=fake.uri, language="en")
        assert await WyomingSTT(config).transcribe(b"\x01\x00" * 8000) == "lights on"
        kinds = [kind for kind, _, _ in fake.received]
        assert kinds[:2] == ["transcribe", "audio-start"] and kinds[-1] == "audio-stop"
        assert sum(size for kind, _, size in fake.received if kind == "audio-chunk") == 16_000
        tts = WyomingTTS(SpeechConfig(provider="wyoming", uri=fake.uri, voice="amy"))
        pieces = await collect(tts, "Hello.")
        # 0.4 s of stereo 16 kHz became mono at the rate the session was promised (22,050).
        assert tts.rate == 22_050
        assert abs(sum(len(p) for p in pieces) / 2 / 22_050 - 0.4) < 0.01
        assert ("synthesize", {"text": "Hello.", "voice": {"name": "amy"}}, 0) in fake.received


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("close", "closed the connection"),
        ("garbage", "does not speak Wyoming"),
        ("hang", "no answer within 0.5s"),
    ],
)
async def test_wyoming_failures(mode: str, message: str) -> None:
    with FakeWyoming(mode=mode).serving() as fake:
        config = SpeechConfig(provider="wyoming", uri=fake.uri, timeout=0.5)
        with pytest.raises(SpeechError, match=message):
            await WyomingSTT(config).transcribe(bytes(3200))
    with pytest.raises(
        SpeechError, match=r"cannot reach the Wyoming server at tcp://127\.0\.0\.1:9"
    ):
        await WyomingTTS(SpeechConfig(provider="wyoming", uri="tcp://127.0.0.1:9")).synthesize(
            "hi",
            collect,  # type: ignore[arg-type]
        )


async def test_the_offline_engines_hear_what_they_say() -> None:
    tts = EspeakTTS()
    pieces = await collect(tts, "What is the weather like today?")
    assert tts.rate == 22_050 and 1.0 < sum(len(p) for p in pieces) / 2 / tts.rate < 3.0
    # pocketsphinx on espeak's voice is rough: a keyword, never the exact text.
    heard = await SphinxSTT().transcribe(say("what is the weather like today"))
    assert "weather" in heard
    with pytest.raises(SpeechError, match="no voice 'xx-nope'"):
        await collect(EspeakTTS("xx-nope"), "hi")
