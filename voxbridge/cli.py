"""The ``voxbridge`` command line (SPEC §5).

Exit codes follow sysexits: 0 ok, 1 runtime failure, 2 usage, 69 the status server's address
is unavailable (``run``), 77 key permissions, 78 configuration. Every user mistake ends in one
clear line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from . import __version__
from .atomicfile import write_atomic
from .config.duration import parse_duration
from .config.load import agent_files, load_directory, read_agent_text
from .config.schema import agent_schema
from .editor import edit_file, report_stale_copies
from .errors import EX_CONFIG, ConfigError, Problem, UsageError, VoxbridgeError
from .logs import setup_logging
from .memory.location import STORE_ENV, Location
from .runtime.shard import Shard
from .secrets.crypto import key_id
from .secrets.guard import guard_files
from .secrets.inplace import encrypt_text, reencrypt_text, reveal_text
from .secrets.keys import (
    PublicKey,
    current_public_key,
    default_key_name,
    ensure_keys_dir,
    generate_key_pair,
    load_keyring,
    public_keys,
)

__all__ = ["main"]

SCHEMA_FILE = ".schema.json"


def _dirs(parser: argparse.ArgumentParser, *, agents: bool = True, keys: bool = True) -> None:
    if agents:
        parser.add_argument(
            "--agents-dir",
            type=Path,
            default=Path("agents.d"),
            metavar="DIR",
            help="directory of agent files (default: agents.d)",
        )
    if keys:
        parser.add_argument(
            "--keys-dir",
            type=Path,
            default=Path("keys"),
            metavar="DIR",
            help="directory of key pairs (default: keys)",
        )


def _memory_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".voxbridge"),
        metavar="DIR",
        help="runtime state: per-guild selections, downloaded voice models, and memory.db "
        "unless --store says otherwise (default: .voxbridge)",
    )
    parser.add_argument(
        "--store",
        default=os.environ.get(STORE_ENV),
        metavar="URL",
        help="where memory lives: sqlite (memory.db in --state-dir, the default), "
        "sqlite:///path/memory.db, postgresql://user:password@host/db (one for a sharded "
        f"fleet) or none (in the process only); default: ${STORE_ENV}, else sqlite",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voxbridge",
        description="Keeps a fleet of AI agents online, driven by agents.d/*.yaml.",
    )
    p.add_argument("--version", action="version", version=f"voxbridge {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("init", help="create agents.d/ with an example agent and a key pair")
    c.add_argument("dir", nargs="?", type=Path, default=Path(), metavar="DIR")

    keys = sub.add_parser("keys", help="make or rotate key pairs")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    c = ksub.add_parser("generate", help="make a new key pair in keys/")
    c.add_argument("--name", help="file name of the pair (default: vb-<UTC timestamp>)")
    _dirs(c, agents=False)
    c = ksub.add_parser("rotate", help="new key pair, then re-encrypt every secret in agents.d")
    c.add_argument("--name", help="file name of the new pair (default: vb-<UTC timestamp>)")
    _dirs(c)
    c = ksub.add_parser("list", help="the key pairs in keys/ and which one encrypts")
    _dirs(c, agents=False)

    c = sub.add_parser("encrypt", help="encrypt plaintext secrets in place")
    c.add_argument("files", nargs="+", type=Path, metavar="FILE")
    c.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="PATH",
        help="also encrypt this dotted field (e.g. system_prompt); repeatable",
    )
    _dirs(c, agents=False)

    c = sub.add_parser("decrypt", help="print a file with its secrets decrypted (stdout only)")
    c.add_argument("file", type=Path, metavar="FILE")
    _dirs(c, agents=False)

    c = sub.add_parser("edit", help="edit a file decrypted in $VISUAL/$EDITOR, save it encrypted")
    c.add_argument("file", type=Path, metavar="FILE")
    _dirs(c, agents=False)

    c = sub.add_parser("check", help="load, validate and decrypt every agent file; start nothing")
    _dirs(c)

    sub.add_parser("schema", help="print the JSON Schema of an agent file")

    c = sub.add_parser("agents", help="list the agent ids (those a replica owns, with --shard)")
    _dirs(c, keys=False)
    c.add_argument(
        "--shard",
        type=_shard,
        default=Shard(),
        metavar="I/N",
        help="only the agents replica I of N owns",
    )

    c = sub.add_parser("run", help="run every agent's plugins in the foreground")
    _dirs(c)
    c.add_argument(
        "--listen",
        default="127.0.0.1:4900",
        metavar="HOST:PORT",
        help="status server address, or 'none' (default: 127.0.0.1:4900)",
    )
    c.add_argument(
        "--api-token",
        metavar="TOKEN",
        help="bearer token the status server requires (needed off loopback)",
    )
    c.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another name the status server answers to (besides its address and localhost); "
        "repeatable",
    )
    c.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="another web origin (https://ops.example) allowed to use the API and its "
        "sockets from a browser; repeatable",
    )
    c.add_argument("--log-format", choices=("text", "json"), default="text")
    c.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    c.add_argument(
        "--default-agent-ttl",
        type=_duration,
        default=300.0,
        metavar="DURATION",
        help="how long the default agent is cached (default: 300s)",
    )
    c.add_argument(
        "--poll", action="store_true", help="poll for file changes (filesystems without inotify)"
    )
    c.add_argument(
        "--shard",
        type=_shard,
        default=Shard(),
        metavar="I/N",
        help="run only the agents replica I of N owns (rendezvous hashing)",
    )
    _memory_options(c)
    c.add_argument(
        "--discord-api-base",
        metavar="URL",
        help="a Discord-compatible API instead of https://discord.com/api/v10",
    )
    c.add_argument(
        "--discord-ca-file",
        type=Path,
        metavar="FILE",
        help="also trust this CA (PEM) for Discord's TLS: a test server's, or a proxy's",
    )
    c.add_argument(
        "--grace",
        type=_duration,
        default=5.0,
        metavar="DURATION",
        help="how long a stopping actor may take to clean up (default: 5s)",
    )

    c = sub.add_parser("chat", help="talk to an agent in the terminal (no `run` needed)")
    c.add_argument("agent", metavar="AGENT", help="the agent's id (file name) or name")
    c.add_argument("--once", metavar="TEXT", help="answer this one message, then exit")
    _conversation(c)
    _dirs(c)
    _memory_options(c)

    c = sub.add_parser(
        "tools", help="the tools each of an agent's servers offers, or why it cannot start"
    )
    c.add_argument("agent", metavar="AGENT", help="the agent's id (file name) or name")
    c.add_argument("--json", action="store_true", help="print a JSON object by server")
    _dirs(c)

    c = sub.add_parser("talk", help="speak a WAV file to an agent; hear (and time) its answer")
    c.add_argument("agent", metavar="AGENT", help="the agent's id (file name) or name")
    c.add_argument("--in", dest="question", type=Path, required=True, metavar="WAV")
    c.add_argument("--out", type=Path, metavar="WAV", help="where to write the spoken answer")
    _conversation(c)
    _dirs(c)
    _memory_options(c)

    c = sub.add_parser(
        "memory", help="what an agent remembers: list, export, forget, import (JSON Lines)"
    )
    c.add_argument("agent", metavar="AGENT", help="the agent's id (its memory outlives its file)")
    c.add_argument(
        "action",
        choices=("list", "export", "forget", "import"),
        help="list conversations and people (or one's facts or turns); export as JSON Lines; "
        "forget a person, a conversation or --all; import JSON Lines (idempotent)",
    )
    c.add_argument(
        "--person",
        metavar="P",
        help="only this person: discord:<user id>, web:<id>, terminal:<name>",
    )
    c.add_argument(
        "--conversation",
        metavar="C",
        help="only this conversation: discord:<channel id>, discord-voice:<id>, web:<id>, "
        "terminal:<name>",
    )
    c.add_argument(
        "--all", dest="everything", action="store_true", help="forget: everything of AGENT"
    )
    c.add_argument(
        "--file",
        type=Path,
        metavar="FILE",
        help="export to / import from FILE (default: stdout / stdin)",
    )
    _memory_options(c)

    c = sub.add_parser("guard", help="fail on private keys or plaintext secrets (pre-commit)")
    c.add_argument("files", nargs="*", type=Path, metavar="FILE")

    c = sub.add_parser("status", help="the running instance's agents and actors")
    c.add_argument("--url", default="http://127.0.0.1:4900", help="the status server's URL")
    c.add_argument("--api-token", metavar="TOKEN", help="the server's API token, if it has one")
    c.add_argument("--json", action="store_true", help="print the API's JSON")
    c.add_argument("--follow", action="store_true", help="then stream every change as it happens")
    c.add_argument(
        "--wait-for",
        metavar="BLOB|COMMIT",
        help="exit 0 once every agent runs this version (a git commit of agents.d, or a file's "
        "blob id as `git hash-object` prints it); 1 with the reason if it was rejected or on "
        "--timeout",
    )
    c.add_argument(
        "--timeout",
        type=_duration,
        default=60.0,
        help="how long --wait-for waits (default 60s)",
    )
    return p


def _conversation(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--conversation",
        default="default",
        metavar="NAME",
        help="the stored conversation to go on with (terminal:NAME in memory; default: default)",
    )


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_init(args: argparse.Namespace) -> int:
    root: Path = args.dir
    agents_dir, keys_dir = root / "agents.d", root / "keys"
    agents_dir.mkdir(parents=True, exist_ok=True)
    example = agents_dir / "example.yaml"
    if not any(agents_dir.glob("*.y*ml")):
        example.write_text(files("voxbridge.config").joinpath("example.yaml").read_text("utf-8"))
        print(f"✓ {example}: an example agent to edit or copy")
    else:
        print(f"· {agents_dir} has agent files already: left as they are")
    write_atomic(agents_dir / SCHEMA_FILE, _schema_text())
    ensure_keys_dir(keys_dir)
    existing = public_keys(keys_dir)
    if existing:
        print(f"· {keys_dir} holds key {existing[-1].name} already: no new key made")
    else:
        key = generate_key_pair(keys_dir)
        print(f"✓ {keys_dir}/{key.name}.pub: public key (id {key.key_id}), commit it")
        print(f"✓ {keys_dir}/{key.name}.key: private key (0600, git-ignored), never share it")
    print(
        "Next: put a bot token or API key in an agent file, then run "
        f"`voxbridge encrypt {agents_dir}/<id>.yaml` and `voxbridge check`."
    )
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    if args.keys_command == "generate":
        key = generate_key_pair(args.keys_dir, args.name)
        print(f"✓ {args.keys_dir}/{key.name}.pub and .key (id {key.key_id}): now the current key")
        return 0
    if args.keys_command == "list":
        keyring = load_keyring(args.keys_dir)
        keys = public_keys(args.keys_dir)
        if not keys:
            raise UsageError(f"no keys in {args.keys_dir}/: run `voxbridge keys generate`")
        for key in keys:
            mark = "*" if key is keys[-1] else " "
            held = "private key held" if key.key_id in keyring.private else "public only"
            print(f"{mark} {key.name}  id {key.key_id}  {held}")
        return 0
    return _rotate(args)


def _rotate(args: argparse.Namespace) -> int:
    _agents_dir(args.agents_dir)
    if not public_keys(args.keys_dir):
        raise UsageError(
            f"no key pair in {args.keys_dir}/ to rotate: run `voxbridge keys generate`"
        )
    keyring = load_keyring(args.keys_dir)
    private = X25519PrivateKey.generate()
    name = args.name or default_key_name()
    new = PublicKey(name, key_id(private.public_key()), private.public_key())
    plan: list[tuple[Path, str, int]] = []
    problems: list[Problem] = []
    for path in agent_files(args.agents_dir):
        try:
            text = read_agent_text(path)
            new_text, count = reencrypt_text(text, str(path), keyring, new)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if count:
            plan.append((path, new_text, count))
    if problems:
        raise ConfigError(problems)  # nothing written yet: old keys and files stand
    generate_key_pair(args.keys_dir, name, private)
    for path, text, count in plan:
        write_atomic(path, text)
        print(f"🔄 {path}: {count} value(s) re-encrypted")
    total = sum(c for _, _, c in plan)
    print(f"✓ key {name} (id {new.key_id}) is current; {total} value(s) in {len(plan)} file(s)")
    print("  Keep the old .key files while any host or branch still needs them; then delete them.")
    return 0


def _fields(raw: Sequence[str]) -> list[tuple[str, ...]]:
    out = []
    for item in raw:
        parts = tuple(item.split("."))
        if not all(parts):
            raise UsageError(f"--field {item}: expected a dotted path such as llm.base_url")
        out.append(parts)
    return out


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise UsageError(f"{path}: {'not a regular file' if path.exists() else 'no such file'}")
    return path


def _agents_dir(path: Path) -> Path:
    if not path.is_dir():
        what = "not a directory" if path.exists() else "no such directory"
        hint = f"{what}: run `voxbridge init` or pass --agents-dir"
        raise ConfigError([Problem(str(path), 0, 0, "", hint)])
    return path


def cmd_encrypt(args: argparse.Namespace) -> int:
    fields = _fields(args.field)
    paths = [_existing(path) for path in args.files]
    public = current_public_key(args.keys_dir)
    problems: list[Problem] = []
    for path in paths:
        shown = str(path)
        try:
            text = read_agent_text(path, shown)
            new_text, count = encrypt_text(text, shown, public, fields)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if count:
            write_atomic(path, new_text)
            print(f"🔒 {shown}: {count} value(s) encrypted for key {public.name} ({public.key_id})")
        else:
            print(f"· {shown}: nothing to encrypt")
    if problems:
        raise ConfigError(problems)
    return 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    shown = str(_existing(args.file))
    revealed = reveal_text(read_agent_text(args.file, shown), shown, load_keyring(args.keys_dir))
    sys.stdout.write(revealed.text)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    report_stale_copies()
    agents_dir = _agents_dir(args.agents_dir)
    result = load_directory(agents_dir, load_keyring(args.keys_dir))
    for problem in sorted(result.problems, key=lambda p: (p.file, p.line, p.column)):
        print(problem)
    if result.problems:
        n, bad = len(result.problems), len(result.failed_files)
        print(f"✗ {n} problem(s) in {bad} of {result.files} agent file(s) in {agents_dir}/")
        return EX_CONFIG
    plugins = sum(len(a.enabled_plugins) for a in result.agents.values())
    count = len(result.agents)
    print(f"✓ {count} agent(s) in {agents_dir}/ load cleanly ({plugins} enabled plugin(s))")
    return 0


def _schema_text() -> str:
    return json.dumps(agent_schema(), indent=2, ensure_ascii=False) + "\n"


def cmd_agents(args: argparse.Namespace) -> int:
    for path in agent_files(_agents_dir(args.agents_dir)):
        if args.shard.owns(path.stem):
            print(path.stem)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(_schema_text())
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    return edit_file(args.file, args.keys_dir)


_LOOPBACK = ("127.", "localhost", "::1", "[::1]")


def cmd_run(args: argparse.Namespace) -> int:
    listen = None if args.listen.lower() == "none" else args.listen
    if listen is not None:
        host = listen.rsplit(":", 1)[0]
        if not host.startswith(_LOOPBACK) and not args.api_token:
            raise UsageError(
                f"--listen {listen} is reachable from other hosts: pass --api-token TOKEN "
                "(clients send it as Authorization: Bearer), or listen on 127.0.0.1"
            )
    if state_inside(args.state_dir, args.agents_dir):
        raise UsageError(f"--state-dir {args.state_dir} must not be inside {args.agents_dir}")
    Location.parse(args.store, args.state_dir)  # a bad --store fails before anything starts
    from .runtime.run import RunOptions, run  # trio and friends: only for this command

    setup_logging(args.log_format, args.log_level)
    options = RunOptions(
        agents_dir=args.agents_dir,
        keys_dir=args.keys_dir,
        listen=listen,
        api_token=args.api_token,
        allow_hosts=tuple(args.allow_host),
        allow_origins=tuple(args.allow_origin),
        log_format=args.log_format,
        log_level=args.log_level,
        default_agent_ttl=args.default_agent_ttl,
        poll=args.poll,
        shard=args.shard,
        state_dir=args.state_dir,
        store=args.store,
        discord_api_base=args.discord_api_base,
        discord_ca_file=args.discord_ca_file,
        grace=args.grace,
    )
    return run(options)


def cmd_chat(args: argparse.Namespace) -> int:
    from .terminal import run_chat  # trio and httpx: only for this command

    setup_logging("text", "warning", stream=sys.stderr)
    return run_chat(
        args.agents_dir,
        args.keys_dir,
        args.agent,
        args.once,
        conversation=args.conversation,
        location=Location.parse(args.store, args.state_dir),
    )


def cmd_tools(args: argparse.Namespace) -> int:
    from .tools.local import tools_command  # the MCP SDK: only for this command

    setup_logging("text", "error", stream=sys.stderr)
    return tools_command(args.agents_dir, args.keys_dir, args.agent, args.json)


def cmd_talk(args: argparse.Namespace) -> int:
    from .talk import run_talk  # the audio stack: only for this command

    setup_logging("text", "critical", stream=sys.stderr)  # it prints every error itself
    logging.getLogger("voxbridge.voice.models").setLevel("INFO")  # a download's progress
    return run_talk(
        args.agents_dir,
        args.keys_dir,
        args.agent,
        args.question,
        args.out,
        conversation=args.conversation,
        location=Location.parse(args.store, args.state_dir),
        state_dir=args.state_dir,
    )


def cmd_memory(args: argparse.Namespace) -> int:
    from .memory.command import memory_command  # the database drivers: only for this command

    setup_logging("text", "warning", stream=sys.stderr)
    return memory_command(
        Location.parse(args.store, args.state_dir),
        args.agent,
        args.action,
        person=args.person,
        conversation=args.conversation,
        everything=args.everything,
        file=args.file,
    )


def cmd_guard(args: argparse.Namespace) -> int:
    problems = guard_files(args.files)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"✗ {len(problems)} thing(s) that must not be committed", file=sys.stderr)
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .status import show_status, wait_for  # httpx: only for this command

    if args.wait_for:
        return wait_for(args.url, args.api_token, args.wait_for, timeout=args.timeout)
    return show_status(args.url, args.api_token, json_out=args.json, follow=args.follow)


def state_inside(state_dir: Path, agents_dir: Path) -> bool:
    """Whether the state directory would sit inside agents.d (where it does not belong)."""
    state, agents = state_dir.resolve(), agents_dir.resolve()
    return state == agents or agents in state.parents


_COMMANDS = {
    "init": cmd_init,
    "keys": cmd_keys,
    "encrypt": cmd_encrypt,
    "decrypt": cmd_decrypt,
    "edit": cmd_edit,
    "check": cmd_check,
    "schema": cmd_schema,
    "agents": cmd_agents,
    "run": cmd_run,
    "status": cmd_status,
    "chat": cmd_chat,
    "tools": cmd_tools,
    "talk": cmd_talk,
    "memory": cmd_memory,
    "guard": cmd_guard,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns (and, as a console script, exits with) its exit code."""
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return exc.exit_code
    except VoxbridgeError as exc:
        print(f"voxbridge: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("voxbridge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"voxbridge: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
