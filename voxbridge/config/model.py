"""The typed, frozen view of one loaded agent file.

Values are immutable so the runtime can hand one to many actors and diff old against new with
``==``. Decrypted values are :class:`~voxbridge.secrets.crypto.Secret`; any string field may hold
one when its author chose to encrypt it (``voxbridge encrypt --field``), hence :data:`Text`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..secrets.crypto import Secret
from .duration import parse_duration

__all__ = [
    "BACKCHANNELS",
    "Agent",
    "EmbeddingsConfig",
    "InterruptionConfig",
    "LLMConfig",
    "MemoryConfig",
    "PluginConfig",
    "RestartPolicy",
    "SpeechConfig",
    "Text",
    "ToolServerConfig",
    "VADConfig",
    "VoiceConfig",
    "freeze",
    "reveal",
]

Text = str | Secret


def reveal(value: Text) -> str:
    """The plain string of a field that may have been encrypted."""
    return value.reveal() if isinstance(value, Secret) else value


def freeze(value: Any) -> Any:
    """A read-only deep copy: mappings become MappingProxyType, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Exponential backoff of an agent's actors: delays in seconds."""

    initial: float = 1.0
    factor: float = 2.0
    max: float = 300.0
    reset_after: float = 600.0

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RestartPolicy:
        d = cls()
        return cls(
            initial=parse_duration(raw.get("initial", d.initial)),
            factor=float(raw.get("factor", d.factor)),
            max=parse_duration(raw.get("max", d.max)),
            reset_after=parse_duration(raw.get("reset_after", d.reset_after)),
        )


@dataclass(frozen=True, slots=True)
class LLMConfig:
    """An OpenAI-compatible chat completions endpoint."""

    base_url: Text
    model: Text
    api_key: Secret | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float = 60.0
    vision: bool = True
    """Whether images people attach are shown to the model (as image parts)."""

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> LLMConfig:
        return cls(
            base_url=raw["base_url"],
            model=raw["model"],
            api_key=raw.get("api_key"),
            temperature=raw.get("temperature"),
            max_tokens=raw.get("max_tokens"),
            timeout=parse_duration(raw.get("timeout", 60.0)),
            vision=bool(raw.get("vision", True)),
        )


@dataclass(frozen=True, slots=True)
class SpeechConfig:
    """One speech provider (STT or TTS): ``offline``, ``openai``, ``wyoming`` or (STT)
    ``whisper``, and its settings."""

    provider: str = "offline"
    base_url: Text | None = None
    model: Text | None = None
    api_key: Secret | None = None
    uri: Text | None = None
    voice: Text | None = None
    language: str | None = None
    speed: float | None = None
    sample_rate: int | None = None
    timeout: float = 30.0
    compute_type: str = "int8"
    threads: int | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SpeechConfig:
        return cls(
            provider=raw.get("provider", "offline"),
            base_url=raw.get("base_url"),
            model=raw.get("model"),
            api_key=raw.get("api_key"),
            uri=raw.get("uri"),
            voice=raw.get("voice"),
            language=raw.get("language"),
            speed=raw.get("speed"),
            sample_rate=raw.get("sample_rate"),
            timeout=parse_duration(raw.get("timeout", 30.0)),
            compute_type=raw.get("compute_type", "int8"),
            threads=raw.get("threads"),
        )


SMART_END_OF_TURN = 2.0
"""``end_of_turn``'s default when ``smart_turn`` is on."""

BACKCHANNELS = (
    "mm-hmm", "mhm", "mm", "hmm", "uh-huh", "uh", "um", "ah", "oh", "yeah", "yep", "yes",
    "okay", "ok", "right", "sure", "i see", "got it", "go on", "wow", "really",
)  # fmt: skip
"""What a listener says to mean "go on": heard over the agent, it does not interrupt."""


