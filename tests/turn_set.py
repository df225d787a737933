"""Labelled sets for turn-taking (SPEC §17): espeak-ng sentences, some finished, some broken
off by a thinking pause mid-sentence and then finished. Made at test time, never downloaded.

Two sets of different sentences, made the same way: :data:`LABELLED`, the one the design was
measured on while it was being made, and :data:`HELD_OUT`, written before that work began and
never tuned on — its figures are the honest ones for speech the design has not seen.

:func:`evaluate` runs a turn detector over each and reports, per item, whether it ended the
turn at the pause (a false cut-off for an unfinished one) and how long after the last voiced
sample it decided (for a finished one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import trio

from tests.speech_samples import say
from voxbridge.voice.audio import RATE
from voxbridge.voice.turns import TurnDetector, Utterance

FINISHED = [
    "What is the capital of France?",
    "Please tell me a joke about cats.",
    "How far is it from London to Paris?",
    "I would like to book a table for two.",
    "Can you turn off the lights in the kitchen?",
    "Thank you, that is all I needed.",
    "What time does the last train leave tonight?",
    "Remind me to call my mother tomorrow.",
    "Is it going to rain this weekend?",
    "Play some quiet music, please.",
    "How do I reset my password?",
    "That sounds great, let's do it.",
    "Where is the nearest pharmacy?",
    "Tell me about the history of Rome.",
    "I need a taxi to the airport.",
    "Can you spell that for me?",
    "What is seven times eight?",
    "Good night, see you tomorrow.",
    "Which movie won the prize last year?",
    "Cancel my meeting at noon.",
]

# (before the pause, after it): the pause falls where people stop to think.
UNFINISHED = [
    ("I would like to book a table for", "two people at eight."),
    ("Can you tell me about the", "trains to the coast?"),
    ("So I was thinking that maybe we could", "go to the cinema."),
    ("What is the weather going to be like in", "Berlin tomorrow?"),
    ("I need to buy some", "milk and bread."),
    ("Could you remind me to", "water the plants?"),
    ("The thing is that I really", "don't know what to choose."),
    ("Send a message to my", "brother saying I'm late."),
    ("How long does it take to get from", "here to the station?"),
    ("My favourite kind of music is", "jazz from the sixties."),
    ("I was wondering if you could help me with", "my homework."),
    ("Set an alarm for", "seven in the morning."),
    ("Turn the volume up to", "fifty percent."),
    ("Please add eggs and", "butter to my list."),
    ("Because the last time I went there it was", "closed."),
    ("Can you find me a recipe with", "chicken and rice?"),
    ("The name of the hotel was", "something like Grand Plaza."),
    ("I think the best option would be", "the morning flight."),
    ("Tell my boss that I will", "be there at ten."),
    ("What I really want to know is", "how much it costs."),
]

# Held out: the same construction, other sentences and other places to stop (some after a word
# that could end a sentence: a person may stop anywhere).
HELD_OUT_FINISHED = [
    "Where did I leave my keys?",
    "Turn on the radio, please.",
    "How many ounces are in a pound?",
    "Book a flight to Madrid for Friday.",
    "What is the population of Canada?",
    "Wake me up at six thirty.",
    "Who wrote the novel Dracula?",
    "Add a dentist appointment on Monday.",
    "I think I will stay home today.",
    "Could you read me the news?",
    "How do you say thank you in Spanish?",
    "Start a timer for ten minutes.",
    "The restaurant was closed when we arrived.",
    "What is the score of the game?",
    "Order more coffee beans.",
    "Yes, that works for me.",
    "Why is the sky blue?",
    "Lock the front door.",
    "My phone battery is almost empty.",
    "Send the report to Maria by email.",
]

HELD_OUT_UNFINISHED = [
    ("Can you book me a room at the", "hotel near the station?"),
    ("I want to send a letter to", "my aunt in Dublin."),
    ("We should probably leave", "before the traffic gets bad."),
    ("The meeting has been moved to", "Thursday afternoon."),
    ("Could you check whether my", "package has arrived?"),
    ("I have been trying to find a", "good dentist in town."),
    ("Play the song that goes", "something like la la la."),
    ("What would happen if we", "left an hour later?"),
    ("My sister and", "her husband are coming over."),
    ("Remind me that the rent is due on", "the first of the month."),
    ("I am looking for something that", "costs less than fifty dollars."),
    ("Put the milk back in the", "fridge, please."),
    ("He told me that he would", "call back tomorrow."),
    ("Do you know anything about", "the new library?"),
    ("Show me pictures of", "baby elephants."),
    ("It was so cold that", "the lake froze over."),
    ("Book a table at the Italian place", "on Main Street."),
    ("I'd like to order the pasta with", "extra cheese."),
    ("The password for the wifi is", "written on the fridge."),
    ("Call my dentist and tell her I", "can't come today."),
]


@dataclass(frozen=True)
class LabelledSet:
    """Finished sentences, and unfinished ones as (before the pause, after it)."""

    name: str
    finished: list[str]
    unfinished: list[tuple[str, str]]


LABELLED = LabelledSet("labelled", FINISHED, UNFINISHED)
HELD_OUT = LabelledSet("held_out", HELD_OUT_FINISHED, HELD_OUT_UNFINISHED)

Make = Callable[[trio.Nursery], TurnDetector]
"""A turn detector for one item; the nursery is the item's."""

PAUSE = 1.0  # a thinking pause: longer than the fixed 600 ms that would cut it
TAIL = 3.0  # silence after a finished sentence
SPEED = 1.0  # espeak-ng's normal rate

