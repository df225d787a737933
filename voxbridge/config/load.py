"""Agent files → validated, decrypted :class:`Agent` values, each file on its own.

The pipeline for one file: read it defensively (size cap, regular files only, UTF-8, no NUL) →
:func:`~voxbridge.config.nodes.compose` (located nodes, bounded depth and size) → JSON Schema
validation → secrets: every ``ENC[...]`` value decrypted for its field path, every plaintext value
in a secret field reported → :class:`Agent`. Every problem is a :class:`Problem` with
file:line:col, collected rather than stopping at the first, and no message ever quotes a secret.

Rules that span files (ids from ``a.yaml`` and ``a.yml``, names unique case-insensitively, at most
one ``default: true``) are applied by :func:`load_directory` in id order: the later file is the
one reported, so adding a conflicting file never takes down the agent that was there first.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import ValidationError

from ..errors import ConfigError, DecryptError, Problem
from ..plugins.api import Plugin, installed_plugins
from ..secrets.crypto import Secret, is_token, open_token
from ..secrets.keys import Keyring
from .model import Agent
from .nodes import Node, compose, line_col
from .schema import agent_schema, secret_paths, validator

__all__ = [
    "MAX_FILE_BYTES",
    "AgentIndex",
    "DirectoryLoad",
    "agent_files",
    "decode_agent_text",
    "is_agent_file",
    "is_agent_id",
    "load_agent_file",
    "load_directory",
    "parse_agent",
    "read_agent_bytes",
    "read_agent_text",
]

MAX_FILE_BYTES = 1 << 20
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_SUFFIXES = (".yaml", ".yml")
_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping (key: value lines)",
    "array": "a list",
    "null": "nothing",
}


def is_agent_id(text: str) -> bool:
    """Whether ``text`` can be an agent's id (a file name without .yaml): SPEC §3's rule."""
    return _ID.fullmatch(text) is not None


def is_agent_file(name: str) -> bool:
    """Whether a directory entry named ``name`` is an agent file rather than an editor's litter.

    Hidden files, swap/backup/temp files and anything not ``.yaml``/``.yml`` are not.
    """
    return not name.startswith((".", "#", "~")) and name.endswith(_SUFFIXES)


def agent_files(agents_dir: Path) -> list[Path]:
    """The agent files in ``agents_dir`` (not sub-directories), sorted by name."""
    try:
        entries = sorted(os.scandir(agents_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    out = []
    for entry in entries:
        if not is_agent_file(entry.name):
            continue
        try:
            if entry.is_dir():
                continue
        except OSError:
            pass  # a symlink loop: let the loader say so
        out.append(agents_dir / entry.name)
    return out


def read_agent_text(path: Path, display: str | None = None) -> str:
    """Read an agent file as text without trusting it.

    Raises:
        ConfigError: missing, a broken or looping symlink, not a regular file, over
            MAX_FILE_BYTES, binary (a NUL byte), or not UTF-8.
    """
    return decode_agent_text(read_agent_bytes(path, display), display or str(path))


def read_agent_bytes(path: Path, display: str | None = None) -> bytes:
    """Read an agent file's bytes without trusting it (what its git blob id is made of).

    Raises:
        ConfigError: missing, a broken or looping symlink, not a regular file, or over
            MAX_FILE_BYTES.
    """
    shown = display or str(path)

    def fail(message: str, line: int = 0, column: int = 0) -> ConfigError:
        return ConfigError([Problem(shown, line, column, "", message)])

    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise fail(f"broken symlink to {os.readlink(path)}: point it at a file") from None
        raise fail("no such file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise fail("symlink loop: the link points back at itself") from None
        raise fail(f"cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise fail("not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        raise fail(f"{st.st_size} bytes: agent files are limited to {MAX_FILE_BYTES} bytes (1 MiB)")
    try:
        # O_NONBLOCK: if a FIFO replaced the file since stat(), open() must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise fail("not a regular file")
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise fail(f"over {MAX_FILE_BYTES} bytes: agent files are limited to 1 MiB")
    return data


def decode_agent_text(data: bytes, shown: str) -> str:
    """An agent file's bytes as text.

    Raises:
        ConfigError: binary (a NUL byte), or not UTF-8.
    """

    def fail(message: str, line: int = 0, column: int = 0) -> ConfigError:
        return ConfigError([Problem(shown, line, column, "", message)])

    nul = data.find(b"\0")
    if nul >= 0:
        raise fail(f"binary file (a NUL byte at offset {nul}): an agent file is UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        good = data[: exc.start].decode("utf-8", "replace")
        line, col = line_col(good, len(good))
        raise fail(
            f"not UTF-8 (byte 0x{data[exc.start]:02x}): save the file as UTF-8", line, col
        ) from None


def _dotted(path: Iterable[str | int]) -> str:
    return ".".join(str(p) for p in path)


def _shown(value: Any, secret: bool) -> str:
    if secret:
        return "a value (not shown: secret field)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    for name, pytype in (("boolean", bool), ("integer", int), ("number", float), ("string", str)):
        if isinstance(value, pytype):
            return _TYPE_NAMES[name]
    if isinstance(value, dict):
        return _TYPE_NAMES["object"]
    if isinstance(value, list):
        return _TYPE_NAMES["array"]
    return _TYPE_NAMES["null"]


def _expected_types(schema: Mapping[str, Any]) -> str:
    types = schema.get("type")
    names = [types] if isinstance(types, str) else list(types or [])
    return " or ".join(_TYPE_NAMES.get(t, t) for t in names)


@dataclass
class _Checker:
    file: str
    root: Node
    secrets: frozenset[tuple[str, ...]]
    plugins: Mapping[str, Plugin]
    text: str = ""
    problems: list[Problem] = field(default_factory=list)

    def add(self, path: tuple[str | int, ...], message: str, *, at_key: bool = False) -> None:
        found = self.root.find(path)
        line = col = 0
        if found:
            node, key = found
            target = key if (at_key and key is not None) else node
            line, col = target.line, target.column
        problem = Problem(self.file, line, col, _dotted(path), message)
        if problem not in self.problems:  # nested if/then can say one thing twice
            self.problems.append(problem)

    def _quote_hint(self, path: tuple[str | int, ...], schema: Mapping[str, Any]) -> str:
        """The fix for a word YAML read as something else (YAML 1.1 reads Off, no, yes as
        booleans, 1.10 as a number): quoting it, shown on the user's own line."""
        types = schema.get("type")
        if "string" not in ([types] if isinstance(types, str) else list(types or [])):
            return ""
        found = self.root.find(path)
        if not found or found[0].kind != "scalar" or found[0].style or not self.text:
            return ""
        literal = self.text[found[0].start : found[0].end]
        quoted = '"' + literal.replace("\\", "\\\\").replace('"', '\\"') + '"'
        key = path[-1] if path and isinstance(path[-1], str) else "-"
        return f": quote it: {key}{':' if key != '-' else ''} {quoted}"

    def schema_error(self, err: ValidationError) -> None:
        path = tuple(err.absolute_path)
        secret = tuple(str(p) for p in path) in self.secrets
        v, inst = err.validator, err.instance
        sch: Any = err.schema
        expected: Any = err.validator_value
        if v == "additionalProperties" and isinstance(inst, dict) and isinstance(sch, dict):
            allowed = sorted(sch.get("properties", {}))
            for extra in [k for k in inst if k not in sch.get("properties", {})]:
                node = self.root.find((*path, extra))
                key_node = node[1] if node else None
                if path == ("plugins",):
                    msg = (
                        f"unknown plugin type '{extra}'; installed plugin types: "
                        f"{', '.join(self.plugins) or 'none'}"
                    )
                else:
                    close = difflib.get_close_matches(extra, allowed, n=1)
                    hint = f"did you mean '{close[0]}'? " if close else ""
                    msg = f"unknown key '{extra}': {hint}expected one of: {', '.join(allowed)}"
                line, col = (key_node.line, key_node.column) if key_node else (0, 0)
                self.problems.append(Problem(self.file, line, col, _dotted((*path, extra)), msg))
            return
        if v == "required" and isinstance(sch, dict):
            present = inst if isinstance(inst, dict) else {}
            for name in expected:
                if name not in present:
                    self.add(path, f"missing required key '{name}'", at_key=True)
            return
        if v == "dependentRequired" and isinstance(inst, dict):
            for key, needs in expected.items():
                missing = [n for n in needs if key in inst and n not in inst]
                if missing:
                    self.add((*path, key), _dependent(key, missing[0]), at_key=True)
            return
        if v == "not" and "dependentSchemas" in err.schema_path:
            key = str(err.schema_path[-2])  # the key whose presence the rule is about
            self.add((*path, key), str(sch.get("x-expected")), at_key=True)
            return
        if v == "pattern" and "propertyNames" in err.schema_path:
            path = (*path, str(inst))  # a key of the mapping: point at that key
            what = str(sch.get("x-expected") or "another name")
            self.add(path, f"expected {what}; found {_shown(inst, False)}", at_key=True)
            return
        if v == "type":
            msg = f"expected {_expected_types(sch)}, found {_kind(inst)}"
            if not secret and not isinstance(inst, dict | list):
                msg += f" ({_shown(inst, secret)})"
                msg += self._quote_hint(path, sch)
        elif v == "oneOf" and isinstance(inst, dict):
            what = str(sch.get("x-expected") or "another kind of value")
            keys = [b["required"][0] for b in expected if b.get("required")]
            found = " and ".join(k for k in keys if k in inst) or "none of them"
            msg = f"expected {what}; found {found}"
        elif v in ("anyOf", "oneOf"):
            what = str(sch.get("x-expected") or "another kind of value").rstrip(".")
            what = what[0].lower() + what[1:]
            msg = f"expected {what}; found {_shown(inst, secret)}"
        elif v == "enum":
            options = ", ".join(str(o) for o in expected)
            msg = f"expected one of: {options}; found {_shown(inst, secret)}"
        elif v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            sign = {"minimum": "≥", "maximum": "≤", "exclusiveMinimum": ">"}.get(v, "<")
            msg = f"must be {sign} {err.validator_value}; found {_shown(inst, secret)}"
        elif v in ("minLength", "minItems"):
            msg = "must not be empty"
        elif v == "maxLength":
            msg = f"longer than {err.validator_value} characters"
        elif v == "uniqueItems":
            msg = "lists the same item twice"
        elif v == "pattern":
            what = str(sch.get("x-expected") or sch.get("description") or "another form")
            msg = f"expected {what[0].lower() + what[1:].rstrip('.')}; found {_shown(inst, secret)}"
        else:  # pragma: no cover - other keywords are not used by the built-in schema
            msg = "invalid value" if secret else err.message
        self.add(path, msg)


