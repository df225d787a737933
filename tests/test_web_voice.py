"""The voice socket (SPEC §11) through the real runtime and status server: real offline engines,
espeak-ng speech made at test time, a streaming LLM on 127.0.0.1 — and the page in Chromium
with a fake microphone."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests.browser import ARGS, CHROMIUM, needs_chromium
from tests.fake_brains import FakeLLM, Plan, start_fake
from tests.fake_speech import FakeOpenAIAudio
from tests.runtime_helpers import options, wait_state, write
from tests.speech_samples import say, wav_file
from tests.voice_models import whisper_tiny
from voxbridge import testing
from voxbridge.runtime.fleet import Runtime
from voxbridge.runtime.run import serve
from voxbridge.runtime.state import ActorState
from voxbridge.voice.audio import FRAME_BYTES

HELLO = {"type": "hello", "sample_rate": 16000, "format": "s16le", "channels": 1}
QUESTION = "what is the weather like today"


async def start(nursery: trio.Nursery, tmp_path: Path, llm: FakeLLM, voice: str = "{}") -> Runtime:
    write(
        tmp_path,
        "helper.yaml",
        f"name: Helper\nllm: {{base_url: '{llm.base_url}/v1', model: m, timeout: 5s}}\n"
        f"voice: {voice}\nplugins:\n  web: {{}}\n",
    )
    opts = options(tmp_path, listen="127.0.0.1:0")
    rt: Runtime = await nursery.start(
        lambda task_status: serve(opts, plugins=testing.plugins(), task_status=task_status)
    )
    await wait_state(rt, ("helper", "web"), ActorState.RUNNING)
    return rt


def voice_url(rt: Runtime, agent: str = "helper") -> str:
    assert rt.status_url is not None
    return rt.status_url.replace("http", "ws", 1) + f"/api/agents/{agent}/voice"


class Caller:
    """A client of the voice socket: speaks in real time, keeps what comes back."""

    def __init__(self, ws: WebSocketConnection, nursery: trio.Nursery | None = None) -> None:
        self.ws = ws
        self.nursery = nursery
        self.events: list[dict[str, Any]] = []
        self.audio = 0  # bytes of agent audio received
        self._changed = trio.Event()

    def listen(self, *, microphone: bool = True) -> None:
        """Read what comes back, and keep the microphone open: silence, or what is said."""
        assert self.nursery is not None
        self._speech: list[bytes] = []
        self.nursery.start_soon(self.read)
        if microphone:
            self.nursery.start_soon(self._microphone)

    def say(self, pcm: bytes) -> None:
        """Speak ``pcm`` into the open microphone (after what is being said already)."""
        self._speech.append(pcm)

    async def _microphone(self) -> None:
        while True:
            await self.speak(self._speech.pop(0) if self._speech else bytes(FRAME_BYTES))

    async def hello(self, **changes: Any) -> dict[str, Any]:
        hello = HELLO | changes
        self.frame = 2 * hello["sample_rate"] // 50  # 20 ms
        await self.ws.send_message(json.dumps(hello))
        return json.loads(await self.ws.get_message())

    async def read(self) -> None:
        while True:
            message = await self.ws.get_message()
            if isinstance(message, bytes):
                self.audio += len(message)
            else:
                self.events.append(json.loads(message))
            self._changed.set()
            self._changed = trio.Event()

    async def speak(self, pcm: bytes) -> None:
        """Send ``pcm`` (at the rate of the hello) in 20 ms messages, in real time."""
        frame = getattr(self, "frame", FRAME_BYTES)
        for i in range(0, len(pcm), frame):
            await self.ws.send_message(pcm[i : i + frame])
            await trio.sleep(0.02)

    async def until(self, kind: str, limit_s: float = 20, count: int = 1) -> dict[str, Any]:
        with trio.fail_after(limit_s):
            while len([e for e in self.events if e["type"] == kind]) < count:
                await self._changed.wait()
        return [e for e in self.events if e["type"] == kind][count - 1]


@asynccontextmanager
async def calling(url: str, **kw: Any) -> AsyncIterator[Caller]:
    """A voice connection whose reader lives as long as it does."""
    async with open_websocket_url(url, **kw) as ws, trio.open_nursery() as nursery:
        yield Caller(ws, nursery)
        nursery.cancel_scope.cancel()


async def test_a_spoken_question_gets_a_spoken_answer(tmp_path: Path) -> None:
    llm = FakeLLM(
        Plan([{"chunks": ["Sunny and warm. ", "A fine day for a walk."], "chunk_delay": 0.1}])
    )
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        rt = await start(nursery, tmp_path, llm)
        async with calling(voice_url(rt)) as caller:
            # The chat page's conversation: text and voice share one (SPEC §14).
            answer = await caller.hello(conversation="page-1")
            assert answer == {
                "type": "hello",
                "sample_rate": 22050,
                "format": "s16le",
                "channels": 1,
            }
            caller.listen()
            caller.say(say(QUESTION))
            transcript = await caller.until("transcript")
            assert "weather" in transcript["text"] and transcript["final"] is True
            await caller.until("done")
            deltas = "".join(e["text"] for e in caller.events if e["type"] == "delta")
            assert deltas == "Sunny and warm. A fine day for a walk."
            assert caller.audio > 2 * 22050  # more than a second of speech came back
            assert llm.requests[0]["messages"][-1]["content"] == transcript["text"]
        # What was said and heard is in the page's conversation, as the chat socket shows it.
        async with open_websocket_url(voice_url(rt).replace("/voice", "/chat")) as ws:
            await ws.send_message(json.dumps({"type": "hello", "conversation": "page-1"}))
            history = json.loads(await ws.get_message())
        assert history["turns"] == [
            {"role": "user", "text": transcript["text"]},
            {"role": "assistant", "text": "Sunny and warm. A fine day for a walk."},
        ]
        metrics = rt.table.histograms
        for stage in ("voice_stt", "voice_think", "voice_first_audio"):
            assert metrics[stage].n == 1, stage
        assert metrics["voice_tts"].n == 2  # one per sentence
        async with httpx.AsyncClient(base_url=rt.status_url or "") as http:
            text = (await http.get("/metrics")).text
        assert "voxbridge_voice_first_audio_seconds_count 1.0" in text
        assert (
            'voxbridge_actor_counter_total{agent="helper",counter="voice_turns",plugin="web"} 1.0'
            in text
        )
        assert 'voxbridge_voice_sessions{agent="helper",plugin="web"} 0.0' in text
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("hello", "error"),
    [
        ({"sample_rate": 96000}, "sample_rate 96000 is not supported: send 8000 to 48000"),
        ({"sample_rate": "16k"}, "sample_rate '16k' is not supported"),
        ({"format": "f32le"}, "format 'f32le' is not supported: send s16le"),
        ({"channels": 2}, "2 channels are not supported: send mono"),
        ({"type": "start"}, "say hello first"),
    ],
)
async def test_a_bad_hello_is_explained_and_can_be_mended(
    tmp_path: Path, hello: dict[str, Any], error: str
) -> None:
    llm = FakeLLM()
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        rt = await start(nursery, tmp_path, llm)
        async with open_websocket_url(voice_url(rt)) as ws:
            await ws.send_message(b"\x00" * 640)  # audio before any hello
            assert (
                "say hello (JSON) before sending audio"
                in json.loads(await ws.get_message())["message"]
            )
            await ws.send_message(json.dumps(HELLO | hello))
            event = json.loads(await ws.get_message())
            assert event["type"] == "error" and error in event["message"]
            assert (await Caller(ws).hello(sample_rate=8000))["type"] == "hello"
        nursery.cancel_scope.cancel()


async def voice_sessions(rt: Runtime) -> list[str]:
    async with httpx.AsyncClient(base_url=rt.status_url or "") as http:
        text = (await http.get("/metrics")).text
    return [line for line in text.splitlines() if line.startswith("voxbridge_voice_sessions{")]


async def test_restarts_and_removals_end_sessions_in_words_and_count_them_right(
    tmp_path: Path,
) -> None:
    """Issue 21.4: after a restart with a voice socket open, voxbridge_voice_sessions went
    0 → -1 (each removal lowered it again), the socket closed with 1011 after an error saying
    the file "was removed or changed", and JSON after the hello was silently ignored."""
    llm = FakeLLM()
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        rt = await start(nursery, tmp_path, llm)
        path = tmp_path / "agents.d" / "helper.yaml"
        text = path.read_text()
        one = 'voxbridge_voice_sessions{agent="helper",plugin="web"} '
        for how in ("restart", "removal", "restart"):
            with trio.fail_after(20):  # the old code left JSON after the hello unanswered
                async with open_websocket_url(voice_url(rt)) as ws:
                    caller = Caller(ws)
                    await caller.hello()
                    for sent, said in (
                        (
                            json.dumps(HELLO),
                            "hello was said already (sample_rate 16000): reconnect to change it",
                        ),
                        ('{"type": "shout"}', "unknown type 'shout'"),
                        ("[1]", "not a JSON event with a type"),
                    ):
                        await ws.send_message(sent)
                        event = json.loads(await ws.get_message())
                        assert event == {
                            "type": "error",
                            "message": f"{said}; after the hello, send audio as binary messages",
                        }
                    assert await voice_sessions(rt) == [one + "1.0"]
                    if how == "restart":
                        async with httpx.AsyncClient(base_url=rt.status_url or "") as http:
                            await http.post("/api/agents/helper/plugins/web/restart")
                    else:
                        path.unlink()
                        await rt.reconciler.apply_paths([path])
                    event = json.loads(await ws.get_message())
                    assert event["message"] == (
                        "agent 'helper' stopped its voice (a restart, or its file changed or was "
                        "removed): reconnect to talk again"
                    )
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.get_message()
                    # trio-websocket leaves a client's TCP stream open when the server closes
                    # first (a ResourceWarning later): close it here.
                    await ws._stream.aclose()
                    assert closed.value.reason.code == 1012  # service restart: try again
            if how == "removal":
                path.write_text(text)
                await rt.reconciler.apply_paths([path])
            await wait_state(rt, ("helper", "web"), ActorState.RUNNING)
            # Back to 0 (a new actor after a removal has counted nothing yet: no series).
            assert await voice_sessions(rt) == ([one + "0.0"] if how == "restart" else [])
        nursery.cancel_scope.cancel()


async def test_garbage_and_huge_frames_get_errors_and_the_session_goes_on(tmp_path: Path) -> None:
    llm = FakeLLM(Plan([{"reply": "Still listening."}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        rt = await start(nursery, tmp_path, llm)
        async with calling(voice_url(rt)) as caller:
            ws = caller.ws
            await caller.hello(sample_rate=48000)
            caller.listen(microphone=False)
            await ws.send_message(b"\x07" * (10 * 1024 * 1024))  # 10 MB in one message
            error = await caller.until("error")
            assert "audio message too large (10,485,760 bytes" in error["message"]
            await ws.send_message(bytes(range(255)))  # odd-sized noise: taken, no harm
            await caller.speak(say(QUESTION, rate=48000))
            await caller.speak(bytes(2 * 48000))
            assert "weather" in (await caller.until("transcript"))["text"]
            await caller.until("done")
        assert rt.table.counters(("helper", "web"))["voice_frames_dropped"] >= 1
        nursery.cancel_scope.cancel()


async def test_a_client_that_stops_reading_loses_audio_not_memory(tmp_path: Path) -> None:
    long = [f"This is sentence {n} of a long answer. " for n in range(30)]
    llm = FakeLLM(Plan([{"chunks": long}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        rt = await start(nursery, tmp_path, llm)
        async with open_websocket_url(voice_url(rt), message_queue_size=1) as ws:
            await Caller(ws).hello()
            await Caller(ws).speak(say(QUESTION))
            await Caller(ws).speak(bytes(FRAME_BYTES * 60))
            # This client reads nothing more: the server must not pile its audio up.
            with trio.fail_after(40):  # counters publish no events: look now and then
                while rt.table.counters(("helper", "web")).get("voice_frames_dropped", 0) < 20:  # noqa: ASYNC110
                    await trio.sleep(0.2)
            # ...and another session is served meanwhile.
            llm.plan = Plan([{"reply": "Hello to you."}])
            async with calling(voice_url(rt)) as caller:
                await caller.hello()
                caller.listen()
                caller.say(say(QUESTION))
                await caller.until("done", limit_s=30)
        nursery.cancel_scope.cancel()


async def test_a_provider_that_hangs_is_reported_and_the_session_survives(tmp_path: Path) -> None:
    llm = FakeLLM(Plan([{"reply": "Hi."}]))
    speech = FakeOpenAIAudio(tts=Plan([{"hang": True}] * 3 + [{"seconds": 0.5}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        await start_fake(nursery, speech)  # type: ignore[arg-type]
        tts = f"{{provider: openai, base_url: '{speech.base_url}/v1', model: kokoro, timeout: 1s}}"
        rt = await start(nursery, tmp_path, llm, voice=f"{{tts: {tts}}}")
        async with calling(voice_url(rt)) as caller:
            assert (await caller.hello())["sample_rate"] == 24000
            caller.listen()
            caller.say(say(QUESTION))
            error = await caller.until("error")
            assert "speech synthesis (openai) failed" in error["message"]
            assert "no answer within 1s" in error["message"]
            await caller.until("done")
            caller.say(say(QUESTION))
            await caller.until("done", count=2)  # the second time the server speaks
            assert caller.audio >= 2 * 24000 * 0.5
        nursery.cancel_scope.cancel()


async def test_an_agent_without_voice_says_how_to_add_it(tmp_path: Path) -> None:
    llm = FakeLLM()
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        write(tmp_path, "quiet.yaml", "name: Quiet\nplugins:\n  web: {}\n")
        rt = await start(nursery, tmp_path, llm)
        await wait_state(rt, ("quiet", "web"), ActorState.RUNNING)
        async with open_websocket_url(voice_url(rt, "quiet")) as ws:
            event = json.loads(await ws.get_message())
        assert event["type"] == "error" and "has no voice: add a voice section" in event["message"]
        nursery.cancel_scope.cancel()


@contextmanager
def talking_page(url: str, mic: Path, script: str | None = None) -> Iterator[Any]:
    """The chat page at ``url`` in Chromium, its microphone (playing ``mic``, looped) switched
    on; ``script`` runs in the page before its own."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                *ARGS,
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={mic}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        page = browser.new_page()
        if script:
            page.add_init_script(script)
        page.goto(url)
        page.wait_for_selector("#mic:not([hidden])", timeout=10_000)
        page.click("#mic")
        try:
            yield page
        finally:
            browser.close()