# How a person marks that they are not done, before the pause: a filler, or only the melody.
# SSML's <break> alone makes espeak-ng end the clause with a sentence's falling melody (what a
# person who has finished does); a comma gives its rising, "more to come" one.
_HOLDS = (", ", " um, ", ", ", " uh, ")


def unfinished_ssml(n: int, before: str, after: str) -> str:
    """Item ``n`` of :data:`UNFINISHED` as one SSML sentence with the pause inserted."""
    hold = _HOLDS[n % len(_HOLDS)]
    return f'<speak>{before}{hold}<break time="{PAUSE * 1000:.0f}ms"/> {after}</speak>'


@dataclass(frozen=True)
class Result:
    """One item: ``finished`` (the label); ``cut``: the detector ended the turn before the
    sentence was over; ``wait``: last voiced sample → end of turn, seconds (the model's time
    included); None when it was cut or never ended."""

    text: str
    finished: bool
    cut: bool
    wait: float | None


def _speech(text: str) -> bytes:
    return say(text, pad=0.0, speed=SPEED)


def _last_voiced(pcm: bytes) -> int:
    """Samples up to the last one that is not (near) silence."""
    x = np.abs(np.frombuffer(pcm, "<i2").astype(np.int32))
    loud = np.flatnonzero(x > 0.02 * x.max())
    return int(loud[-1]) + 1


def _quiet(pcm: bytes) -> tuple[int, int]:
    """The longest near-silence (the inserted pause): where it starts and ends, in samples."""
    x = np.abs(np.frombuffer(pcm, "<i2").astype(np.int32))
    quiet = x <= 0.02 * x.max()
    best, found, run_start = 0, (0, 0), None
    for i, q in enumerate(quiet):
        if q and run_start is None:
            run_start = i
        elif not q and run_start is not None:
            if i - run_start > best:
                best, found = i - run_start, (run_start, i)
            run_start = None
    return found


def _resumed(pcm: bytes) -> int:
    """Where speech resumes after the inserted pause, in samples."""
    return _quiet(pcm)[1]


def broken_off(labelled: LabelledSet = LABELLED) -> list[bytes]:
    """Each unfinished sentence up to its thinking pause, then ``pause`` (200 ms) of silence: as
    it is heard when Smart Turn is asked."""
    pcms = []
    for n, (before, after) in enumerate(labelled.unfinished):
        speech = say(unfinished_ssml(n, before, after), pad=0.0, speed=SPEED, ssml=True)
        pcms.append(speech[: 2 * _quiet(speech)[0]] + bytes(2 * int(0.2 * RATE)))
    return pcms


async def _run(detector: TurnDetector, audio: bytes) -> list[tuple[Utterance, float]]:
    """Feed ``audio`` in 20 ms frames as fast as the detector takes them — in real time while it
    thinks in the background, as a live stream gives it that time — each utterance with the
    wall time the frame that ended it took (the model's and the STT's, when it decided)."""
    found = []
    due: float | None = None
    for i in range(0, len(audio), 640):
        if due is not None:
            await trio.sleep_until(due)
        started = trio.current_time()
        events = await detector.push(audio[i : i + 640])
        took = trio.current_time() - started
        found += [(e, took) for e in events if isinstance(e, Utterance)]
        due = ((due if due is not None else started) + 0.02) if detector.thinking else None
    return found


async def _heard(make: Make, audio: bytes) -> list[tuple[Utterance, float]]:
    async with trio.open_nursery() as nursery:
        found = await _run(make(nursery), audio)
        nursery.cancel_scope.cancel()
    return found


async def evaluate(make: Make, every: int = 1, labelled: LabelledSet = LABELLED) -> list[Result]:
    """``make(nursery)``'s detector over ``labelled`` (``every``: each n-th item of each half
    only); the nursery is one item's, for what the detector asks ahead."""
    lead = bytes(2 * int(0.5 * RATE))
    results = []
    for text in labelled.finished[::every]:
        speech = _speech(text)
        ended = (len(lead) // 2 + _last_voiced(speech)) / RATE
        found = await _heard(make, lead + speech + bytes(2 * int(TAIL * RATE)))
        cut = bool(found) and found[0][0].at < ended  # at a comma: the rest is another turn
        wait = found[0][0].at - ended + found[0][1] if found and not cut else None
        results.append(Result(text, True, cut, wait))
    for n, (before, after) in list(enumerate(labelled.unfinished))[::every]:
        speech = say(unfinished_ssml(n, before, after), pad=0.0, speed=SPEED, ssml=True)
        resumed = (len(lead) // 2 + _resumed(speech)) / RATE
        found = await _heard(make, lead + speech + bytes(2 * int(TAIL * RATE)))
        cut = any(u.at < resumed for u, _ in found)
        results.append(Result(f"{before} … {after}", False, cut, None))
    return results


def summary(results: list[Result]) -> dict[str, float]:
    """False cut-off rate (unfinished sentences ended at the pause) and the waits on the
    finished ones (seconds, those that ended)."""
    unfinished = [r for r in results if not r.finished]
    finished = [r for r in results if r.finished]
    waits = sorted(r.wait for r in finished if r.wait is not None)
    return {
        "false_cutoff_rate": sum(r.cut for r in unfinished) / len(unfinished),
        "finished_cut_rate": sum(r.cut for r in finished) / len(finished),
        "wait_p50": float(np.median(waits)),
        "wait_p95": float(np.percentile(waits, 95)),
    }