_GOES_WITH = {
    "command": "an MCP server started as a child process (command)",
    "url": "an MCP server over HTTP (url)",
    "n8n": "an n8n workflow (n8n)",
}


def _dependent(key: str, needed: str) -> str:
    """Why ``key`` is out of place without ``needed`` (a tool server's dependentRequired)."""
    if key in _GOES_WITH.keys() - {needed}:
        return f"'{key}' needs '{needed}' beside it"
    return f"'{key}' is for {_GOES_WITH.get(needed, repr(needed))}: remove it, or add '{needed}'"


def _errors_in_order(errors: Iterable[ValidationError]) -> list[ValidationError]:
    flat: list[ValidationError] = []
    for err in errors:
        # if/else wraps the real complaint (a missing bot_token) one level down.
        if err.validator in ("if", "then", "else", "allOf") and err.context:
            flat.extend(_errors_in_order(err.context))
        else:
            flat.append(err)
    return flat


def _needs(data: Mapping[str, Any], checker: _Checker) -> None:
    """The plugins' cross-section rules (:attr:`Plugin.needs`)."""
    sections = data.get("plugins")
    if not isinstance(sections, dict):
        return
    for ptype, section in sections.items():
        plugin = checker.plugins.get(ptype)
        if plugin is None or not isinstance(section, dict):
            continue
        for key, needed in plugin.needs.items():
            if key in section and needed not in data:
                checker.add(
                    ("plugins", ptype, key),
                    f"needs the agent's '{needed}' section: add '{needed}: {{}}' at the top "
                    "level (the defaults run offline), or remove this key",
                    at_key=True,
                )


