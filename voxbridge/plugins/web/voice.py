"""``WS /api/agents/<agent-id>/voice``: a spoken conversation from the browser (SPEC §11).

The client says hello first — ``{"type": "hello", "sample_rate": R, "format": "s16le",
"channels": 1}`` with R from 8 to 48 kHz, and optionally ``"conversation": "<id>"`` to speak in
a stored conversation (the chat page's, so text and voice share one) — and the server answers
with the rate of the audio it will send. Then binary messages are raw PCM both ways, and the
server's JSON events tell what is going on: ``transcript``, ``delta``, ``interrupted`` (drop
queued audio), ``done``, ``error``.

What comes in is bounded: an oversized frame is refused with an error event; frames the
pipeline cannot take fast enough are dropped and counted. What goes out is bounded too: for a
client that stops reading, audio is dropped (oldest first) and counted, never queued without
end. A bad hello or a bad frame gets an error event and the connection goes on.
"""

from __future__ import annotations

import collections
import json
from typing import TYPE_CHECKING, Any

import trio

from ...voice.audio import MAX_RATE, MIN_RATE, RATE, Resampler
from ...voice.output import Pacer
from ...voice.providers import open_providers
from ...voice.session import Speaker, VoiceSession
from ...voice.speech import SpeechError
from .chat import CONVERSATION_ID, new_conversation_id

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

    from .actor import WebService

__all__ = ["MAX_FRAME", "serve_voice"]

MAX_FRAME = 192_000  # bytes: one second of 48 kHz audio is plenty for one message
_INBOX = 100  # 16 kHz chunks waiting for the VAD (about 2 s)
_OUT_AUDIO = 50  # frames waiting to be written to a slow client (1 s)
_OUT_EVENTS = 200
_HELLO = {"type": "hello", "sample_rate": 16000, "format": "s16le", "channels": 1}


class _WebOutput:
    """The session's sound and events in order, written by one task. For a client that does
    not keep up, the oldest audio is dropped (and counted) rather than piled up."""

    def __init__(self, websocket: WebSocket, rate: int, count: Any) -> None:
        self.rate = rate
        self._websocket = websocket
        self._count = count
        self._pacer = Pacer()
        self._queue: collections.deque[bytes | str] = collections.deque()
        self._audio = 0  # how many queued items are audio
        self._wake = trio.Event()

    def _push(self, item: bytes | str) -> None:
        self._queue.append(item)
        self._wake.set()

    async def play(self, frame: bytes) -> None:
        await self._pacer.wait()
        if self._audio >= _OUT_AUDIO:
            oldest = next(item for item in self._queue if isinstance(item, bytes))
            self._queue.remove(oldest)
            self._audio -= 1
            self._count("voice_frames_dropped", 1)
        self._audio += 1
        self._push(frame)

    async def clear(self) -> None:
        self._queue = collections.deque(i for i in self._queue if isinstance(i, str))
        self._audio = 0
        self._pacer.reset()

    async def event(self, event: dict[str, Any]) -> None:
        if len(self._queue) - self._audio >= _OUT_EVENTS:
            self._count("voice_events_dropped", 1)
            return
        self._push(json.dumps(event))
        await trio.lowlevel.checkpoint()

    async def write(self) -> None:
        """Send what is queued, in order."""
        while True:
            while self._queue:
                item = self._queue.popleft()
                if isinstance(item, bytes):
                    self._audio -= 1
                    await self._websocket.send_bytes(item)
                else:
                    await self._websocket.send_text(item)
            self._wake = trio.Event()
            await self._wake.wait()


def _hello(event: Any) -> tuple[int, str] | str:
    """The client's sample rate and conversation id (a new one if it names none), or what is
    wrong with its hello."""
    if not isinstance(event, dict) or event.get("type") != "hello":
        return f"say hello first: {json.dumps(_HELLO)}"
    rate, fmt, channels = event.get("sample_rate"), event.get("format"), event.get("channels", 1)
    if fmt != "s16le":
        return f"format {fmt!r} is not supported: send s16le (16-bit little-endian PCM)"
    if channels != 1:
        return f"{channels} channels are not supported: send mono (channels: 1)"
    if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_RATE <= rate <= MAX_RATE:
        return f"sample_rate {rate!r} is not supported: send {MIN_RATE} to {MAX_RATE} (Hz)"
    conversation = event.get("conversation")
    if conversation is None:
        return rate, new_conversation_id()
    if not isinstance(conversation, str) or not CONVERSATION_ID.match(conversation):
        return '"conversation" must be 1 to 64 of A-Z, a-z, 0-9, _ and -'
    return rate, conversation


