"""The bad-input catalogue: every class of broken agent file, applied to a running fleet.

For each class the same three things must hold: a clear error naming the file (and the line
where there is one), the other agents keep running untouched, and the broken agent's last good
version keeps running. docs/reliability.md lists the classes with their messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.runtime_helpers import make_runtime, write
from voxbridge import ConfigError, testing
from voxbridge.config.load import MAX_FILE_BYTES, parse_agent
from voxbridge.secrets.crypto import seal
from voxbridge.secrets.keys import Keyring, generate_key_pair

GOOD = "name: Victim\nsystem_prompt: the good version\nplugins:\n  echo: {}\n"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)
)


def _text(body: str) -> Callable[[Path, dict[str, str]], None]:
    def apply(path: Path, env: dict[str, str]) -> None:
        path.write_text(body.format(**env))

    return apply


def _bytes(data: bytes) -> Callable[[Path, dict[str, str]], None]:
    def apply(path: Path, env: dict[str, str]) -> None:
        path.write_bytes(data)

    return apply


def _replace(make: Callable[[Path], None]) -> Callable[[Path, dict[str, str]], None]:
    def apply(path: Path, env: dict[str, str]) -> None:
        path.unlink()
        make(path)

    return apply


# (class, how the file is broken, what the error must say). "{token}" and friends are filled in
# with ciphertexts made for the test's key; ":N:" means the error names line N.
CATALOGUE: list[tuple[str, Callable[[Path, dict[str, str]], None], str]] = [
    ("yaml: unclosed bracket", _text("name: [Victim\n"), ":2:1: YAML syntax error"),
    ("yaml: mapping in a scalar", _text("name: a: b\n"), ":1:8: YAML syntax error"),
    ("yaml: tab indentation", _text("plugins:\n\techo: {{}}\n"), ":2:1: YAML syntax error"),
    ("yaml: a second document", _text("name: A\n---\nname: B\n"), ":2:1: a second YAML document"),
    ("yaml: not a mapping", _text("- a\n- b\n"), ":1:1: expected a mapping"),
    ("yaml: python tag", _text("name: !!python/object:os.system x\n"), ":1:7: the YAML tag"),
    ("yaml: merge key", _text("base: &b {{x: 1}}\nllm:\n  <<: *b\n"), ":3:3: merge keys"),
    ("yaml: duplicate key", _text("name: A\nname: B\n"), ":2:1: duplicate key 'name'"),
    ("yaml: control character", _bytes(b"name: A\x07\n"), ":1:8: control character"),
    ("type: integer expected", _text("history: ten\n"), ":1:10: history: expected an integer"),
    ("type: boolean expected", _text("default: 2\n"), ":1:10: default: expected true or false"),
    ("type: mapping expected", _text("plugins: [echo]\n"), ":1:10: plugins: expected a mapping"),
    (
        "yaml 1.1: a word read as a boolean",
        _text("name: Off\n"),
        ':1:7: name: expected a string, found true or false (False): quote it: name: "Off"',
    ),
    ("unknown key (typo)", _text("system_promt: hi\n"), ":1:1: system_promt: unknown key"),
    (
        "unknown plugin type",
        _text("plugins:\n  slack: {{}}\n"),
        ":2:3: plugins.slack: unknown plugin",
    ),
    (
        "unknown key in a plugin",
        _text("plugins:\n  echo: {{x: 1}}\n"),
        "plugins.echo.x: unknown key",
    ),
    (
        "missing required key",
        _text("plugins:\n  n8n: {{mode: primary}}\n"),
        ":2:3: plugins.n8n: missing required key 'webhook_url'",
    ),
    (
        "enum",
        _text("plugins:\n  n8n: {{webhook_url: '{hook}', mode: primry}}\n"),
        "plugins.n8n.mode: expected one of: primary, fallback",
    ),
    ("duration", _text("restart: {{max: 5 minutes}}\n"), ":1:16: restart.max: expected a duration"),
    ("number out of range", _text("history: -1\n"), ":1:10: history: must be ≥ 0"),
    ("empty name", _text("name: ''\n"), ":1:7: name: must not be empty"),
    ("duplicate name (another file's)", _text("name: BYSTANDER\n"), "already used by"),
    ("a second default", _text("default: true\n"), "is the default agent already"),
    (
        "plaintext secret",
        _text("llm: {{base_url: u, model: m, api_key: sk-plain}}\n"),
        ":1:39: llm.api_key: plaintext secret",
    ),
    (
        "tampered ciphertext",
        _text("llm: {{base_url: u, model: m, api_key: '{tampered}'}}\n"),
        "llm.api_key: does not decrypt",
    ),
    (
        "moved ciphertext",
        _text("llm: {{base_url: u, model: m, api_key: '{moved}'}}\n"),
        "llm.api_key: does not decrypt",
    ),
    (
        "truncated ciphertext",
        _text("llm: {{base_url: u, model: m, api_key: '{truncated}'}}\n"),
        "llm.api_key: does not decrypt",
    ),
    (
        "unknown key id",
        _text("llm: {{base_url: u, model: m, api_key: '{foreign}'}}\n"),
        "no private key with id",
    ),
    (
        "malformed ENC value",
        _text("llm: {{base_url: u, model: m, api_key: 'ENC[hpke1,zz'}}\n"),
        "malformed ENC value",
    ),
    (
        "unknown scheme",
        _text("llm: {{base_url: u, model: m, api_key: 'ENC[rot13,00000000,AA]'}}\n"),
        "unknown encryption scheme 'rot13'",
    ),
    ("encrypted name", _text("name: '{name_token}'\n"), ":1:7: name: the name cannot be encrypted"),
    ("alias bomb", _text(BOMB), "expands to more than"),
    ("deep nesting", _text("a: " + "[" * 5000 + "\n"), "nested deeper than 32 levels"),
    ("over 1 MiB", _text("description: '" + "x" * MAX_FILE_BYTES + "'\n"), "limited to"),
    ("binary", _bytes(b"\x7fELF\x02\x01\x01\x00\x00"), "binary file (a NUL byte"),
    ("not UTF-8", _bytes(b"name: caf\xe9\n"), ":1:10: not UTF-8 (byte 0xe9)"),
    (
        "dangling symlink",
        _replace(lambda p: p.symlink_to(p.parent / "gone.yaml")),
        "broken symlink to",
    ),
    ("looping symlink", _replace(lambda p: p.symlink_to(p)), "symlink loop"),
    ("a FIFO instead of a file", _replace(os.mkfifo), "not a regular file"),
    ("a directory instead of a file", _replace(lambda p: p.mkdir()), "not a regular file"),
    (
        "memory: a keep that is no duration",
        _text("memory:\n  keep: never\n"),
        ":2:9: memory.keep: expected a duration (90d, 12h, 30m...) or forever",
    ),
    (
        "memory: facts without an llm to learn them",
        _text("memory:\n  facts: true\n"),
        ":2:3: memory.facts: facts are learned by the agent's llm, and this agent has none",
    ),
    (
        "tools: a server of two kinds at once",
        _text("tools:\n  x: {{command: [a], url: 'http://127.0.0.1:9/mcp'}}\n"),
        ":2:6: tools.x: expected exactly one of command (an MCP server over stdio), url",
    ),
    (
        "tools: a key of another kind of server",
        _text("tools:\n  x:\n    env: {{A: b}}\n    url: 'http://127.0.0.1:9/mcp'\n"),
        ":3:5: tools.x.env: 'env' is for an MCP server started as a child process",
    ),
    (
        "tools: a description on an MCP server (only an n8n workflow's is read)",
        _text("tools:\n  x:\n    command: [a]\n    description: does things\n"),
        ":4:5: tools.x.description: 'description' is for an n8n workflow (n8n)",
    ),
    (
        "tools: allow on an n8n workflow (it is one tool)",
        _text("tools:\n  x:\n    n8n: ENC[x]\n    description: d\n    allow: [a]\n"),
        ":5:5: tools.x.allow: 'allow' picks among an MCP server's tools",
    ),
    (
        "tools: a plaintext header",
        _text(
            "tools:\n  x:\n    url: 'http://127.0.0.1:9/mcp'\n    headers: {{Authorization: abcdefgh}}\n"
        ),
        "tools.x.headers.Authorization: plaintext secret",
    ),
]


@pytest.fixture(autouse=True)
def _reset() -> None:
    testing.attempts.clear()


@pytest.mark.parametrize(("what", "breaks", "says"), CATALOGUE, ids=[c[0] for c in CATALOGUE])
async def test_bad_input_keeps_the_fleet_running(
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    what: str,
    breaks: Callable[[Path, dict[str, str]], None],
    says: str,
) -> None:
    public = generate_key_pair(tmp_path / "keys", "k")
    other = generate_key_pair(tmp_path / "elsewhere", "other")  # a key this host lacks
    token = seal("sk-real", public.key, "llm.api_key")
    i = token.rindex(",") + 5
    env = {
        "tampered": token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :],
        "moved": seal("sk-real", public.key, "plugins.n8n.webhook_url"),
        "truncated": token[:-12] + "]",
        "foreign": seal("sk-real", other.key, "llm.api_key"),
        "name_token": seal("Victim", public.key, "name"),
        "hook": seal("http://127.0.0.1:9/hook", public.key, "plugins.n8n.webhook_url"),
    }
    victim = write(tmp_path, "victim.yaml", GOOD)
    write(tmp_path, "bystander.yaml", "name: Bystander\ndefault: true\nplugins:\n  echo: {}\n")
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path)
        await rt.reconciler.rescan()
        await trio.sleep(1)
        before = dict(testing.attempts)

        breaks(victim, env)
        assert await rt.reconciler.apply_paths([victim]) == ["error"]
        await trio.sleep(1)

        (problems,) = rt.table.problems().values()
        message = "\n".join(str(p) for p in problems)
        assert message.startswith(str(victim)), message
        assert says in message, message
        assert "sk-real" not in message and "sk-plain" not in message
        agent = rt.index.get("victim")
        assert agent is not None
        assert agent.system_prompt == "the good version"  # the last good version...
        for key in (("victim", "echo"), ("bystander", "echo")):  # ...and everyone keeps running
            status = rt.table.get(key)
            assert status is not None
            assert status.state == "running"
        assert testing.attempts == before  # nothing was restarted
        nursery.cancel_scope.cancel()


def test_the_catalogue_has_at_least_thirty_classes() -> None:
    assert len({c[0] for c in CATALOGUE}) >= 30


async def test_a_file_vanishing_before_it_is_read_is_a_removal(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    victim = write(tmp_path, "victim.yaml", GOOD)
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path)
        await rt.reconciler.rescan()
        victim.unlink()  # the event said "modified"; the disk says it is gone
        assert await rt.reconciler.apply_paths([victim]) == ["removed"]
        assert rt.table.problems() == {}
        nursery.cancel_scope.cancel()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=2000).map(lambda b: b.decode("utf-8", "replace")),
        st.text(
            alphabet=st.sampled_from(list("abc:-[]{}&*!|>'\"\n #,?%@`\t0123456789.")), max_size=400
        ),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(st.text(max_size=12), children, max_size=4)
            ),
            max_leaves=20,
        ).map(lambda v: yaml.safe_dump({"plugins": v, "name": v}, allow_unicode=True)),
    )
)
def test_fuzzed_input_only_ever_raises_config_errors(text: str) -> None:
    # Whatever the bytes, the loader answers with an Agent or a located ConfigError: never
    # another exception, never a hang.
    try:
        parse_agent(text, "fuzz.yaml", "fuzz", Keyring(), plugins=testing.plugins())
    except ConfigError as exc:
        problems = exc.problems
    else:
        return
    assert problems
    assert all(p.file == "fuzz.yaml" and p.line >= 0 and p.column >= 0 for p in problems)