def _memory_needs(data: Mapping[str, Any], checker: _Checker) -> None:
    """Facts are learned by the agent's own LLM: ``memory.facts`` without an ``llm`` would
    silently learn nothing."""
    memory = data.get("memory")
    if isinstance(memory, dict) and memory.get("facts") is True and "llm" not in data:
        checker.add(
            ("memory", "facts"),
            "facts are learned by the agent's llm, and this agent has none: add an llm "
            "section, or set facts: false",
            at_key=True,
        )


def parse_agent(
    text: str,
    file: str,
    agent_id: str,
    keyring: Keyring,
    *,
    plugins: Mapping[str, Plugin] | None = None,
    allow_plaintext_secrets: bool = False,
) -> Agent:
    """Validate and decrypt one agent file's text.

    ``allow_plaintext_secrets`` accepts plaintext in secret fields (as Secret): ``voxbridge edit``
    validates the decrypted copy with it before sealing.

    Raises:
        ConfigError: every problem found, located.
    """
    plugins = installed_plugins() if plugins is None else plugins
    root = compose(text, file)
    problems: list[Problem] = []
    if not is_agent_id(agent_id):
        problems.append(
            Problem(
                file,
                0,
                0,
                "",
                f"'{agent_id}' is not a valid agent id (the file name without .yaml): use "
                "lowercase letters, digits, '-' and '_', starting with a letter or digit",
            )
        )
    if root.kind != "map":
        where = (root.line, root.column) if root.line else (1, 1)
        problems.append(
            Problem(file, *where, "", "expected a mapping of agent settings (key: value)")
        )
        raise ConfigError(problems)
    data = root.to_python()
    schema = agent_schema(plugins)
    checker = _Checker(file, root, secret_paths(schema), plugins, text)
    for err in _errors_in_order(validator(plugins).iter_errors(data)):
        checker.schema_error(err)
    _needs(data, checker)
    _memory_needs(data, checker)
    _open_secrets(data, root, checker, keyring, allow_plaintext_secrets)
    problems.extend(checker.problems)
    problems.sort(key=lambda p: (p.line, p.column))
    if problems:
        raise ConfigError(problems)
    return Agent.from_dict(agent_id, Path(file), data, _locations(root))


