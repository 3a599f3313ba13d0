"""A webhook source that behaves like a real one during outages: it retries each event until a hub
answers 202, trying the next hub on a refused connection or a 503. At-least-once, as Stripe or
Shopify deliver."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Source:
    urls: list[str]  # webhook endpoints of the hubs, tried in turn
    headers: dict[str, str] = field(default_factory=dict)
    concurrency: int = 32
    rate: float | None = None  # events per second offered, or as fast as accepted
    accepted: int = 0
    retried: int = 0
    rejected: list[tuple[str, int, str]] = field(default_factory=list)  # 4xx answers: a test bug, never retried

    async def send_all(self, events: Iterable[dict[str, Any]]) -> None:
        turn = itertools.cycle(range(len(self.urls)))
        sem = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(timeout=10, headers=self.headers) as client:

            async def send(event: dict[str, Any]) -> None:
                async with sem:
                    while True:
                        url = self.urls[next(turn)]
                        try:
                            answer = await client.post(url, json=event)
                        except httpx.TransportError:
                            answer = None
                        if answer is not None and answer.status_code == 202:
                            self.accepted += 1
                            return
                        if answer is not None and 400 <= answer.status_code < 500:
                            self.rejected.append((event["id"], answer.status_code, answer.text))
                            return
                        self.retried += 1
                        await asyncio.sleep(0.1)

            loop = asyncio.get_running_loop()
            start = loop.time()
            tasks = []
            for n, event in enumerate(events):
                if self.rate:
                    await asyncio.sleep(max(0.0, start + n / self.rate - loop.time()))
                tasks.append(asyncio.create_task(send(event)))
            await asyncio.gather(*tasks)
