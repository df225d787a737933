"""The brain: the LLM stream, n8n, routing and fallback — real httpx against real local servers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
import trio

from tests.fake_brains import FakeLLM, FakeN8n, Plan, start_fake
from voxbridge import BrainError, Secret
from voxbridge.brain import LLMClient, Message, N8nClient, Turn, think
from voxbridge.config.model import Agent, LLMConfig, PluginConfig

HISTORY = [Turn("user", "hi"), Turn("assistant", "hello!"), Turn("user", "how are you?")]


def llm_config(base: str, **kw: object) -> LLMConfig:
    return LLMConfig(base_url=base + "/v1", model="m", **kw)  # type: ignore[arg-type]


async def collect(client: LLMClient, config: LLMConfig, history: Sequence[Turn] = HISTORY) -> str:
    parts: list[str] = []

    async def emit(delta: str) -> None:
        parts.append(delta)

    whole = await client.stream(config, "", history, emit)
    return whole if whole is not None else "".join(parts)


@pytest.mark.parametrize("stream_ok", [True, False])
async def test_llm_streamed_or_not(stream_ok: bool) -> None:
    fake = FakeLLM(Plan([{"reply": "I am fine, thanks"}]), stream_ok=stream_ok)
    deltas: list[str] = []

    async def emit(delta: str) -> None:
        deltas.append(delta)

    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        config = llm_config(base, api_key=Secret("sk-test"), temperature=0.3, max_tokens=50)
        whole = await LLMClient(http).stream(config, "You are kind.", HISTORY, emit)
        # Streamed: a delta per event, as they came; JSON: the whole reply, returned.
        if stream_ok:
            assert (deltas, whole) == (["I ", "am ", "fine, ", "thanks "], None)
        else:
            assert (deltas, whole) == ([], "I am fine, thanks ")
        (body,) = fake.requests
        assert body == {
            "model": "m",
            "stream": True,
            "temperature": 0.3,
            "max_tokens": 50,
            "messages": [
                {"role": "system", "content": "You are kind."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello!"},
                {"role": "user", "content": "how are you?"},
            ],
        }
        assert fake.headers[0]["authorization"] == "Bearer sk-test"
        nursery.cancel_scope.cancel()


async def test_deltas_arrive_while_the_llm_is_still_writing() -> None:
    fake = FakeLLM(Plan([{"chunks": ["one ", "two ", "three"], "chunk_delay": 0.3}]))
    seen: list[tuple[str, int]] = []

    async def emit(delta: str) -> None:
        seen.append((delta, fake.chunks_sent))

    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        with trio.fail_after(5):
            await LLMClient(http).stream(llm_config(base), "", HISTORY, emit)
        nursery.cancel_scope.cancel()
    # Each delta is handed on when its event arrives, before the next one is even sent.
    assert seen == [("one ", 1), ("two ", 2), ("three", 3)]
    assert fake.disconnects == 0


async def test_cancelling_the_consumer_closes_the_request_at_once() -> None:
    fake = FakeLLM(Plan([{"chunks": ["a"] * 100, "chunk_delay": 0.2}]))
    agent = Agent(id="a", file=Path("a.yaml"), name="A")
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        agent = Agent(id="a", file=Path("a.yaml"), name="A", llm=llm_config(base))
        message = Message("s", "u", "ann", "hi")
        with trio.move_on_after(5) as scope:
            async with think(agent, message, HISTORY, http=http) as answer:
                async for _ in answer:
                    if len(answer.text) == 2:
                        break  # the consumer has seen enough: leaves the block
        assert not scope.cancelled_caught
        assert answer.text == "aa" and not answer.done
        # The server sees the client hang up within moments, not after 100 chunks (20 s).
        with trio.fail_after(2):
            await fake.hung_up.wait()
        nursery.cancel_scope.cancel()


async def test_llm_retries_429_honouring_retry_after_and_5xx() -> None:
    fake = FakeLLM(Plan([{"status": 429, "retry_after": 0}, {"status": 503}, {"reply": "ok"}]))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        reply = await collect(LLMClient(http, base_delay=0.01), llm_config(base))
        assert reply.strip() == "ok"
        assert len(fake.requests) == 3
        nursery.cancel_scope.cancel()


async def test_llm_gives_up_after_three_tries_and_says_why() -> None:
    fake = FakeLLM(Plan([{"status": 500}]))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        with pytest.raises(BrainError, match=r"the LLM at .*/v1: HTTP 500 \(after 3 tries\)"):
            await collect(LLMClient(http, base_delay=0.01), llm_config(base))
        assert len(fake.requests) == 3
        nursery.cancel_scope.cancel()


async def test_llm_client_errors_are_not_retried_and_say_what_to_fix() -> None:
    fake = FakeLLM(Plan([{"status": 401}]))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        config = llm_config(base, api_key=Secret("sk-wrong"))
        with pytest.raises(BrainError, match="refused: HTTP 401") as info:
            await collect(LLMClient(http), config)
        assert "sk-wrong" not in str(info.value)
        assert "Check llm.api_key" in str(info.value)
        assert len(fake.requests) == 1
        fake.plan = Plan([{"status": 404}])
        with pytest.raises(BrainError, match=r"is the model 'm' there \(Ollama: `ollama pull m`\)"):
            await collect(LLMClient(http), llm_config(base))
        nursery.cancel_scope.cancel()


async def test_llm_timeout() -> None:
    fake = FakeLLM(Plan([{"delay": 5, "reply": "late"}]))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        with pytest.raises(BrainError, match=r"no answer within 0.2s \(after 3 tries\)"):
            await collect(LLMClient(http, base_delay=0.01), llm_config(base, timeout=0.2))
        nursery.cancel_scope.cancel()


async def test_a_long_answer_is_not_cut_by_the_timeout() -> None:
    # The timeout bounds the wait for the first delta and each gap, not the whole answer.
    fake = FakeLLM(Plan([{"chunks": ["x"] * 8, "chunk_delay": 0.15}]))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        reply = await collect(LLMClient(http, base_delay=0.01), llm_config(base, timeout=0.5))
        assert reply == "x" * 8
        nursery.cancel_scope.cancel()


async def test_llm_unreachable_names_the_url_and_the_fix() -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(BrainError) as info:
            await collect(
                LLMClient(http, base_delay=0.01),
                LLMConfig(base_url="http://user:pw@127.0.0.1:9/v1?key=k", model="llama3.1"),
            )
    message = str(info.value)
    assert message.startswith("the LLM at http://127.0.0.1:9/v1: cannot reach it")
    assert "`ollama serve`" in message and "ollama pull llama3.1" in message
    assert "llm.base_url" in message
    assert "pw" not in message and "key=k" not in message


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ({"chunks": ["par", "tial ", "answer"], "break_after": 2}, "broke off after 8 characters"),
        ({"chunks": ["par", "tial ", "answer"], "error_after": 2}, "reported an error: planned"),
    ],
)
async def test_a_stream_that_breaks_midway_is_not_retried(
    step: dict[str, object], expected: str
) -> None:
    fake = FakeLLM(Plan([step]))
    agent_base = ""
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        agent_base = await start_fake(nursery, fake)
        agent = Agent(id="a", file=Path("a.yaml"), name="A", llm=llm_config(agent_base))
        async with think(agent, Message("s", "u", "ann", "hi"), HISTORY, http=http) as answer:
            with pytest.raises(BrainError, match=expected):
                async for _ in answer:
                    pass
        assert answer.text == "partial " and not answer.done
        assert len(fake.requests) == 1
        nursery.cancel_scope.cancel()


AGENT = Agent(
    id="a",
    file=Path("a.yaml"),
    name="Helper",
    system_prompt="Be brief.",
    llm=LLMConfig("http://x/v1", "llama", temperature=0.5),
)
MESSAGE = Message(session_id="discord:1", user_id="42", username="ann", text="how are you?")


@pytest.mark.parametrize(
    "step",
    [
        {"json": {"response": "R"}},
        {"json": {"output": "R"}},
        {"json": {"text": "R"}},
        {"json": [{"output": "R"}]},
        {"json": [{"response": "R"}]},
        {"json": ["R"]},
        {"text": "R"},
    ],
)
async def test_n8n_every_response_shape(step: dict[str, object]) -> None:
    fake = FakeN8n(Plan([step]))
    results: list[str] = []
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        client = N8nClient(http, Secret(base + "/webhook/secret-path"), 5, results.append)
        assert await client.ask(AGENT, MESSAGE, HISTORY, ["Likes tea."]) == "R"
        assert fake.requests == [
            {
                "sessionId": "discord:1",
                "userId": "42",
                "username": "ann",
                "text": "how are you?",
                "conversationHistory": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello!"},
                    {"role": "user", "content": "how are you?"},
                ],
                "facts": ["Likes tea."],
                "agentConfig": {
                    "name": "Helper",
                    "systemPrompt": "Be brief.",
                    "temperature": 0.5,
                    "model": "llama",
                },
            }
        ]
        assert results[0].startswith("last call answered in ")
        nursery.cancel_scope.cancel()


async def test_n8n_failures_never_quote_the_webhook_url() -> None:
    fake = FakeN8n(Plan([{"status": 502}, {"status": 502}, {"status": 404}]))
    results: list[str] = []
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        url = base + "/webhook/secret-path-42"
        client = N8nClient(http, Secret(url), 5, results.append, base_delay=0.01)
        with pytest.raises(BrainError) as info:
            await client.ask(AGENT, MESSAGE, HISTORY)
        assert str(info.value) == "the n8n webhook refused: HTTP 404"
        assert len(fake.requests) == 3
        assert "secret-path-42" not in results[-1]
        fake.plan = Plan([{"json": {"nothing": 1}}])
        with pytest.raises(BrainError, match="without response, output or text"):
            await client.ask(AGENT, MESSAGE, HISTORY)
        nursery.cancel_scope.cancel()


def n8n_agent(llm_base: str, mode: str) -> Agent:
    n8n = PluginConfig("n8n", True, {"webhook_url": Secret("x"), "mode": mode})
    return Agent(
        id="a",
        file=Path("a.yaml"),
        name="A",
        llm=llm_config(llm_base, timeout=0.5),
        plugins={"n8n": n8n},
    )


async def answer_of(agent: Agent, http: httpx.AsyncClient, n8n: N8nClient) -> tuple[list[str], str]:
    deltas: list[str] = []
    async with think(agent, MESSAGE, HISTORY, http=http, n8n=n8n) as answer:
        deltas = [d async for d in answer]
    assert answer.done
    return deltas, answer.text


async def test_n8n_primary_answers_as_one_delta() -> None:
    llm, hook = FakeLLM(), FakeN8n(Plan([{"json": {"output": "the whole answer"}}]))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        await start_fake(nursery, llm)
        await start_fake(nursery, hook)
        n8n = N8nClient(http, Secret(hook.base_url + "/webhook/h"), 5)
        assert await answer_of(n8n_agent(llm.base_url, "primary"), http, n8n) == (
            ["the whole answer"],
            "the whole answer",
        )
        assert llm.requests == []
        nursery.cancel_scope.cancel()


async def test_fallback_to_n8n_when_the_llm_fails_before_its_first_delta() -> None:
    llm = FakeLLM(Plan([{"status": 400}]))
    hook = FakeN8n(Plan([{"json": {"output": "n8n steps in"}}]))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        await start_fake(nursery, llm)
        await start_fake(nursery, hook)
        n8n = N8nClient(http, Secret(hook.base_url + "/webhook/h"), 5)
        agent = n8n_agent(llm.base_url, "fallback")
        assert await answer_of(agent, http, n8n) == (["n8n steps in"], "n8n steps in")
        # Once the LLM has said something, n8n does not start over: the failure is reported.
        llm.plan = Plan([{"chunks": ["half ", "way"], "break_after": 1}])
        with pytest.raises(BrainError, match="broke off"):
            await answer_of(agent, http, n8n)
        assert len(hook.requests) == 1
        nursery.cancel_scope.cancel()


async def test_text_utf8_cannot_carry_reaches_the_llm_repaired_not_as_a_crash() -> None:
    """Issue 21.2: a lone surrogate (a JSON "\\ud800", a byte that was not UTF-8) made httpx's
    JSON encoding raise UnicodeEncodeError, whatever channel the text came from."""
    llm = FakeLLM(Plan([{"reply": "fine"}]))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, llm)
        agent = Agent(id="a", file=Path("a.yaml"), name="A", llm=llm_config(base, timeout=2))
        message = Message("s", "u", "ann", "caf\udce9 \ud800")
        history = [Turn("user", "earlier \udcff"), Turn("user", message.text)]
        async with think(agent, message, history, http=http) as answer:
            assert [d async for d in answer] == ["fine "]
        contents = [m["content"] for m in llm.requests[0]["messages"]]
        assert contents == ["earlier \ufffd", "caf\ufffd \ufffd"]
        nursery.cancel_scope.cancel()
