"""``voxbridge talk`` as a subprocess: a WAV in, the spoken answer out, every stage timed."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import trio

from tests.conftest import _captured, clean_env
from tests.fake_brains import FakeLLM, Plan, start_fake
from tests.runtime_helpers import write
from tests.speech_samples import say, wav_file


async def talk(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = await trio.run_process(
        [sys.executable, "-m", "voxbridge", "talk", *args],
        cwd=tmp_path,
        env=clean_env(),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    out = subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )
    _captured.append(out.stdout + out.stderr)
    return out


async def test_a_question_in_a_file_gets_a_spoken_answer(tmp_path: Path) -> None:
    llm = FakeLLM(Plan([{"chunks": ["It is sunny. ", "Take a hat."]}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        write(
            tmp_path,
            "helper.yaml",
            f"llm: {{base_url: '{llm.base_url}/v1', model: m}}\nvoice: {{greeting: Hello.}}\n",
        )
        wav_file(tmp_path / "q.wav", say("what is the weather like today", rate=44100), rate=44100)
        done = await talk(tmp_path, "helper", "--in", "q.wav", "--out", "a.wav")
        nursery.cancel_scope.cancel()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("🎤 heard:  ") and "weather" in lines[0]
    assert lines[1] == "💬 answer: It is sunny. Take a hat."
    for stage in ("speech to text", "brain", "text to speech", "end of speech → first audio"):
        assert any(line.startswith(f"⏱  {stage}") and line.endswith(" ms") for line in lines)
    with wave.open(str(tmp_path / "a.wav")) as answer:
        seconds = answer.getnframes() / answer.getframerate()
        assert answer.getframerate() == 22050 and 1.0 < seconds < 6.0  # no greeting in it
    assert "weather" in llm.requests[0]["messages"][-1]["content"]


async def test_mistakes(tmp_path: Path) -> None:
    write(tmp_path, "mute.yaml", "name: Mute\n")
    write(tmp_path, "helper.yaml", "voice: {}\n")
    (tmp_path / "bad.wav").write_text("not audio")
    wav_file(tmp_path / "quiet.wav", bytes(32000))
    question = say("what is the weather like today", rate=4000)
    wav_file(tmp_path / "4k.wav", question, rate=4000)
    wav_file(tmp_path / "q.wav", say("what is the weather like today"))
    cases = [
        (("mute", "--in", "bad.wav"), 2, "agent 'mute' has no voice: add a voice section"),
        (("helper", "--in", "nope.wav"), 2, "nope.wav: no such file"),
        (("helper", "--in", "bad.wav"), 1, "bad.wav is not a WAV file"),
        (("helper", "--in", "quiet.wav"), 1, "no speech found in the file"),
        # Issue 21.6: the rate named (it was "no speech found"), and --out checked first.
        (("helper", "--in", "4k.wav"), 1, "4k.wav is sampled at 4,000 Hz: give 8,000 to 48,000"),
        (("helper", "--in", "q.wav", "--out", "no/a.wav"), 2, "--out no/a.wav: no such directory"),
        (("helper", "--in", "q.wav", "--out", "."), 2, "--out .: a directory"),
    ]
    for args, code, message in cases:
        done = await talk(tmp_path, *args)
        assert (done.returncode, message in done.stderr) == (code, True), done.stderr
        assert "Traceback" not in done.stderr
        assert "heard" not in done.stdout  # nothing ran


async def test_a_brain_that_fails_is_named_in_the_answer(tmp_path: Path) -> None:
    """Issue 21.6: with the LLM down, talk printed an empty "💬 answer:" and "✓ down.wav"."""
    write(tmp_path, "down.yaml", "llm: {base_url: 'http://127.0.0.1:9/v1', model: m}\nvoice: {}\n")
    wav_file(tmp_path / "q.wav", say("what is the weather like today"))
    done = await talk(tmp_path, "down", "--in", "q.wav", "--out", "a.wav")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[1].startswith("💬 answer: failed: the LLM at http://127.0.0.1:9/v1: cannot reach")
    assert lines[2].endswith(" Hz (an apology for what failed)")
    assert lines[-1] == "✓ a.wav (an apology for what failed)"
