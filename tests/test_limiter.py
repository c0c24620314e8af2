"""Concurrency that adapts to throttling: halves on a 429, pauses for Retry-After, recovers slowly."""

from __future__ import annotations

import asyncio

from connector.graph import AdaptiveLimiter


def test_halves_pauses_and_recovers_one_slot_per_limit_successes():
    async def scenario():
        limiter = AdaptiveLimiter(8)
        peak = running = 0

        async def job():
            nonlocal peak, running
            async with limiter:
                running += 1
                peak = max(peak, running)
                await asyncio.sleep(0.01)
                running -= 1

        await asyncio.gather(*(job() for _ in range(20)))
        assert peak == 8

        loop = asyncio.get_running_loop()
        limiter.throttled(0.2)
        assert limiter.limit == 4
        limiter.throttled(0.2)
        assert limiter.limit == 2 and limiter.lowest == 2
        started = loop.time()
        async with limiter:  # new work waits for the Retry-After pause
            waited = loop.time() - started
        assert waited >= 0.18

        peak = 0
        await asyncio.gather(*(job() for _ in range(10)))
        assert peak <= 2

        for _ in range(2):  # two successes at limit 2 -> 3
            limiter.succeeded()
        assert limiter.limit == 3
        for _ in range(2):  # not yet: needs 3 at limit 3
            limiter.succeeded()
        assert limiter.limit == 3
        limiter.succeeded()
        assert limiter.limit == 4
        for _ in range(100):
            limiter.succeeded()
        assert limiter.limit == 8  # never above the configured maximum

    asyncio.run(scenario())