async def serve_voice(websocket: WebSocket, service: WebService) -> None:
    """Hold one voice connection until the client leaves."""
    from starlette.websockets import WebSocketDisconnect

    ctx = service.ctx
    await websocket.accept()

    async def error(message: str) -> None:
        await websocket.send_text(json.dumps({"type": "error", "message": message}))

    voice = ctx.agent.voice
    if voice is None:
        await error(
            f"agent '{ctx.agent_id}' has no voice: add a voice section to {ctx.agent.file} "
            "(voice: {} uses the offline engines)"
        )
        await websocket.close(code=4404)
        return
    hello: tuple[int, str] | None = None
    try:
        while hello is None:  # until a good hello
            frame = await websocket.receive()
            if frame["type"] == "websocket.disconnect":
                return
            if frame.get("text") is None:
                await error("say hello (JSON) before sending audio")
                continue
            try:
                found = _hello(json.loads(frame["text"]))
            except ValueError:
                found = "not JSON: say hello first"
            if isinstance(found, str):
                await error(found)
            else:
                hello = found
        rate, conversation_id = hello
        place = f"web:{conversation_id}"
        try:
            providers = await open_providers(voice, ctx.fleet.http(), ctx.state_dir / "models")
        except SpeechError as exc:
            ctx.log.error("❌ %s", exc)
            await error(str(exc))
            await websocket.close(code=1011)
            return
        output = _WebOutput(websocket, providers.tts.rate, ctx.count)
        await websocket.send_text(
            json.dumps(
                {"type": "hello", "sample_rate": output.rate, "format": "s16le", "channels": 1}
            )
        )
        session = VoiceSession(
            config=voice,
            stt=providers.stt,
            tts=providers.tts,
            vad=providers.vad,
            think=ctx.think,
            output=output,
            conversation=await ctx.memory.conversation(place),
            history=lambda: ctx.agent.history,
            session_id=place,
            speaker=Speaker("web", "web", person=place),
            observe=ctx.observe,
            count=ctx.count,
            logger=ctx.log,
            smart_turn=providers.smart_turn,
        )
        frames_send, frames = trio.open_memory_channel[bytes](_INBOX)
        resample = Resampler(rate, RATE)
        with service.voice_session():  # the actor stopping ends the session
            async with trio.open_nursery() as nursery:
                nursery.start_soon(output.write)
                nursery.start_soon(session.run, frames)
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    data = message.get("bytes")
                    if data is None:
                        await output.event(_after_hello(message.get("text"), rate))
                        continue
                    if len(data) > MAX_FRAME:
                        await output.event(
                            {
                                "type": "error",
                                "message": f"audio message too large ({len(data):,} bytes; "
                                f"at most {MAX_FRAME:,}): send 20-100 ms per message",
                            }
                        )
                        ctx.count("voice_frames_dropped", 1)
                        continue
                    if len(data) % 2:
                        # Half a sample: each message must hold whole ones. Drop the stray
                        # byte rather than shift every sample after it.
                        data = data[:-1]
                        ctx.count("voice_bytes_dropped", 1)
                    try:
                        frames_send.send_nowait(resample(data))
                    except trio.WouldBlock:
                        ctx.count("voice_frames_dropped", 1)
                nursery.cancel_scope.cancel()
    except WebSocketDisconnect:
        return
    if service.stopped:
        # Whether it comes back (a restart, an edit) or not (removed, web turned off) is not
        # known yet here: 1012 (service restart) tells the client to try again and see.
        with trio.move_on_after(1) as cleanup:
            cleanup.shield = True
            await error(
                f"agent '{ctx.agent_id}' stopped its voice (a restart, or its file changed or "
                "was removed): reconnect to talk again"
            )
            await websocket.close(code=1012)


def _after_hello(text: str | None, rate: int) -> dict[str, Any]:
    """The error event for a JSON message after the hello: audio is all the client sends."""
    try:
        event = json.loads(text or "")
    except ValueError:
        event = None
    kind = event.get("type") if isinstance(event, dict) else None
    if kind == "hello":
        why = f"hello was said already (sample_rate {rate}): reconnect to change it"
    elif kind is not None:
        why = f"unknown type {kind!r}"
    else:
        why = "not a JSON event with a type"
    return {"type": "error", "message": f"{why}; after the hello, send audio as binary messages"}
