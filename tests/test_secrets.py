"""Sealing values, the Secret type, and in-place rewriting of secret values in YAML text."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from voxbridge import DecryptError, Secret
from voxbridge.config.load import parse_agent
from voxbridge.secrets.crypto import key_id, open_token, parse_token, seal
from voxbridge.secrets.inplace import encrypt_text, reencrypt_text, reseal_text, reveal_text
from voxbridge.secrets.keys import Keyring, PublicKey, generate_key_pair, load_keyring

TOKEN = re.compile(r"ENC\[hpke1,[0-9a-f]{8},[A-Za-z0-9_-]+\]")
GOLDEN = Path(__file__).parent / "golden"


def test_round_trip(public: PublicKey, keyring: Keyring) -> None:
    token = seal("hello wörld", public.key, "llm.api_key")
    assert TOKEN.fullmatch(token)
    assert parse_token(token).key_id == public.key_id == key_id(public.key)
    assert open_token(token, dict(keyring.private), "llm.api_key").reveal() == "hello wörld"


def test_every_flipped_payload_character_is_caught(public: PublicKey, keyring: Keyring) -> None:
    token = seal("value", public.key, "f")
    start = token.rindex(",") + 1
    for i in range(start, len(token) - 1):
        flipped = token[:i] + ("B" if token[i] == "A" else "A") + token[i + 1 :]
        with pytest.raises(DecryptError, match="altered"):
            open_token(flipped, dict(keyring.private), "f")


def test_sealing_is_randomised(public: PublicKey) -> None:
    assert seal("same", public.key, "f") != seal("same", public.key, "f")


def test_secret_hides_itself() -> None:
    s = Secret("hunter2")
    assert str(s) == "[secret]" and f"{s}" == "[secret]" and f"{s!r}" == "Secret('[secret]')"
    assert "hunter2" not in repr([s]) and "hunter2" not in "%s" % s
    assert s == Secret("hunter2") and s != Secret("hunter3")
    assert hash(s) == hash(Secret("hunter2"))
    assert s.reveal() == "hunter2"
    with pytest.raises(TypeError):
        pickle.dumps(s)


DOC = "# comment\nplugins:\n  discord:\n    bot_token: {value}   # trailing\n"


@settings(max_examples=150, deadline=None)
# Values starting with "ENC[" are reserved: they are read as (possibly malformed) tokens.
@given(value=st.text(min_size=0, max_size=200).filter(lambda v: not v.startswith("ENC[")))
@example(value="A\n")  # found by a full run: shown plain, its newline was lost
def test_any_string_survives_encrypt_then_decrypt(
    tmp_path_factory: pytest.TempPathFactory, value: str
) -> None:
    keys = _keys(tmp_path_factory)
    public, keyring = keys
    # Written by PyYAML's own emitter (quoted, escaped), encrypted in place, loaded back.
    quoted = yaml.dump(value, default_style='"', width=float("inf"), allow_unicode=True)
    text = DOC.format(value=quoted.removesuffix("\n").removesuffix("..."))
    assert token_in(text, keyring) == value
    sealed, count = encrypt_text(text, "a.yaml", public)
    assert count == 1
    assert token_in(sealed, keyring, sealed=True) == value
    # And reveal → edit-free reseal restores the very same text.
    shown = reveal_text(sealed, "a.yaml", keyring)
    assert token_in(shown.text, keyring) == value
    assert reseal_text(shown.text, "a.yaml", public, shown) == (sealed, 0)
    # A plain (unquoted) token, as `encrypt` writes for plain values, reveals as plain only
    # when the value reads back as the same string.
    plain = sealed.replace('"ENC[', "ENC[").replace(']"', "]")
    shown = reveal_text(plain, "a.yaml", keyring)
    assert token_in(shown.text, keyring) == value


def token_in(text: str, keyring: Keyring, *, sealed: bool = False) -> str:
    """The bot token an agent file's text holds: decrypted (``sealed``: it must be), or in
    plaintext as ``edit`` shows it."""
    agent = parse_agent(text, "a.yaml", "a", keyring, allow_plaintext_secrets=not sealed)
    token: str = agent.plugins["discord"].settings["bot_token"].reveal()
    return token


_cache: dict[str, tuple[PublicKey, Keyring]] = {}


def _keys(factory: pytest.TempPathFactory) -> tuple[PublicKey, Keyring]:
    if "k" not in _cache:
        d = factory.mktemp("keys")
        _cache["k"] = (generate_key_pair(d, "prop"), load_keyring(d, environ={}))
    return _cache["k"]


def test_encrypt_matches_the_golden_file(public: PublicKey) -> None:
    source = (GOLDEN / "support.in.yaml").read_text()
    sealed, count = encrypt_text(source, "support.yaml", public, fields=[("system_prompt",)])
    assert count == 4
    assert TOKEN.sub("<ENC>", sealed) == (GOLDEN / "support.expected.yaml").read_text()


def test_encrypt_is_idempotent(public: PublicKey) -> None:
    source = (GOLDEN / "support.in.yaml").read_text()
    once, _ = encrypt_text(source, "support.yaml", public)
    assert encrypt_text(once, "support.yaml", public) == (once, 0)


def test_reencrypt_changes_only_tokens(tmp_path: Path, public: PublicKey, keyring: Keyring) -> None:
    sealed, _ = encrypt_text((GOLDEN / "support.in.yaml").read_text(), "s.yaml", public)
    new = generate_key_pair(tmp_path / "keys", "newer")
    both = load_keyring(tmp_path / "keys", environ={})
    rotated, count = reencrypt_text(sealed, "s.yaml", both, new)
    assert count == 3
    old_lines, new_lines = sealed.splitlines(), rotated.splitlines()
    changed = [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b]
    assert len(changed) == 3
    for a, b in changed:
        assert TOKEN.sub("<ENC>", a) == TOKEN.sub("<ENC>", b)
        assert f",{new.key_id}," in b
    assert parse_agent(rotated, "s.yaml", "s", both).llm is not None
