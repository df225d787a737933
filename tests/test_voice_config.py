"""The agent file's ``voice`` section: defaults, providers' required settings, secrets."""

from __future__ import annotations

import pytest

from voxbridge import ConfigError, Secret, parse_agent
from voxbridge.config.model import InterruptionConfig, SpeechConfig, VADConfig, VoiceConfig
from voxbridge.secrets.crypto import seal
from voxbridge.secrets.keys import Keyring, PublicKey


def test_an_empty_voice_section_is_all_offline_defaults(keyring: Keyring) -> None:
    agent = parse_agent("voice: {}\n", "a.yaml", "a", keyring)
    assert agent.voice == VoiceConfig(SpeechConfig(), SpeechConfig(), VADConfig(), True, None)
    assert parse_agent("name: A\n", "a.yaml", "a", keyring).voice is None


def test_every_setting(keyring: Keyring, public: PublicKey) -> None:
    key = seal("sk-voice", public.key, "voice.tts.api_key")
    agent = parse_agent(
        "voice:\n"
        "  stt: {provider: wyoming, uri: 'tcp://127.0.0.1:10300', language: en}\n"
        f"  tts: {{provider: openai, base_url: 'http://k/v1', model: kokoro, voice: af_bella,"
        f" api_key: '{key}', speed: 1.2, sample_rate: 24000, timeout: 10s}}\n"
        "  vad: {threshold: 0.6, min_speech: 200ms, end_of_turn: 0.8, max_utterance: 1m}\n"
        "  barge_in: false\n"
        "  greeting: Hello!\n",
        "a.yaml",
        "a",
        keyring,
    )
    voice = agent.voice
    assert voice is not None
    assert (voice.stt.provider, voice.stt.uri, voice.stt.language) == (
        "wyoming",
        "tcp://127.0.0.1:10300",
        "en",
    )
    assert voice.tts.api_key == Secret("sk-voice")
    assert (voice.tts.voice, voice.tts.speed, voice.tts.sample_rate, voice.tts.timeout) == (
        "af_bella",
        1.2,
        24000,
        10.0,
    )
    assert voice.vad == VADConfig(0.6, 0.2, 0.8, 60.0)
    assert (voice.barge_in, voice.greeting) == (False, "Hello!")


def test_whisper_smart_turn_and_interruptions(keyring: Keyring) -> None:
    agent = parse_agent(
        "voice:\n"
        "  stt: {provider: whisper, model: base.en, compute_type: int8_float32, threads: 2}\n"
        "  vad: {smart_turn: true}\n"
        "  interruptions: {timeout: 1500ms, backchannels: [Uh-huh, Ja]}\n",
        "a.yaml",
        "a",
        keyring,
    )
    voice = agent.voice
    assert voice is not None
    assert (voice.stt.provider, voice.stt.model, voice.stt.compute_type, voice.stt.threads) == (
        "whisper",
        "base.en",
        "int8_float32",
        2,
    )
    # With the model deciding, end_of_turn only bounds an unfinished sentence: 2 s by default.
    assert voice.vad == VADConfig(end_of_turn=2.0, smart_turn=True, pause=0.2)
    assert voice.interruptions == InterruptionConfig(True, 1.5, ("uh-huh", "ja"))
    plain = parse_agent(
        "voice: {vad: {smart_turn: /m.onnx, end_of_turn: 1s}}\n", "a.yaml", "a", keyring
    )
    assert plain.voice is not None
    assert plain.voice.vad == VADConfig(end_of_turn=1.0, smart_turn="/m.onnx")
    assert plain.voice.stt.compute_type == "int8"
    assert plain.voice.interruptions == InterruptionConfig()  # pause, judge, resume on no words


@pytest.mark.parametrize(
    ("voice", "words"),
    [
        ("{vad: {smart_turn: true}}", None),  # the session decides (see test_voice_session)
        ("{vad: {smart_turn: true, words: true}}", True),
        ("{vad: {smart_turn: true, words: false}}", False),
    ],
)
def test_the_words_check_is_asked_for(keyring: Keyring, voice: str, words: bool | None) -> None:
    agent = parse_agent(f"voice: {voice}\n", "a.yaml", "a", keyring)
    assert agent.voice is not None
    assert agent.voice.vad.words is words


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ("stt: {provider: openai}", "voice.stt: missing required key 'base_url'"),
        ("tts: {provider: wyoming}", "voice.tts: missing required key 'uri'"),
        (
            "tts: {provider: wyoming, uri: 'http://h:1'}",
            "expected a server address: tcp://host:port",
        ),
        ("stt: {provider: whispr}", "expected one of: offline, whisper, openai, wyoming"),
        ("stt: {provider: whisper, threads: 0}", "voice.stt.threads"),
        ("vad: {smart_turn: 1}", "voice.vad.smart_turn"),
        ("vad: {words: maybe}", "voice.vad.words"),
        ("interruptions: {timeout: later}", "voice.interruptions.timeout: expected a duration"),
        ("vad: {end_of_turn: soon}", "voice.vad.end_of_turn: expected a duration"),
        ("tts: {provider: openai, base_url: u, model: m, api_key: sk-plain}", "plaintext secret"),
        ("stt: {modle: x}", "did you mean 'model'?"),
    ],
)
def test_mistakes_are_located(keyring: Keyring, section: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_agent(f"voice:\n  {section}\n", "a.yaml", "a", keyring)
    found = info.value.problems[0]
    assert found.line == 2
    assert problem in str(found)
    assert "sk-plain" not in str(info.value)


def test_discord_voice_channels_need_the_voice_section(keyring: Keyring, public: PublicKey) -> None:
    token = seal("bot-token", public.key, "plugins.discord.bot_token")
    section = (
        "plugins:\n"
        "  discord:\n"
        f"    bot_token: '{token}'\n"
        "    voice: {channels: ['123456789012345678'], follow: false}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_agent("name: A\n" + section, "a.yaml", "a", keyring)
    assert [str(p) for p in caught.value.problems] == [
        "a.yaml:5:5: plugins.discord.voice: needs the agent's 'voice' section: add 'voice: {}' "
        "at the top level (the defaults run offline), or remove this key"
    ]
    agent = parse_agent("voice: {}\n" + section, "a.yaml", "a", keyring)
    assert agent.plugins["discord"].settings["voice"] == {
        "channels": ("123456789012345678",),
        "follow": False,
    }
