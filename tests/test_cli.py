"""The command line as a user runs it: a subprocess, its output and its exit codes."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import CliRunner, clean_env, plaintext
from voxbridge import __version__

TOKEN = re.compile(r"ENC\[hpke1,[0-9a-f]{8},[A-Za-z0-9_-]+\]")
PLAIN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.Gx7abc.plaintext-token-value-123"


@pytest.fixture(autouse=True)
def _scan_for_the_token() -> None:
    plaintext(PLAIN)


AGENT = f"""\
# Support agent
name: Support
system_prompt: "You are helpful."   # trailing comment
plugins:
  discord:
    enabled: true
    bot_token: {PLAIN}
"""


@pytest.fixture
def project(cli: CliRunner, tmp_path: Path) -> Path:
    r = cli("init", ".")
    assert r.returncode == 0, r.stderr
    return tmp_path


def no_traceback(r: object) -> None:
    assert "Traceback" not in getattr(r, "stderr", "") + getattr(r, "stdout", "")


def test_version_and_help(cli: CliRunner) -> None:
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"voxbridge {__version__}"
    r = cli("--help")
    for command in ("init", "keys", "encrypt", "decrypt", "edit", "check", "schema"):
        assert command in r.stdout


def test_console_script_is_installed(tmp_path: Path) -> None:
    import subprocess

    script = Path(sys.executable).with_name("voxbridge")
    assert script.exists(), "pip install -e . installs the voxbridge console script"
    r = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and __version__ in r.stdout


def test_init_makes_a_project_that_checks(project: Path, cli: CliRunner) -> None:
    assert (project / "agents.d" / "example.yaml").exists()
    assert json.loads((project / "agents.d" / ".schema.json").read_text())["type"] == "object"
    (key,) = (project / "keys").glob("*.key")
    assert key.stat().st_mode & 0o777 == 0o600
    assert (project / "keys").stat().st_mode & 0o777 == 0o700
    r = cli("check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("✓ 1 agent(s) in agents.d/ load cleanly")
    # Running init again changes nothing.
    before = sorted(p.name for p in (project / "keys").iterdir())
    r = cli("init", ".")
    assert r.returncode == 0 and "left as they are" in r.stdout
    assert sorted(p.name for p in (project / "keys").iterdir()) == before


def test_bundled_example_and_schema_are_current() -> None:
    from voxbridge.cli import _schema_text

    root = Path(__file__).parent.parent
    assert (root / "agents.d" / ".schema.json").read_text() == _schema_text()
    bundled = (root / "agents.d" / "example.yaml").read_text()
    assert bundled == (root / "voxbridge" / "config" / "example.yaml").read_text()


def test_the_new_user_flow(project: Path, cli: CliRunner) -> None:
    agent = project / "agents.d" / "support.yaml"
    agent.write_text(AGENT)

    r = cli("check")
    assert r.returncode == 78
    assert (
        "agents.d/support.yaml:7:16: plugins.discord.bot_token: plaintext secret: encrypt it "
        "in place with `voxbridge encrypt agents.d/support.yaml`" in r.stdout
    )
    assert PLAIN not in r.stdout + r.stderr

    r = cli("encrypt", "agents.d/support.yaml")
    assert r.returncode == 0 and "1 value(s) encrypted" in r.stdout
    text = agent.read_text()
    assert PLAIN not in text
    assert TOKEN.sub("X", text) == AGENT.replace(PLAIN, "X")  # only the secret's span changed

    assert cli("encrypt", "agents.d/support.yaml").stdout.endswith("nothing to encrypt\n")
    assert agent.read_text() == text

    r = cli("decrypt", "agents.d/support.yaml")
    assert r.returncode == 0 and r.stdout == AGENT
    assert agent.read_text() == text  # decrypt writes nothing

    r = cli("check")
    assert r.returncode == 0, r.stdout
    assert "2 agent(s)" in r.stdout and "2 enabled plugin(s)" in r.stdout


def test_check_reports_every_problem_in_every_file(project: Path, cli: CliRunner) -> None:
    d = project / "agents.d"
    (d / "broken.yaml").write_text("name: [unclosed\n")
    (d / "typo.yaml").write_text("name: X\nsystem_promt: hi\n")
    (d / "types.yaml").write_text("history: ten\ndefault: maybe\n")
    r = cli("check")
    assert r.returncode == 78
    lines = r.stdout.splitlines()
    assert lines[:4] == [
        "agents.d/broken.yaml:2:1: YAML syntax error: while parsing a flow sequence, did not find"
        " expected ',' or ']'",
        "agents.d/types.yaml:1:10: history: expected an integer, found a string ('ten')",
        "agents.d/types.yaml:2:10: default: expected true or false, found a string ('maybe')",
        "agents.d/typo.yaml:2:1: system_promt: unknown key 'system_promt': did you mean "
        "'system_prompt'? expected one of: default, description, history, llm, memory, name, "
        "plugins, restart, system_prompt, tool_steps, tools, voice",
    ]
    assert lines[-1] == "✗ 4 problem(s) in 3 of 4 agent file(s) in agents.d/"
    no_traceback(r)


def test_check_without_agents_dir(cli: CliRunner) -> None:
    r = cli("check")
    assert r.returncode == 78
    assert r.stderr == "agents.d: no such directory: run `voxbridge init` or pass --agents-dir\n"


def test_open_private_key_exits_77(project: Path, cli: CliRunner) -> None:
    (key,) = (project / "keys").glob("*.key")
    key.chmod(0o644)
    r = cli("check")
    assert r.returncode == 77
    assert r.stderr.strip().endswith(f"chmod 600 keys/{key.name}")
    no_traceback(r)


def test_usage_errors_are_one_line(project: Path, cli: CliRunner) -> None:
    for args, code, message in [
        (("decrypt", "missing.yaml"), 2, "voxbridge: missing.yaml: no such file\n"),
        (
            ("encrypt", "agents.d/example.yaml", "--field", "nope"),
            2,
            "voxbridge: agents.d/example.yaml: no string value at nope\n",
        ),
        (
            ("encrypt", "agents.d/example.yaml", "--field", "name"),
            2,
            "voxbridge: agents.d/example.yaml: the name cannot be encrypted: it is shown to Discord "
            "users\n",
        ),
    ]:
        r = cli(*args)
        assert (r.returncode, r.stderr) == (code, message)
    r = cli("frobnicate")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = cli("encrypt", "agents.d/example.yaml", cwd=project / "agents.d")
    assert (r.returncode, r.stderr) == (2, "voxbridge: agents.d/example.yaml: no such file\n")


def test_encrypt_without_keys_says_what_to_do(tmp_path: Path, cli: CliRunner) -> None:
    (tmp_path / "a.yaml").write_text(AGENT)
    r = cli("encrypt", "a.yaml")
    assert r.returncode == 78
    assert (
        r.stderr == "voxbridge: no public key in keys/: run `voxbridge keys generate` (or "
        "`voxbridge init`)\n"
    )
    assert (tmp_path / "a.yaml").read_text() == AGENT


def test_encrypt_field_on_request(project: Path, cli: CliRunner) -> None:
    r = cli("encrypt", "agents.d/example.yaml", "--field", "llm.base_url")
    assert r.returncode == 0
    text = (project / "agents.d" / "example.yaml").read_text()
    assert "  base_url: ENC[hpke1," in text
    assert cli("check").returncode == 0
    assert "base_url: http://127.0.0.1:11434/v1\n" in cli("decrypt", "agents.d/example.yaml").stdout


def test_keys_rotate_rewrites_only_enc_values(project: Path, cli: CliRunner) -> None:
    agent = project / "agents.d" / "support.yaml"
    agent.write_text(AGENT)
    assert cli("encrypt", "agents.d/support.yaml").returncode == 0
    before = agent.read_text()
    example_before = (project / "agents.d" / "example.yaml").read_text()
    old_ids = set(re.findall(r"ENC\[hpke1,([0-9a-f]{8}),", before))

    r = cli("keys", "rotate", "--name", "vb-99999999-000000")
    assert r.returncode == 0, r.stderr
    after = agent.read_text()
    changed = [
        (a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b
    ]
    assert len(changed) == 1 and "bot_token" in changed[0][1]
    assert set(re.findall(r"ENC\[hpke1,([0-9a-f]{8}),", after)).isdisjoint(old_ids)
    assert (project / "agents.d" / "example.yaml").read_text() == example_before

    # Old and new private keys are both held; everything opens.
    assert cli("check").returncode == 0
    listing = cli("keys", "list").stdout.splitlines()
    assert listing[-1].startswith("* vb-99999999-000000") and len(listing) == 2
    # Only the new key is needed now.
    for key in (project / "keys").glob("*.key"):
        if "99999999" not in key.name:
            key.unlink()
    assert cli("check").returncode == 0
    assert cli("decrypt", "agents.d/support.yaml").stdout == AGENT


def test_rotate_writes_nothing_when_a_value_does_not_open(project: Path, cli: CliRunner) -> None:
    agent = project / "agents.d" / "support.yaml"
    agent.write_text(AGENT)
    cli("encrypt", "agents.d/support.yaml")
    text = agent.read_text().replace("bot_token: ENC[hpke1,", "bot_token: ENC[hpke1,0")
    agent.write_text(text)
    keys_before = sorted(p.name for p in (project / "keys").iterdir())
    r = cli("keys", "rotate")
    assert r.returncode == 78 and "support.yaml:7:16: plugins.discord.bot_token" in r.stderr
    assert agent.read_text() == text
    assert sorted(p.name for p in (project / "keys").iterdir()) == keys_before


def test_schema_is_the_json_schema(cli: CliRunner) -> None:
    schema = json.loads(cli("schema").stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    discord = schema["properties"]["plugins"]["properties"]["discord"]
    assert discord["properties"]["bot_token"]["x-secret"] is True


def test_key_from_env_only(project: Path, cli: CliRunner) -> None:
    agent = project / "agents.d" / "support.yaml"
    agent.write_text(AGENT)
    cli("encrypt", "agents.d/support.yaml")
    (key,) = (project / "keys").glob("*.key")
    moved = project / "elsewhere.key"
    key.rename(moved)
    assert cli("check").returncode == 78
    assert cli("check", env=clean_env(VOXBRIDGE_KEY_FILE=str(moved))).returncode == 0
    assert cli("check", env=clean_env(VOXBRIDGE_KEY=moved.read_text())).returncode == 0