@dataclass(frozen=True, slots=True)
class VADConfig:
    """When a person is speaking: durations in seconds. ``smart_turn``: ``True`` (the Smart
    Turn v3 model from an installed pipecat-ai), a path to its ONNX file, or ``None`` (off);
    it is asked after ``pause`` of silence whether the person finished. ``words``: with it,
    what was said so far is transcribed at that pause too, and words that plainly go on ("a
    table for") make a finished-sounding pause wait (English grammar); ``None``: on when the
    STT is Whisper in this process and the language English (the session decides)."""

    threshold: float = 0.5
    min_speech: float = 0.25
    end_of_turn: float = 0.6
    max_utterance: float = 30.0
    smart_turn: bool | str | None = None
    pause: float = 0.2
    words: bool | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> VADConfig:
        d = cls()
        smart = raw.get("smart_turn") or None
        # With the model deciding when a finished sentence ends, end_of_turn only bounds the
        # wait of an unfinished one: it can be long (a thinking pause is not cut).
        end_of_turn = SMART_END_OF_TURN if smart else d.end_of_turn
        return cls(
            threshold=float(raw.get("threshold", d.threshold)),
            min_speech=parse_duration(raw.get("min_speech", d.min_speech)),
            end_of_turn=parse_duration(raw.get("end_of_turn", end_of_turn)),
            max_utterance=parse_duration(raw.get("max_utterance", d.max_utterance)),
            smart_turn=smart,
            pause=parse_duration(raw.get("pause", d.pause)),
            words=None if raw.get("words") is None else bool(raw["words"]),
        )


@dataclass(frozen=True, slots=True)
class InterruptionConfig:
    """What speech over the agent does (with ``barge_in``): with ``resume``, the agent's voice
    pauses at once; if what was said has no words but ``backchannels`` (or none at all) within
    ``timeout``, it resumes where it paused, else the turn is cut. Without, it is cut at once."""

    resume: bool = True
    timeout: float = 2.0
    backchannels: tuple[str, ...] = BACKCHANNELS

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> InterruptionConfig:
        d = cls()
        return cls(
            resume=bool(raw.get("resume", d.resume)),
            timeout=parse_duration(raw.get("timeout", d.timeout)),
            backchannels=tuple(str(b).lower() for b in raw.get("backchannels", d.backchannels)),
        )


@dataclass(frozen=True, slots=True)
class VoiceConfig:
    """An agent's ``voice`` section: how it listens and speaks."""

    stt: SpeechConfig = field(default_factory=SpeechConfig)
    tts: SpeechConfig = field(default_factory=SpeechConfig)
    vad: VADConfig = field(default_factory=VADConfig)
    barge_in: bool = True
    greeting: Text | None = None
    interruptions: InterruptionConfig = field(default_factory=InterruptionConfig)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> VoiceConfig:
        return cls(
            stt=SpeechConfig.from_dict(raw.get("stt", {})),
            tts=SpeechConfig.from_dict(raw.get("tts", {})),
            vad=VADConfig.from_dict(raw.get("vad", {})),
            barge_in=bool(raw.get("barge_in", True)),
            greeting=raw.get("greeting"),
            interruptions=InterruptionConfig.from_dict(raw.get("interruptions", {})),
        )


@dataclass(frozen=True, slots=True)
class EmbeddingsConfig:
    """An OpenAI-compatible ``/v1/embeddings`` endpoint, for semantic recall of facts."""

    base_url: Text
    model: Text
    api_key: Secret | None = None
    timeout: float = 10.0

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> EmbeddingsConfig:
        return cls(
            base_url=raw["base_url"],
            model=raw["model"],
            api_key=raw.get("api_key"),
            timeout=parse_duration(raw.get("timeout", 10.0)),
        )


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """An agent's ``memory`` section: what it keeps, how long, and what it learns."""

    conversations: bool = True
    keep: float | None = 90 * 86400.0
    """Seconds turns and facts are kept; None: forever."""
    facts: bool = False
    recall: int = 5
    embeddings: EmbeddingsConfig | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> MemoryConfig:
        d = cls()
        keep = raw.get("keep", d.keep)
        embeddings = raw.get("embeddings")
        return cls(
            conversations=bool(raw.get("conversations", d.conversations)),
            keep=None if keep in (None, "forever") else parse_duration(keep),
            facts=bool(raw.get("facts", d.facts)),
            recall=int(raw.get("recall", d.recall)),
            embeddings=EmbeddingsConfig.from_dict(embeddings) if embeddings else None,
        )