@needs_chromium
async def test_talking_to_the_page_with_a_microphone(tmp_path: Path) -> None:
    # The fake microphone plays the question, then silence, and loops: the second time round the
    # question comes while the agent is still answering, and must interrupt it.
    mic = wav_file(
        tmp_path / "mic.wav", say(QUESTION, rate=48000), bytes(2 * 48000 * 4), rate=48000
    )
    long = [f"Here is detail number {n} about the weather. " for n in range(25)]
    llm = FakeLLM(Plan([{"chunks": long, "chunk_delay": 0.05}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        rt = await start(nursery, tmp_path, llm)
        url = f"{rt.status_url}/chat/helper"

        def browse() -> dict[str, Any]:
            with talking_page(url, mic) as page:
                page.wait_for_function(
                    "window.voxbridgeVoice.transcripts.length > 0", timeout=30_000
                )
                page.wait_for_function("window.voxbridgeVoice.played > 10", timeout=30_000)
                page.wait_for_function("window.voxbridgeVoice.interrupted > 0", timeout=30_000)
                stats: dict[str, Any] = page.evaluate("window.voxbridgeVoice")
                stats["spoken"] = page.inner_text(".msg.user.spoken")
            return stats

        stats = await trio.to_thread.run_sync(browse)
        # Through Chromium's capture (echo cancellation, noise suppression, 48 kHz) pocketsphinx
        # hears espeak's voice roughly: some of the question's words, not all.
        heard = set(stats["transcripts"][0].split())
        assert len(heard & set(QUESTION.split())) >= 2, heard
        assert stats["spoken"] == stats["transcripts"][0]
        assert stats["sent"] > 50 and stats["played"] > 10 and stats["interrupted"] >= 1
        assert rt.table.counters(("helper", "web"))["voice_barge_ins"] >= 1
        nursery.cancel_scope.cancel()


# What the page asks getUserMedia for, seen from inside the page (SPEC §17: echo).
RECORD_CONSTRAINTS = """
window.askedFor = [];
const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = (constraints) => {
  window.askedFor.push(constraints);
  return real(constraints);
};
"""


@needs_chromium
async def test_a_backchannel_in_the_browser_pauses_the_answer_and_it_goes_on(
    tmp_path: Path,
) -> None:
    # The question; 2 s later, while the answer plays, "okay" (a listener's "go on"); then quiet.
    mic = wav_file(
        tmp_path / "mic.wav",
        say(QUESTION, rate=48000),
        bytes(2 * 48000 * 2),
        say("okay", rate=48000, pad=0.1),
        bytes(2 * 48000 * 12),
        rate=48000,
    )
    long = [f"Here is detail number {n} about the weather. " for n in range(25)]
    llm = FakeLLM(Plan([{"chunks": long, "chunk_delay": 0.05}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        rt = await start(nursery, tmp_path, llm, voice=f"{{stt: {{model: '{whisper_tiny()}'}}}}")
        url = f"{rt.status_url}/chat/helper"

        def browse() -> dict[str, Any]:
            with talking_page(url, mic, RECORD_CONSTRAINTS) as page:
                page.wait_for_function("window.voxbridgeVoice.resumed > 0", timeout=30_000)
                played = page.evaluate("window.voxbridgeVoice.played")
                page.wait_for_function(f"window.voxbridgeVoice.played > {played + 25}")
                stats: dict[str, Any] = page.evaluate("window.voxbridgeVoice")
                stats["askedFor"] = page.evaluate("window.askedFor")
            return stats

        stats = await trio.to_thread.run_sync(browse)
        nursery.cancel_scope.cancel()
    (asked,) = stats["askedFor"]
    for constraint in ("echoCancellation", "noiseSuppression", "autoGainControl"):
        assert asked["audio"][constraint] is True, asked
    assert "weather" in stats["transcripts"][0].lower()
    assert stats["transcripts"] == stats["transcripts"][:1]  # "okay" was no turn
    assert stats["paused"] == 1 and stats["resumed"] == 1 and stats["interrupted"] == 0
    counters = rt.table.counters(("helper", "web"))
    assert counters["voice_backchannels"] == 1 and "voice_barge_ins" not in counters