def _locations(root: Node) -> dict[str, tuple[int, int]]:
    """Where each top-level key is, and each key one level into a top-level mapping
    (``llm.base_url``, ``plugins.discord``): what runtime messages point at."""
    where = {}
    for key, value in root.items:
        where[key.value] = (key.line, key.column)
        if value.kind == "map":
            where.update({f"{key.value}.{k.value}": (k.line, k.column) for k, _ in value.items})
    return where


def _open_secrets(
    data: dict[str, Any], root: Node, checker: _Checker, keyring: Keyring, allow_plaintext: bool
) -> None:
    """Replace every ENC value in ``data`` by its Secret; report plaintext in secret fields."""
    for path, node in root.scalars():
        value = node.value
        if not isinstance(value, str):
            continue
        key = tuple(str(p) for p in path)
        if is_token(value):
            if path == ("name",):
                checker.add(path, "the name cannot be encrypted: it is shown to Discord users")
                continue
            try:
                opened = open_token(value, dict(keyring.private), _dotted(path))
            except DecryptError as exc:
                checker.add(path, str(exc))
                continue
            _set(data, path, opened)
        elif key in checker.secrets:
            if not allow_plaintext:
                checker.add(
                    path,
                    "plaintext secret: encrypt it in place with "
                    f"`voxbridge encrypt {checker.file}`",
                )
                continue
            _set(data, path, Secret(value))


