"""The LLM and n8n clients: real httpx against real local servers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from tests.fake_brains import FakeLLM, FakeN8n, Plan, start_fake
from voxbridge import BrainError, Secret
from voxbridge.config.model import Agent, LLMConfig
from voxbridge.plugins.brain import LLMClient, Message, N8nClient, Turn

HISTORY = [Turn("user", "hi"), Turn("assistant", "hello!"), Turn("user", "how are you?")]


def llm_config(base: str, **kw: object) -> LLMConfig:
    return LLMConfig(base_url=base + "/v1", model="m", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("stream_ok", [True, False])
async def test_llm_streamed_or_not(stream_ok: bool) -> None:
    fake = FakeLLM(Plan([{"reply": "I am fine, thanks"}]), stream_ok=stream_ok)
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        config = llm_config(base, api_key=Secret("sk-test"), temperature=0.3, max_tokens=50)
        reply = await LLMClient(http).complete(config, "You are kind.", HISTORY)
        assert reply.strip() == "I am fine, thanks"
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


async def test_llm_retries_429_honouring_retry_after_and_5xx() -> None:
    fake = FakeLLM(Plan([{"status": 429, "retry_after": 0}, {"status": 503}, {"reply": "ok"}]))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        reply = await LLMClient(http, base_delay=0.01).complete(llm_config(base), "", HISTORY)
        assert reply.strip() == "ok"
        assert len(fake.requests) == 3
        nursery.cancel_scope.cancel()


async def test_llm_gives_up_after_three_tries_and_says_why() -> None:
    fake = FakeLLM(Plan([{"status": 500}]))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        with pytest.raises(BrainError, match=r"the LLM endpoint: HTTP 500 \(after 3 tries\)"):
            await LLMClient(http, base_delay=0.01).complete(llm_config(base), "", HISTORY)
        assert len(fake.requests) == 3
        nursery.cancel_scope.cancel()


async def test_llm_client_errors_are_not_retried() -> None:
    fake = FakeLLM(Plan([{"status": 401}]))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        config = llm_config(base, api_key=Secret("sk-wrong"))
        with pytest.raises(BrainError, match="refused: HTTP 401") as info:
            await LLMClient(http).complete(config, "", HISTORY)
        assert "sk-wrong" not in str(info.value)
        assert len(fake.requests) == 1
        nursery.cancel_scope.cancel()


async def test_llm_timeout() -> None:
    fake = FakeLLM(Plan([{"delay": 5, "reply": "late"}]))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        with pytest.raises(BrainError, match=r"no answer within 0.2s \(after 3 tries\)"):
            await LLMClient(http, base_delay=0.01).complete(
                llm_config(base, timeout=0.2), "", HISTORY
            )
        nursery.cancel_scope.cancel()


async def test_llm_unreachable() -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(BrainError, match=r"ConnectError \(cannot reach it\)"):
            await LLMClient(http, base_delay=0.01).complete(
                llm_config("http://127.0.0.1:9"), "", HISTORY
            )


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
        assert await client.ask(AGENT, MESSAGE, HISTORY) == "R"
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
