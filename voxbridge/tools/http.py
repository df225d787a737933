"""An MCP server over streamable HTTP: the SDK's transport, with a cap on what it may read.

The SDK reads a JSON response whole (only its SSE events are bounded), so its HTTP client is
given a transport that ends any response body past :data:`~voxbridge.tools.stdio.MAX_MESSAGE`
bytes: a server answering with gigabytes costs a few megabytes and an error. The SDK speaks
``httpx2`` (not the ``httpx`` the rest of voxbridge uses), hence a client of its own per
server, holding the server's ``headers`` (secrets: they go nowhere else).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx2
from mcp.client._transport import TransportStreams
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import MCP_DEFAULT_SSE_READ_TIMEOUT

from ..errors import ToolServerError
from .stdio import MAX_MESSAGE

__all__ = ["connect_http"]


class _Capped(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise httpx2.ReadError(f"response over {self._limit >> 20} MiB: not read")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CappedTransport(httpx2.AsyncBaseTransport):
    """Every response body cut off (with an error) past ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self._limit = limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        stream = response.stream
        assert isinstance(stream, httpx2.AsyncByteStream)
        response.stream = _Capped(stream, self._limit)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@asynccontextmanager
async def connect_http(
    url: str, headers: Mapping[str, str], wait: float
) -> AsyncIterator[TransportStreams]:
    """The SDK's streamable HTTP streams to ``url``, sending ``headers`` with every request
    (``wait``: seconds to connect and to write; a read may wait longer, the stream stays open).

    Raises:
        ToolServerError: ``url`` is not an http(s) URL.
    """
    if not url.startswith(("http://", "https://")):
        raise ToolServerError("url must start with http:// or https://")
    client = httpx2.AsyncClient(
        headers=dict(headers),
        timeout=httpx2.Timeout(wait, read=MCP_DEFAULT_SSE_READ_TIMEOUT),
        transport=_CappedTransport(MAX_MESSAGE),
    )
    async with client, streamable_http_client(url, http_client=client) as (read, write):
        yield read, write
