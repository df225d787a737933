"""Where the voice models come from: Whisper's (CTranslate2 directories) and Smart Turn's.

A Whisper model is named by size (``tiny.en``, ``small``...) or given as a directory. A named
one lives in ``<state dir>/models/whisper/<name>/`` once downloaded — from the Hugging Face Hub
with huggingface_hub, the way faster-whisper does, honouring ``HF_ENDPOINT`` and the proxy
settings — with its progress in the log; a download that fails says so and what to do, and a
half-done one is resumed next time. "At hand" means no download is needed.

Smart Turn v3 is an 8 MB ONNX file (BSD-2-Clause) that the ``pipecat-ai`` wheel ships. voxbridge
reads the file only, never imports pipecat (whose dependencies are heavy): ``pip install
--no-deps pipecat-ai`` puts it where :func:`smart_turn_model` finds it, or a path is given.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
from pathlib import Path
from typing import Any

from .speech import SpeechError

__all__ = [
    "DEFAULT_WHISPER",
    "SMART_TURN_FILE",
    "download_whisper",
    "smart_turn_model",
    "whisper_at_hand",
]

log = logging.getLogger("voxbridge.voice.models")

DEFAULT_WHISPER = "tiny.en"
SMART_TURN_FILE = "smart-turn-v3.2-cpu.onnx"
_SMART_TURN_DIR = "pipecat/audio/turn/smart_turn/data"
_NEEDED = ("config.json", "model.bin", "tokenizer.json")
_PATTERNS = [*_NEEDED, "preprocessor_config.json", "vocabulary.*"]  # faster-whisper's own
_downloading = threading.Lock()


def _complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in _NEEDED)


def _stored(name: str, models: Path) -> Path:
    return models / "whisper" / name.replace("/", "--")


def whisper_at_hand(name: str, models: Path) -> Path | None:
    """The directory of Whisper model ``name`` (a directory, or a size name already downloaded
    into ``models``), or None when it would have to be downloaded."""
    given = Path(name).expanduser()
    if given.is_dir():
        return given if _complete(given) else None
    stored = _stored(name, models)
    return stored if _complete(stored) else None


def _repository(name: str) -> str:
    if "/" in name:
        return name  # a Hub repository id, as faster-whisper takes it
    from faster_whisper.utils import _MODELS  # its size → repository table (no public name)

    repo: str | None = _MODELS.get(name)
    if repo is None:
        raise SpeechError(
            f"voice.stt.model {name!r} is neither a Whisper size ({', '.join(_MODELS)}) "
            "nor a directory: give one of those, or a local CTranslate2 model directory"
        )
    return repo


def _progress(name: str) -> type[Any]:
    """A tqdm class for huggingface_hub that logs every tenth of a file instead of drawing."""
    from tqdm.auto import tqdm

    class Progress(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = False
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115  # closed with the bar
            super().__init__(*args, **kwargs)
            self._logged = -1

        def update(self, n: float | None = 1) -> bool | None:
            shown: bool | None = super().update(n)
            total = self.total or 0
            if total > 1_000_000:  # the model, not the small files
                tenth = int(10 * self.n / total)
                if tenth > self._logged:
                    self._logged = tenth
                    log.info(
                        "⬇️ Whisper %s: %d %% of %.0f MB",
                        name,
                        10 * tenth,
                        total / 1e6,
                    )
            return shown

        def close(self) -> None:
            super().close()
            if not self.fp.closed:
                self.fp.close()

    return Progress


def download_whisper(name: str, models: Path) -> Path:
    """The directory of Whisper model ``name``, downloading it into ``models`` first if it is
    not at hand (blocking: call it from a worker thread). One download at a time per process.

    Raises:
        SpeechError: it is not a size name nor a directory, or it could not be fetched.
    """
    found = whisper_at_hand(name, models)
    if found is not None:
        return found
    if Path(name).expanduser().is_dir():
        raise SpeechError(
            f"voice.stt.model {name!r} is a directory without a CTranslate2 Whisper model in it "
            f"(it needs {', '.join(_NEEDED)})"
        )
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise SpeechError(f"voice.stt.model {name!r}: no such directory")
    repo = _repository(name)
    target = _stored(name, models)
    with _downloading:
        if _complete(target):
            return target  # another session fetched it meanwhile
        import huggingface_hub
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
        log.info("⬇️ Whisper %s: downloading %s from %s into %s", name, repo, endpoint, target)
        try:
            huggingface_hub.snapshot_download(
                repo,
                local_dir=target,
                allow_patterns=_PATTERNS,
                tqdm_class=_progress(name),
            )
        except Exception as exc:  # any failure of the Hub client: network, HTTP, disk
            raise SpeechError(
                f"the Whisper model {name!r} could not be downloaded from {endpoint} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else '-'}): "
                "check the network (HF_ENDPOINT and HTTPS_PROXY are honoured), or set "
                "voice.stt.model to a local CTranslate2 model directory"
            ) from None
        if not _complete(target):
            raise SpeechError(
                f"the Whisper model {name!r} from {repo} lacks {', '.join(_NEEDED)}: "
                "is it a CTranslate2 (faster-whisper) model?"
            )
        log.info("✅ Whisper %s: ready in %s", name, target)
        return target


def smart_turn_model(setting: bool | str) -> Path:
    """The Smart Turn v3 ONNX file: ``setting`` as a path, or (``True``) the one an installed
    pipecat-ai ships — found through its distribution's files, without importing it.

    Raises:
        SpeechError: no such file, or pipecat-ai is not installed.
    """
    if isinstance(setting, str):
        path = Path(setting).expanduser()
        if not path.is_file():
            raise SpeechError(f"voice.vad.smart_turn: {path}: no such file")
        return path
    try:
        dist = importlib.metadata.distribution("pipecat-ai")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        path = Path(str(dist.locate_file(f"{_SMART_TURN_DIR}/{SMART_TURN_FILE}")))
        if path.is_file():
            return path
    raise SpeechError(
        f"voice.vad.smart_turn: the Smart Turn v3 model ({SMART_TURN_FILE}) was not found: "
        "`pip install --no-deps pipecat-ai` installs it (the file only is used), or set "
        "smart_turn to the path of the .onnx file"
    )
