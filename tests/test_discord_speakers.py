"""A speaker's Discord packets become 16 kHz frames: order restored, losses recovered, silence
made in real time after a burst (mock clock), and a leaving speaker's words finished."""

from __future__ import annotations

import disnake.opus
import numpy as np
import pytest
import trio
import trio.testing

from voxbridge.plugins.discord import opus
from voxbridge.plugins.discord.rtp import SILENCE, Packet
from voxbridge.plugins.discord.speakers import IDLE_AFTER, REORDER_WAIT, SpeakerStream
from voxbridge.voice.audio import FRAME_BYTES

TAIL = 0.5


def _burst(count: int, first_seq: int = 100) -> list[Packet]:
    """``count`` 20 ms Opus frames of a rising tone, then Discord's five silence frames."""
    opus.load()
    encoder = disnake.opus.Encoder()
    packets = []
    for i in range(count):
        t = np.arange(960) + 960 * i
        tone = (np.sin(2 * np.pi * (300 + 5 * i) * t / 48_000) * 8000).astype(np.int16)
        payload = encoder.encode(np.repeat(tone, 2).tobytes(), 960)
        packets.append(Packet((first_seq + i) % 65536, 960 * i, 7, payload))
    for j in range(5):
        packets.append(Packet((first_seq + count + j) % 65536, 960 * (count + j), 7, SILENCE))
    return packets


async def _run(stream: SpeakerStream, send: trio.MemorySendChannel[bytes]) -> None:
    async with send:
        await stream.run()


async def _play(
    packets: list[Packet], order: list[int] | None = None, *, close_after: int | None = None
) -> tuple[list[bytes], SpeakerStream]:
    """Push ``packets`` (in ``order``) 20 ms apart; the frames out, until the tail is done."""
    send, receive = trio.open_memory_channel[bytes](1000)
    stream = SpeakerStream(send.send, tail=TAIL)
    frames: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_run, stream, send)
        for n, index in enumerate(order if order is not None else range(len(packets))):
            if n == close_after:
                break
            stream.push(packets[index])
            await trio.sleep(0.02)
        if close_after is not None:
            stream.close()
        else:
            await trio.sleep(TAIL + 0.5)
            stream.close()
        async for frame in receive:
            frames.append(frame)
    return frames, stream


def _voiced(frames: list[bytes]) -> list[bytes]:
    return [f for f in frames if np.abs(np.frombuffer(f, np.int16)).max() > 200]


async def test_in_order_packets_pass_through_and_silence_follows_in_real_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    packets = _burst(50)
    frames, stream = await _play(packets)
    assert stream.counters["recovered"] == stream.counters["late"] == 0
    assert all(len(f) == FRAME_BYTES for f in frames)
    assert 48 <= len(_voiced(frames)) <= 52  # the codec's delay smears the edges
    # The burst (55 packets), then the tail of silence made while time passed, then the tail
    # again when the speaker's stream ends.
    assert len(frames) == pytest.approx(55 + 2 * TAIL / 0.02, abs=3)


async def test_reordered_packets_come_out_as_if_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    packets = _burst(40)
    straight, _ = await _play(packets)
    swapped = list(range(len(packets)))
    for i in range(3, 38, 7):  # swap neighbours, as UDP does now and then
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    frames, stream = await _play(packets, swapped)
    assert stream.counters["recovered"] == stream.counters["late"] == 0
    assert frames == straight


async def test_a_lost_packet_is_recovered_and_a_late_one_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    packets = _burst(40)
    order = [i for i in range(len(packets)) if i != 10]
    frames, stream = await _play(packets, order)
    assert stream.counters["recovered"] == 1
    assert len(_voiced(frames)) >= 44 - 5  # no hole: the lost frame was filled
    straight, _ = await _play(packets)
    assert len(frames) == len(straight)

    # Arriving after its wait was over, the packet's place was filled already.
    late = [*range(10), *range(11, 14), 10, *range(14, len(packets))]
    _, stream = await _play(packets, late)
    assert REORDER_WAIT < 3 * 0.02
    assert (stream.counters["recovered"], stream.counters["late"]) == (1, 1)


async def test_sequence_numbers_wrap(autojump_clock: trio.testing.MockClock) -> None:
    frames, stream = await _play(_burst(30, first_seq=65_520))
    assert stream.counters["recovered"] == stream.counters["late"] == 0
    assert len(_voiced(frames)) >= 25


async def test_a_pause_is_silence_then_sleep_and_the_next_burst_starts_afresh(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, receive = trio.open_memory_channel[bytes](1000)
    stream = SpeakerStream(send.send, tail=TAIL)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_run, stream, send)
        for packet in _burst(10, first_seq=10):
            stream.push(packet)
            await trio.sleep(0.02)
        await trio.sleep(IDLE_AFTER + TAIL + 5.0)  # long past the tail: asleep
        made = receive.statistics().current_buffer_used
        assert made == pytest.approx(15 + TAIL / 0.02, abs=3)
        for packet in _burst(10, first_seq=5000):  # a new burst, far ahead: no concealment
            stream.push(packet)
            await trio.sleep(0.02)
        stream.close()
    assert stream.counters["recovered"] == 0


async def test_a_speaker_leaving_mid_word_has_their_words_finished_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    before = trio.current_time()
    frames, _ = await _play(_burst(30), close_after=20)
    # 20 packets in 0.4 s, then the tail at once (not in real time).
    assert trio.current_time() - before == pytest.approx(0.4, abs=0.05)
    assert len(frames) == pytest.approx(20 + TAIL / 0.02, abs=2)
