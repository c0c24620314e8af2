"""Concurrency that adapts to throttling: halves on a 429, pauses for Retry-After, recovers slowly."""

from __future__ import annotations

import asyncio

from connector.graph.client import AdaptiveLimiter


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


def _graph_on(sim, monkeypatch, **extra):
    from connector.config import load_settings
    from connector.graph.auth import GraphCredential, read_client_secret
    from connector.graph.client import Graph
    from tests.conftest import apply_env

    env = {**sim.env(secret_in="env"), **extra}
    apply_env(monkeypatch, env)
    settings = load_settings(env)
    credential = GraphCredential(settings, read_client_secret(settings))
    return Graph(settings, credential), credential


def test_requests_in_flight_never_exceed_max_concurrency(monkeypatch):
    """The global cap holds whatever the scopes: 12 requests of 0.3 s through 3 slots take four rounds."""
    from simulator import Simulator, TenantSpec

    with Simulator(TenantSpec(users=50, latency=0.3)) as sim:
        graph, credential = _graph_on(sim, monkeypatch, M365_MAX_CONCURRENCY="3")

        async def scenario() -> float:
            try:
                await graph.first_page("organization", f"{graph.base}/organization", "warm-up")
                loop = asyncio.get_running_loop()
                started = loop.time()
                await asyncio.gather(*(graph.first_page("users", f"{graph.base}/users?$top=5", f"scope{i % 4}")
                                       for i in range(12)))
                return loop.time() - started
            finally:
                await graph.aclose()

        took = asyncio.run(scenario())
        credential.close()
    assert took >= 4 * 0.3 - 0.05  # 12 / 3 = 4 rounds of 0.3 s; with 12 slots it would be about one
    assert took < 12 * 0.3


def test_a_token_in_hand_is_reused_and_one_near_expiry_is_asked_for_again(monkeypatch):
    from connector.graph.auth import REUSE_SECONDS
    from simulator import Simulator, TenantSpec

    with Simulator(TenantSpec(users=20)) as sim:
        graph, credential = _graph_on(sim, monkeypatch)
        asked = []
        sync = credential.get_token_sync
        credential.get_token_sync = lambda *a, **k: asked.append(a) or sync(*a, **k)

        async def scenario() -> None:
            try:
                await asyncio.gather(*(graph.first_page("organization", f"{graph.base}/organization", "x")
                                       for _ in range(40)))
            finally:
                await graph.aclose()

        asyncio.run(scenario())
        assert len(asked) == 1 and sim.tokens_issued == 1  # 40 requests, one token, one trip to azure-identity
        # Within REUSE_SECONDS of its expiry the token is not handed out again without asking azure-identity
        # (which refreshes it in its own last five minutes).
        key = next(iter(credential._tokens))
        held = credential._tokens[key]
        credential._tokens[key] = type(held)(held.token, int(__import__("time").time()) + REUSE_SECONDS - 5)
        asyncio.run(credential.get_token(*key))
        assert len(asked) == 2
        credential.close()
