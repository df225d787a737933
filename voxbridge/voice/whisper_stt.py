"""Whisper on the CPU: faster-whisper's model, CTranslate2 (int8 by default), no server.

A model is loaded once per process and shared by every session that names it (~0.3 s for
tiny.en, in a worker thread). Transcriptions run off the event loop in worker threads (CTranslate2
releases the GIL) and take turns through one limiter sized so that together they use the cores
and no more: each uses ``threads`` cores (default: all of them, at most four).

Why not ``WhisperModel.transcribe``: it pads every utterance to Whisper's 30 s window, so the
encoder costs the same ~300 ms (tiny.en, here) for "yes" as for a paragraph. An utterance is one
short segment, so it is encoded in a window sized to it (at least 10 s): 40-130 ms for the same
words (measured on espeak-ng speech: the same transcripts). faster-whisper still provides the
features, the tokenizer and the model; CTranslate2's own ``generate`` decodes (greedy), and a
result the model itself judges to be no speech — a cough, a breath — is dropped as faster-whisper
does (no-speech probability > 0.6 with an average log-probability < -1).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import trio

from .audio import samples, to_float
from .speech import SpeechError

__all__ = ["UNSURE", "WhisperSTT", "load", "so_far", "transcribe"]

_FRAMES_PER_SECOND = 100  # Whisper's mel frames
_MIN_WINDOW = 10 * _FRAMES_PER_SECOND  # shorter windows save little and risk more
_MAX_WINDOW = 30 * _FRAMES_PER_SECOND  # the model's own
_NO_SPEECH = 0.6
_LOW_CONFIDENCE = -1.0
UNSURE = 0.5  # a last word less likely than this may be one Whisper made up (:func:`so_far`)
# What Whisper writes for sounds that are not words: "(coughs)", "[MUSIC]", "*sigh*".
_NOT_WORDS = re.compile(r"\([^)]*\)|\[[^\]]*\]|\*[^*]*\*|♪")

T = TypeVar("T")
_SPOKEN = re.compile(r"\w")  # a word, not punctuation alone

_lock = threading.Lock()
_models: dict[tuple[str, str, int], Any] = {}
_cores = os.cpu_count() or 1
_limiters: dict[int, trio.CapacityLimiter] = {}


def default_threads() -> int:
    return max(1, min(4, _cores))


def load(directory: Path, compute_type: str = "int8", threads: int | None = None) -> Any:
    """The model in ``directory``, loaded once per process (blocking: a worker thread).

    Raises:
        SpeechError: it is not a CTranslate2 Whisper model, or ``compute_type`` is unknown.
    """
    threads = threads or default_threads()
    key = (str(directory.resolve()), compute_type, threads)
    with _lock:
        model = _models.get(key)
        if model is None:
            from faster_whisper import WhisperModel

            try:
                model = WhisperModel(
                    str(directory),
                    device="cpu",
                    compute_type=compute_type,
                    cpu_threads=threads,
                    num_workers=max(1, _cores // threads),
                )
            except (RuntimeError, ValueError, OSError) as exc:
                raise SpeechError(f"Whisper could not load {directory}: {exc}") from None
            _models[key] = model
        return model


def _limiter(threads: int) -> trio.CapacityLimiter:
    """Transcriptions at once: as many as fit in the cores at ``threads`` each."""
    limiter = _limiters.get(threads)
    if limiter is None:
        limiter = _limiters[threads] = trio.CapacityLimiter(max(1, _cores // threads))
    return limiter


def _window(frames: int) -> int:
    wanted = -(-(frames + 100) // 100) * 100  # a second of margin, whole seconds
    return min(_MAX_WINDOW, max(_MIN_WINDOW, wanted))


def _language(model: Any, encoded: Any, language: str | None) -> str:
    if not model.model.is_multilingual:
        return "en"
    if language:
        return language
    token, _ = model.model.detect_language(encoded)[0][0]
    return str(token)[2:-2]  # "<|de|>"


def transcribe(model: Any, pcm: bytes, language: str | None = None) -> str:
    """The words in 16 kHz ``s16le`` ``pcm`` (blocking: a worker thread)."""
    return _decode(model, pcm, language, judge_end=False)[0]


def so_far(model: Any, pcm: bytes, language: str | None = None) -> tuple[str, str]:
    """The words in ``pcm``, speech that may stop mid-sentence, and of them the ones Whisper is
    sure of (blocking: a worker thread). Whisper finishes a sentence that stops short with a
    word of its own ("I would like a table for ... it."); such a word is one it is unsure of,
    so the last word is left out of the second when its probability is below ``UNSURE``."""
    return _decode(model, pcm, language, judge_end=True)


def _decode(model: Any, pcm: bytes, language: str | None, *, judge_end: bool) -> tuple[str, str]:
    import ctranslate2
    from faster_whisper.tokenizer import Tokenizer

    audio = to_float(samples(pcm))
    features = model.feature_extractor(audio)[:, :-1]
    texts = []
    sure: str | None = None  # all of it, unless the last word is unsure
    for start in range(0, max(1, features.shape[1]), _MAX_WINDOW):
        chunk = features[:, start : start + _MAX_WINDOW]
        window = np.zeros((1, chunk.shape[0], _window(chunk.shape[1])), np.float32)
        window[0, :, : chunk.shape[1]] = chunk
        encoded = model.model.encode(ctranslate2.StorageView.from_array(window), to_cpu=False)
        tokenizer = Tokenizer(
            model.hf_tokenizer,
            model.model.is_multilingual,
            task="transcribe",
            language=_language(model, encoded, language),
        )
        result = model.model.generate(
            encoded,
            [[*tokenizer.sot_sequence, tokenizer.no_timestamps]],
            beam_size=1,
            max_length=448,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1, *tokenizer.non_speech_tokens],
        )[0]
        if result.no_speech_prob > _NO_SPEECH and result.scores[0] < _LOW_CONFIDENCE:
            continue  # the model heard no speech: a cough, a breath, a click
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        texts.append(tokenizer.decode(tokens))
        if judge_end and start + _MAX_WINDOW >= features.shape[1] and tokens:
            kept = _sure(model, tokenizer, tokens, encoded, chunk.shape[1])
            if kept is not None:
                sure = " ".join([*texts[:-1], kept])
    text = _clean(" ".join(texts))
    return text, text if sure is None else _clean(sure)


def _sure(model: Any, tokenizer: Any, tokens: list[int], encoded: Any, frames: int) -> str | None:
    """``tokens`` without their last word when the model is unsure of it (None when sure): its
    probability as faster-whisper's word timestamps reckon it, the mean of its tokens'."""
    (aligned,) = model.model.align(encoded, tokenizer.sot_sequence, [tokens], frames)
    words, word_tokens = tokenizer.split_to_word_tokens([*tokens, tokenizer.eot])
    probabilities, at = [], 0
    for piece in word_tokens[:-1]:  # the last is the end of text
        probabilities.append(float(np.mean(aligned.text_token_probs[at : at + len(piece)])))
        at += len(piece)
    spoken = [i for i, word in enumerate(words[:-1]) if _SPOKEN.search(word)]
    if not spoken or probabilities[spoken[-1]] >= UNSURE:  # a full stop's is not the word's
        return None
    return "".join(words[: spoken[-1]])


def _clean(text: str) -> str:
    return " ".join(_NOT_WORDS.sub(" ", text).split())


class WhisperSTT:
    """Whisper through faster-whisper, in this process."""

    name = "whisper"

    def __init__(
        self,
        directory: Path,
        compute_type: str = "int8",
        threads: int | None = None,
        language: str | None = None,
    ) -> None:
        self._directory, self._compute_type = directory, compute_type
        self._threads = threads or default_threads()
        self._language = language

    def _model(self) -> Any:
        return load(self._directory, self._compute_type, self._threads)

    async def warm(self) -> None:
        """Load the model now (once per process): the first utterance need not wait for it."""
        await trio.to_thread.run_sync(self._model)

    async def transcribe(self, pcm: bytes) -> str:
        return await self._off_the_loop(transcribe, pcm)

    async def so_far(self, pcm: bytes) -> tuple[str, str]:
        """:func:`so_far`: the words of speech that may stop mid-sentence, and the sure ones."""
        return await self._off_the_loop(so_far, pcm)

    async def _off_the_loop(self, decode: Callable[[Any, bytes, str | None], T], pcm: bytes) -> T:
        def run() -> T:
            try:
                return decode(self._model(), pcm, self._language)
            except RuntimeError as exc:  # CTranslate2's own failures
                raise SpeechError(f"Whisper could not transcribe: {exc}") from None

        return await trio.to_thread.run_sync(run, limiter=_limiter(self._threads))