def _set(data: Any, path: tuple[str | int, ...], value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


def load_agent_file(
    path: Path,
    keyring: Keyring,
    display: str | None = None,
    *,
    plugins: Mapping[str, Plugin] | None = None,
) -> Agent:
    """Read, validate and decrypt one agent file; its id is the file's stem.

    Raises:
        ConfigError: every problem found, each with file:line:col.
    """
    shown = display or str(path)
    return parse_agent(read_agent_text(path, shown), shown, path.stem, keyring, plugins=plugins)


@dataclass
class DirectoryLoad:
    """What a directory held: the agents that loaded, by id, and every problem of the others."""

    agents: dict[str, Agent]
    problems: list[Problem]
    files: int

    @property
    def failed_files(self) -> list[str]:
        return sorted({p.file for p in self.problems})


class AgentIndex:
    """The agents accepted so far, indexed for the rules between files (O(1) per check)."""

    def __init__(self, agents: Iterable[Agent] = ()) -> None:
        self.by_id: dict[str, Agent] = {}
        self._by_name: dict[str, Agent] = {}
        self._defaults: dict[str, Agent] = {}
        self._with_plugin: dict[str, set[str]] = {}
        for agent in agents:
            self.add(agent)

    def add(self, agent: Agent) -> None:
        """Accept ``agent``, replacing the agent of the same id."""
        self.remove(agent.id)
        self.by_id[agent.id] = agent
        self._by_name.setdefault(agent.name.casefold(), agent)
        if agent.default:
            self._defaults[agent.id] = agent
        for plugin in agent.enabled_plugins:
            self._with_plugin.setdefault(plugin, set()).add(agent.id)

    def remove(self, agent_id: str) -> None:
        old = self.by_id.pop(agent_id, None)
        if old is None:
            return
        self._defaults.pop(agent_id, None)
        if self._by_name.get(old.name.casefold()) is old:
            del self._by_name[old.name.casefold()]
        for plugin in old.enabled_plugins:
            self._with_plugin[plugin].discard(agent_id)

    def get(self, agent_id: str) -> Agent | None:
        return self.by_id.get(agent_id)

    def by_name(self, name: str) -> Agent | None:
        """The agent called ``name``, ignoring case."""
        return self._by_name.get(name.casefold())

    def flagged_default(self) -> str | None:
        """The id of the agent that says ``default: true`` (the first by id if, against the
        rules, several do)."""
        return min(self._defaults, default=None)

    def first_with_plugin(self, plugin: str) -> str | None:
        """The smallest id among agents that enable ``plugin``."""
        return min(self._with_plugin.get(plugin, ()), default=None)

    def conflicts(self, agent: Agent) -> list[Problem]:
        """Why ``agent`` may not join: a name in use (ignoring case) or a second default."""

        def problem(key: str, message: str) -> Problem:
            line, col = agent.locations.get(key, (0, 0))
            return Problem(str(agent.file), line, col, key, message)

        problems = []
        same = self._by_name.get(agent.name.casefold())
        if same is not None and same.id != agent.id:
            problems.append(
                problem(
                    "name",
                    f"name '{agent.name}' is already used by {same.where('name')}; agent names "
                    "must be unique (ignoring case)",
                )
            )
        if agent.default:
            other = next((a for a in self._defaults.values() if a.id != agent.id), None)
            if other is not None:
                problems.append(
                    problem(
                        "default",
                        f"{other.where('default')} is the default agent already; at most one "
                        "agent says default: true",
                    )
                )
        return problems


def load_directory(
    agents_dir: Path, keyring: Keyring, *, plugins: Mapping[str, Plugin] | None = None
) -> DirectoryLoad:
    """Load every agent file in ``agents_dir``; a broken file never stops the others."""
    index = AgentIndex()
    problems: list[Problem] = []
    paths = agent_files(agents_dir)
    by_id: dict[str, Path] = {}
    for path in paths:
        if path.stem in by_id:
            problems.append(
                Problem(
                    str(path),
                    0,
                    0,
                    "",
                    f"agent id '{path.stem}' is also defined by {by_id[path.stem]}; keep one file",
                )
            )
            continue
        by_id[path.stem] = path
        try:
            agent = load_agent_file(path, keyring, plugins=plugins)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        clash = index.conflicts(agent)
        if clash:
            problems.extend(clash)
            continue
        index.add(agent)
    return DirectoryLoad(index.by_id, problems, len(paths))
