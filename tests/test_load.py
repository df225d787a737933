"""Loading agent files: typed results, precise located errors, hostile files, cross-file rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from voxbridge import Agent, ConfigError, Secret
from voxbridge.config.load import (
    MAX_FILE_BYTES,
    agent_files,
    is_agent_file,
    load_agent_file,
    load_directory,
)
from voxbridge.secrets.crypto import seal
from voxbridge.secrets.keys import Keyring, PublicKey

FULL = """\
name: CustomerSupport
description: Answers billing questions
default: true
system_prompt: |
  You are a helpful assistant.
llm:
  base_url: http://127.0.0.1:11434/v1
  model: llama3.1
  api_key: {api_key}
  temperature: 0.7
history: 12
restart: {{initial: 500ms, factor: 3, max: 5m, reset_after: 1h}}
plugins:
  discord:
    enabled: true
    bot_token: {bot_token}
    channels: ["123456789012345678", 223456789012345678]
  n8n:
    enabled: false
    webhook_url: {webhook}
    mode: fallback
    timeout: 60s
"""


def write(d: Path, name: str, text: str) -> Path:
    d.mkdir(exist_ok=True)
    p = d / name
    p.write_text(text)
    return p


def full_text(public: PublicKey) -> str:
    return FULL.format(
        api_key=seal("sk-llm", public.key, "llm.api_key"),
        bot_token=seal("bot-token-1", public.key, "plugins.discord.bot_token"),
        webhook=seal("https://n8n.invalid/hook", public.key, "plugins.n8n.webhook_url"),
    )


def problems_of(path: Path, keyring: Keyring) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_agent_file(path, keyring)
    return [str(p) for p in info.value.problems]


def test_full_agent_loads_typed_and_decrypted(
    tmp_path: Path, public: PublicKey, keyring: Keyring
) -> None:
    agent = load_agent_file(write(tmp_path, "support.yaml", full_text(public)), keyring)
    assert isinstance(agent, Agent)
    assert (agent.id, agent.name, agent.default, agent.history) == (
        "support",
        "CustomerSupport",
        True,
        12,
    )
    assert agent.system_prompt == "You are a helpful assistant.\n"
    assert agent.llm is not None and agent.llm.api_key == Secret("sk-llm")
    assert agent.restart.initial == 0.5 and agent.restart.factor == 3
    assert agent.restart.max == 300 and agent.restart.reset_after == 3600
    discord = agent.plugins["discord"]
    assert discord.enabled and discord.settings["bot_token"].reveal() == "bot-token-1"
    assert agent.enabled_plugins == ("discord",)
    assert agent.where("plugins.discord").endswith("support.yaml:14:3")
    # Issue 21.5: runtime messages about llm.base_url point at it, not at `llm:`.
    assert agent.where("llm").endswith("support.yaml:6:1")
    assert agent.where("llm.base_url").endswith("support.yaml:7:3")
    assert agent.where("llm.nothing.here").endswith("support.yaml:6:1")
    # Nothing secret in the reprs of the loaded values.
    assert "bot-token-1" not in repr(agent) and "sk-llm" not in repr(agent)
    with pytest.raises(TypeError):
        discord.settings["bot_token"] = "x"  # type: ignore[index]


def test_defaults_for_a_minimal_agent(tmp_path: Path, keyring: Keyring) -> None:
    agent = load_agent_file(write(tmp_path, "min.yaml", "system_prompt: hi\n"), keyring)
    assert agent.name == "min" and agent.history == 10 and agent.llm is None
    assert agent.restart.initial == 1 and agent.restart.max == 300


def test_same_config_compares_equal_despite_new_ciphertext(
    tmp_path: Path, public: PublicKey, keyring: Keyring
) -> None:
    a = load_agent_file(write(tmp_path, "a.yaml", full_text(public)), keyring)
    b = load_agent_file(write(tmp_path, "a.yaml", full_text(public)), keyring)
    assert a == b  # fresh ciphertexts, same values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: X\nsystem_promt: hi\n",
            "a.yaml:2:1: system_promt: unknown key 'system_promt': did you mean 'system_prompt'?",
        ),
        (
            "plugins:\n  slack: {}\n",
            "a.yaml:2:3: plugins.slack: unknown plugin type 'slack'; installed plugin types: discord, n8n",
        ),
        ("history: ten\n", "a.yaml:1:10: history: expected an integer, found a string ('ten')"),
        ("default: 1\n", "a.yaml:1:10: default: expected true or false, found an integer (1)"),
        # YAML 1.1 reads Off, yes, no as booleans and 1.10 as a number: the fix is quoting.
        (
            "name: Off\n",
            'a.yaml:1:7: name: expected a string, found true or false (False): quote it: name: "Off"',
        ),
        (
            "llm: {base_url: u, model: 1.10}\n",
            'llm.model: expected a string, found a number (1.1): quote it: model: "1.10"',
        ),
        (
            "restart:\n  max: 5 minutes\n",
            "a.yaml:2:8: restart.max: expected a duration: 500ms, 30s, 5m, 1h, 90d, or a number of seconds;"
            " found '5 minutes'",
        ),
        (
            "memory:\n  keep: never\n",
            "a.yaml:2:9: memory.keep: expected a duration (90d, 12h, 30m...) or forever; "
            "found 'never'",
        ),
        (
            "memory:\n  facts: true\n",
            "a.yaml:2:3: memory.facts: facts are learned by the agent's llm, and this agent "
            "has none: add an llm section, or set facts: false",
        ),
        (
            "plugins:\n  n8n:\n    webhook_url: x\n    mode: primry\n",
            "a.yaml:4:11: plugins.n8n.mode: expected one of: primary, fallback; found 'primry'",
        ),
        (
            "plugins:\n  discord:\n    enabled: true\n",
            "a.yaml:2:3: plugins.discord: missing required key 'bot_token'",
        ),
        ("llm:\n  model: m\n", "a.yaml:1:1: llm: missing required key 'base_url'"),
        (
            "llm: {base_url: u, model: m, temperature: 3}\n",
            "a.yaml:1:43: llm.temperature: must be ≤ 2; found 3",
        ),
        ("name: ''\n", "a.yaml:1:7: name: must not be empty"),
        (
            "plugins:\n  discord:\n    enabled: false\n    channels: ['1']\n",
            "a.yaml:4:16: plugins.discord.channels.0: expected a Discord id (17 to 20 digits)",
        ),
        (
            "plugins:\n  discord:\n    enabled: false\n    limits: {per_user: 10/minute}\n",
            "a.yaml:4:24: plugins.discord.limits.per_user: expected a rate: N/s, N/min, N/h or "
            "N/day (10/min); found '10/minute'",
        ),
        (
            "plugins:\n  discord:\n    enabled: false\n    allow: {people: ['1']}\n",
            "a.yaml:4:13: plugins.discord.allow.people: unknown key 'people': expected one of: "
            "channels, roles, users",
        ),
        (
            "llm: {base_url: u, model: m, vision: 'off'}\n",
            "a.yaml:1:38: llm.vision: expected true or false, found a string ('off')",
        ),
        ("- a\n- b\n", "a.yaml:1:1: expected a mapping of agent settings"),
        (
            "plugins:\n  discord:\n    bot_token: 12345\n",
            "a.yaml:3:16: plugins.discord.bot_token: expected a string, found an integer",
        ),
    ],
)
def test_each_mistake_is_located_and_explained(
    tmp_path: Path, keyring: Keyring, text: str, expected: str
) -> None:
    found = problems_of(write(tmp_path, "a.yaml", text), keyring)
    assert any(p.endswith(expected) or expected in p for p in found), found


def test_disabled_plugin_needs_no_token(tmp_path: Path, keyring: Keyring) -> None:
    agent = load_agent_file(
        write(tmp_path, "a.yaml", "plugins:\n  discord: {enabled: false}\n"), keyring
    )
    assert agent.enabled_plugins == ()


def test_secret_values_never_appear_in_errors(tmp_path: Path, keyring: Keyring) -> None:
    text = "plugins:\n  discord:\n    bot_token: plain-token-SECRET\n    chanels: 1\n"
    found = problems_of(write(tmp_path, "a.yaml", text), keyring)
    assert any("3:16: plugins.discord.bot_token: plaintext secret" in p for p in found)
    assert any("unknown key 'chanels'" in p for p in found)  # reported together, not one by one
    assert not any("plain-token-SECRET" in p for p in found)


def test_every_problem_of_a_file_is_reported(tmp_path: Path, keyring: Keyring) -> None:
    found = problems_of(write(tmp_path, "a.yaml", "history: x\ndefault: 2\nfoo: 1\n"), keyring)
    assert [p.split(": ")[0] for p in found] == [
        f"{tmp_path}/a.yaml:1:10",
        f"{tmp_path}/a.yaml:2:10",
        f"{tmp_path}/a.yaml:3:1",
    ]


def test_moved_ciphertext_does_not_open(
    tmp_path: Path, public: PublicKey, keyring: Keyring
) -> None:
    token = seal("bot-token", public.key, "plugins.discord.bot_token")
    text = f"plugins:\n  n8n:\n    webhook_url: {token}\n"
    (p,) = problems_of(write(tmp_path, "a.yaml", text), keyring)
    assert "3:18: plugins.n8n.webhook_url: does not decrypt" in p


def test_tampered_ciphertext_names_the_field(
    tmp_path: Path, public: PublicKey, keyring: Keyring
) -> None:
    token = seal("bot-token", public.key, "plugins.discord.bot_token")
    i = len(token) - 10
    flipped = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
    text = f"plugins:\n  discord:\n    bot_token: {flipped}\n"
    (p,) = problems_of(write(tmp_path, "a.yaml", text), keyring)
    assert "plugins.discord.bot_token: does not decrypt: the value was altered" in p


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("ENC[hpke1,0000abcd,AAAA]", "no private key with id 0000abcd on this host"),
        ("ENC[hpke1,abc", "malformed ENC value"),
        ("ENC[rot13,0000abcd,AAAA]", "unknown encryption scheme 'rot13'"),
    ],
)
def test_unopenable_tokens(tmp_path: Path, keyring: Keyring, token: str, expected: str) -> None:
    text = f"llm:\n  base_url: u\n  model: m\n  api_key: '{token}'\n"
    (p,) = problems_of(write(tmp_path, "a.yaml", text), keyring)
    assert "4:12: llm.api_key:" in p and expected in p


def test_truncated_ciphertext(tmp_path: Path, public: PublicKey, keyring: Keyring) -> None:
    token = seal("x", public.key, "llm.api_key")
    text = f"llm: {{base_url: u, model: m, api_key: '{token[:30]}]'}}\n"
    (p,) = problems_of(write(tmp_path, "a.yaml", text), keyring)
    assert "llm.api_key: does not decrypt" in p


def test_missing_private_key(tmp_path: Path, public: PublicKey) -> None:
    token = seal("x", public.key, "llm.api_key")
    text = f"llm: {{base_url: u, model: m, api_key: '{token}'}}\n"
    (p,) = problems_of(write(tmp_path, "a.yaml", text), Keyring())
    assert f"no private key with id {public.key_id} on this host (held: none)" in p


def test_any_string_field_may_be_encrypted_but_not_the_name(
    tmp_path: Path, public: PublicKey, keyring: Keyring
) -> None:
    prompt = seal("secret persona", public.key, "system_prompt")
    agent = load_agent_file(write(tmp_path, "a.yaml", f"system_prompt: {prompt}\n"), keyring)
    assert agent.system_prompt == Secret("secret persona")
    name = seal("N", public.key, "name")
    (p,) = problems_of(write(tmp_path, "b.yaml", f"name: {name}\n"), keyring)
    assert "name: the name cannot be encrypted" in p


# --- hostile files -------------------------------------------------------------------------


def test_oversized_file(tmp_path: Path, keyring: Keyring) -> None:
    p = write(tmp_path, "big.yaml", "a: " + "x" * MAX_FILE_BYTES + "\n")
    (msg,) = problems_of(p, keyring)
    assert "agent files are limited to 1048576 bytes (1 MiB)" in msg


def test_binary_file(tmp_path: Path, keyring: Keyring) -> None:
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\x7fELF\x02\x01\x00\x00")
    (msg,) = problems_of(p, keyring)
    assert msg.endswith(
        "bin.yaml: binary file (a NUL byte at offset 6): an agent file is UTF-8 text"
    )


def test_non_utf8_file_is_located(tmp_path: Path, keyring: Keyring) -> None:
    p = tmp_path / "latin.yaml"
    p.write_bytes(b"name: ok\ndescription: caf" + b"\xe9\n")
    (msg,) = problems_of(p, keyring)
    assert msg.endswith("latin.yaml:2:17: not UTF-8 (byte 0xe9): save the file as UTF-8")


def test_dangling_symlink(tmp_path: Path, keyring: Keyring) -> None:
    p = tmp_path / "gone.yaml"
    p.symlink_to(tmp_path / "nowhere.yaml")
    (msg,) = problems_of(p, keyring)
    assert "broken symlink to" in msg and "nowhere.yaml" in msg


def test_looping_symlink(tmp_path: Path, keyring: Keyring) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.symlink_to(b)
    b.symlink_to(a)
    (msg,) = problems_of(a, keyring)
    assert msg.endswith("a.yaml: symlink loop: the link points back at itself")


def test_fifo_is_refused_without_blocking(tmp_path: Path, keyring: Keyring) -> None:
    p = tmp_path / "pipe.yaml"
    os.mkfifo(p)
    (msg,) = problems_of(p, keyring)
    assert msg.endswith("pipe.yaml: not a regular file")


def test_symlink_to_a_good_file_loads(tmp_path: Path, keyring: Keyring) -> None:
    target = write(tmp_path / "real", "t.yaml", "name: Linked\n")
    link = tmp_path / "linked.yaml"
    link.symlink_to(target)
    assert load_agent_file(link, keyring).name == "Linked"


def test_bad_id(tmp_path: Path, keyring: Keyring) -> None:
    (msg,) = problems_of(write(tmp_path, "Bad Name.yaml", "name: x\n"), keyring)
    assert "'Bad Name' is not a valid agent id" in msg


# --- the directory -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "agent"),
    [
        ("a.yaml", True),
        ("b.yml", True),
        (".hidden.yaml", False),
        ("a.yaml.swp", False),
        ("a.yaml~", False),
        ("#a.yaml#", False),
        ("a.yaml.tmp", False),
        ("4913", False),
        ("notes.txt", False),
        (".a.yaml.x1y2.tmp", False),
    ],
)
def test_editor_litter_is_not_an_agent(name: str, agent: bool) -> None:
    assert is_agent_file(name) is agent


def test_directory_loads_each_file_on_its_own(tmp_path: Path, keyring: Keyring) -> None:
    d = tmp_path / "agents.d"
    write(d, "good.yaml", "name: Good\n")
    write(d, "bad.yaml", "name: [\n")
    write(d, "also.yml", "name: Also\n")
    (d / "sub.yaml").mkdir()
    write(d, "x.yaml.swp", "garbage")
    result = load_directory(d, keyring)
    assert sorted(result.agents) == ["also", "good"]
    assert result.failed_files == [str(d / "bad.yaml")]
    assert result.files == 3
    assert [p.name for p in agent_files(d)] == ["also.yml", "bad.yaml", "good.yaml"]


def test_cross_file_rules_reject_the_later_file(tmp_path: Path, keyring: Keyring) -> None:
    d = tmp_path / "agents.d"
    write(d, "a.yaml", "name: Support\ndefault: true\n")
    write(d, "b.yaml", "description: x\nname: support\n")
    write(d, "c.yaml", "name: Other\ndefault: true\n")
    write(d, "a.yml", "name: Dup\n")
    result = load_directory(d, keyring)
    assert sorted(result.agents) == ["a"]
    messages = sorted(str(p) for p in result.problems)
    assert messages == [
        f"{d}/a.yml: agent id 'a' is also defined by {d}/a.yaml; keep one file",
        f"{d}/b.yaml:2:1: name: name 'support' is already used by {d}/a.yaml:1:1; agent names "
        "must be unique (ignoring case)",
        f"{d}/c.yaml:2:1: default: {d}/a.yaml:2:1 is the default agent already; at most one "
        "agent says default: true",
    ]


def test_missing_directory_is_empty(tmp_path: Path, keyring: Keyring) -> None:
    result = load_directory(tmp_path / "none", keyring)
    assert result.agents == {} and result.problems == []