@dataclass(frozen=True, slots=True)
class ToolServerConfig:
    """One entry of an agent's ``tools`` section: an MCP server run as a child process
    (``command``), one reached over streamable HTTP (``url``), or an n8n workflow as one tool
    (``n8n``, with its ``description`` and JSON Schema ``parameters``)."""

    name: str
    command: tuple[Text, ...] = ()
    env: Mapping[str, Secret] = field(default_factory=lambda: MappingProxyType({}))
    cwd: Text | None = None
    url: Text | None = None
    headers: Mapping[str, Secret] = field(default_factory=lambda: MappingProxyType({}))
    allow: tuple[str, ...] | None = None
    timeout: float = 30.0
    n8n: Secret | None = None
    description: str = ""
    parameters: Mapping[str, Any] | None = None

    @property
    def kind(self) -> str:
        """``stdio``, ``http`` or ``n8n``."""
        if self.command:
            return "stdio"
        return "http" if self.url is not None else "n8n"

    def allows(self, tool: str) -> bool:
        """Whether the server's tool ``tool`` is offered to the LLM (``allow``)."""
        return self.allow is None or tool in self.allow

    @classmethod
    def from_dict(cls, name: str, raw: Mapping[str, Any]) -> ToolServerConfig:
        allow = raw.get("allow")
        parameters = raw.get("parameters")
        return cls(
            name=name,
            command=tuple(raw.get("command", ())),
            env=freeze(raw.get("env", {})),
            cwd=raw.get("cwd"),
            url=raw.get("url"),
            headers=freeze(raw.get("headers", {})),
            allow=tuple(allow) if allow is not None else None,
            timeout=parse_duration(raw.get("timeout", 30.0)),
            n8n=raw.get("n8n"),
            description=raw.get("description", ""),
            parameters=freeze(parameters) if parameters is not None else None,
        )


@dataclass(frozen=True, slots=True)
class PluginConfig:
    """One plugin section: its type, whether it runs, and its own settings (read-only, secrets
    as Secret)."""

    type: str
    enabled: bool
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Agent:
    """One agent, as loaded from ``agents.d/<id>.yaml``."""

    id: str
    file: Path
    name: str
    description: Text = ""
    default: bool = False
    system_prompt: Text = ""
    llm: LLMConfig | None = None
    history: int = 10
    voice: VoiceConfig | None = None
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    tools: Mapping[str, ToolServerConfig] = field(default_factory=lambda: MappingProxyType({}))
    tool_steps: int = 5
    plugins: Mapping[str, PluginConfig] = field(default_factory=lambda: MappingProxyType({}))
    # Where top-level keys and plugin sections start (line, column), for messages about them.
    # Not part of equality: moving a line is not a change of configuration.
    locations: Mapping[str, tuple[int, int]] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False
    )

    def where(self, key: str) -> str:
        """``file:line:col`` of a top-level key or one a level below (``llm.base_url``,
        ``plugins.<type>``); of the nearest one above it if absent; else the file."""
        while key:
            loc = self.locations.get(key)
            if loc:
                return f"{self.file}:{loc[0]}:{loc[1]}"
            key = key.rpartition(".")[0]
        return str(self.file)

    @property
    def enabled_plugins(self) -> tuple[str, ...]:
        """The types of the plugins that should run, in file order."""
        return tuple(t for t, p in self.plugins.items() if p.enabled)

    @classmethod
    def from_dict(
        cls,
        agent_id: str,
        file: Path,
        raw: Mapping[str, Any],
        locations: Mapping[str, tuple[int, int]] | None = None,
    ) -> Agent:
        """Build from a validated, decrypted document."""
        plugins = {
            ptype: PluginConfig(
                type=ptype,
                enabled=bool(section.get("enabled", True)),
                settings=freeze({k: v for k, v in section.items() if k != "enabled"}),
            )
            for ptype, section in raw.get("plugins", {}).items()
        }
        return cls(
            id=agent_id,
            file=file,
            name=raw.get("name", agent_id),
            description=raw.get("description", ""),
            default=bool(raw.get("default", False)),
            system_prompt=raw.get("system_prompt", ""),
            llm=LLMConfig.from_dict(raw["llm"]) if "llm" in raw else None,
            history=int(raw.get("history", 10)),
            voice=VoiceConfig.from_dict(raw["voice"]) if "voice" in raw else None,
            memory=MemoryConfig.from_dict(raw.get("memory", {})),
            restart=RestartPolicy.from_dict(raw.get("restart", {})),
            tools=MappingProxyType(
                {n: ToolServerConfig.from_dict(n, t) for n, t in raw.get("tools", {}).items()}
            ),
            tool_steps=int(raw.get("tool_steps", 5)),
            plugins=MappingProxyType(plugins),
            locations=MappingProxyType(dict(locations or {})),
        )
