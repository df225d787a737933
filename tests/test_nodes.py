"""The located YAML composer: positions, spans, and hostile documents failing fast."""

from __future__ import annotations

import time

import pytest

from voxbridge.config.nodes import MAX_DEPTH, compose
from voxbridge.errors import ConfigError


def problem(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        compose(text, "f.yaml")
    (p,) = info.value.problems
    return str(p)


def test_values_and_positions() -> None:
    text = 'name: "héllo"\nplugins:\n  discord:\n    channels: [1, 2]\n'
    root = compose(text, "f.yaml")
    assert root.to_python() == {"name": "héllo", "plugins": {"discord": {"channels": [1, 2]}}}
    found = root.find(("plugins", "discord", "channels"))
    assert found is not None
    node, key = found
    assert (key.line, key.column) == (4, 5) if key else False
    assert node.flow and node.children[0].flow
    name = root.get("name")
    assert name is not None
    # Spans are character offsets, so non-ASCII text before a value does not shift them.
    assert text[name.start : name.end] == '"héllo"'
    assert name.style == '"'


def test_block_scalar_span_covers_its_lines() -> None:
    text = "a: |\n  one\n  two\nb: 1\n"
    node = compose(text, "f.yaml").get("a")
    assert node is not None
    assert text[node.start : node.end] == "|\n  one\n  two\n"


def test_empty_document_is_an_empty_map() -> None:
    assert compose("# only a comment\n", "f.yaml").to_python() == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\na: 2\n", "f.yaml:2:1: duplicate key 'a' (first at line 1)"),
        ("a: !!python/object:os.system x\n", "f.yaml:1:4: the YAML tag"),
        ("a: !!binary aGk=\n", "f.yaml:1:4: the YAML tag tag:yaml.org,2002:binary"),
        ("---\na: 1\n---\nb: 2\n", "f.yaml:3:1: a second YAML document"),
        ("name: [unclosed\n", "f.yaml:2:1: YAML syntax error"),
        ("? [a]\n: b\n", "f.yaml:1:3: a key must be a plain string"),
        ("a: 1\nb: \x00\n", "f.yaml:2:4: control character #x0000"),
        ("base: &b {x: 1}\nc:\n  <<: *b\n", "f.yaml:3:3: merge keys (<<) are not supported"),
        ("a: b: c\n", "f.yaml:1:5: YAML syntax error"),
    ],
)
def test_located_errors(text: str, expected: str) -> None:
    assert problem(text).startswith(expected)


def test_aliases_within_budget_are_fine() -> None:
    assert compose("a: &x [1, 2]\nb: *x\n", "f.yaml").to_python() == {"a": [1, 2], "b": [1, 2]}


def test_alias_bomb_fails_fast() -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    started = time.perf_counter()
    message = problem("\n".join(lines) + "\n")
    assert "expands to more than" in message
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 200, 200_000])
@pytest.mark.parametrize("opener", ["[", "{a: ", "- "])
def test_deep_nesting_fails_fast_without_crashing(opener: str, depth: int) -> None:
    # PyYAML's own composer segfaults on this; the event reader must stop at MAX_DEPTH. From
    # 6.0.4 PyYAML's scanner has a limit of its own (1,000) that trips first on deeper input:
    # the message must not depend on which limit did.
    depth = min(depth, 2_000) if opener == "- " else depth  # block indentation grows as n²
    text = (
        "a: " + opener * depth
        if opener != "- "
        else "a:\n" + "".join(" " * (2 * i) + "- \n" for i in range(depth))
    )
    started = time.perf_counter()
    assert f"nested deeper than {MAX_DEPTH} levels" in problem(text)
    assert time.perf_counter() - started < 1.0
