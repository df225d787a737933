"""The brain's own round trip, as a client in another process sees it: ``N`` chat-completion
requests with httpx (pooled connection, as voxbridge makes them) to ``URL``; prints the times
in seconds as JSON. The message-path benchmark subtracts this from its totals, so the baseline
crosses a process boundary just as voxbridge's requests do.

    python bench/round_trip.py http://127.0.0.1:PORT/v1/chat/completions 300
"""

from __future__ import annotations

import json
import sys
import time

import httpx
import trio


async def main(url: str, n: int) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "m"}], "stream": True}
    times = []
    async with httpx.AsyncClient() as client:
        for _ in range(n):
            t0 = time.perf_counter()
            response = await client.post(url, json=body)
            response.raise_for_status()
            response.json()
            times.append(time.perf_counter() - t0)
    print(json.dumps(times))


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
