"""OAuth2 client credentials: a short-lived token is reused for most of its life, a long-lived one
is refreshed a minute before it lapses (against a local token endpoint)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from adapters.http.wire import WireClient, via_wire
from bus.credentials.client_credentials import ClientCredentials, OAuth2ClientCredentials, via_httpx
from bus.credentials.expiry import lifetime
from tests.support.accounting import AccountingApi


@pytest.mark.parametrize("library", ["httpx", "wire"])  # http_poll's client, the http outbound's
async def test_a_two_second_token_is_fetched_once_for_many_calls_then_again_before_it_lapses(library: str) -> None:
    # Two seconds, not one: the first 50 calls must fit in its first nine tenths (1.8 s) however
    # loaded the machine is; then the sleep lands in its last tenth.
    api = await AccountingApi(token_ttl=2.0).start()
    config = OAuth2ClientCredentials(type="oauth2", token_url=f"{api.url}/oauth2/token", client_id="hub", client_secret="s3cret")
    credentials = ClientCredentials(config, what="test")
    wire = WireClient()
    try:
        async with httpx.AsyncClient() as client:
            post = via_httpx(client) if library == "httpx" else via_wire(wire)
            tokens = {await credentials.token(post) for _ in range(50)}
            assert len(tokens) == 1 and api.tokens_issued == 1  # not one fetch per call (the 60 s margin exceeds its life)
            await asyncio.sleep(1.85)  # inside the last tenth of its life: fetched anew before it lapses
            assert await credentials.token(post) not in tokens and api.tokens_issued == 2
    finally:
        await wire.close()
        await api.stop()


@pytest.mark.parametrize(
    ("said", "lives"),
    [
        ("3599", 3599.0),  # as a string, as some providers send it
        ("soon", 3600.0),  # what no clock can use is taken as not sent: the default hour
        ([60], 3600.0),
        (None, 3600.0),
        (True, 3600.0),
        pytest.param(10**400, 3600.0, id="10**400"),  # past what a float holds
        ("1e999", 3600.0),  # infinity
        (-30, 1.0),  # already expired: kept a second, not fetched again for every call of a burst
        (10**12, 366 * 86400.0),
    ],
)
async def test_an_expires_in_no_clock_can_use_is_a_default_lifetime_not_a_failed_fetch(said: object, lives: float) -> None:
    api = await AccountingApi(expires_in=lambda _: said).start()
    config = OAuth2ClientCredentials(type="oauth2", token_url=f"{api.url}/oauth2/token", client_id="hub", client_secret="s3cret")
    credentials = ClientCredentials(config, what="test")
    try:
        async with httpx.AsyncClient() as client:
            started = time.monotonic()
            tokens = {await credentials.token(via_httpx(client)) for _ in range(20)}
            took = time.monotonic() - started  # the fetch itself: seconds on a loaded machine
            assert len(tokens) == 1 and api.tokens_issued == 1  # a token, used for the burst (it raised ValueError before)
            refresh_in = credentials._refresh_at - started  # when the next fetch is due is the behaviour here
            assert lives - min(60.0, lives / 10) - 1 <= refresh_in <= lives + took, (said, refresh_in, took)
    finally:
        await api.stop()


@pytest.mark.parametrize("said", ["soon", None, pytest.param(10**400, id="10**400")])
def test_a_grants_lifetime_from_an_expires_in_no_clock_can_use_is_the_default(said: object) -> None:
    assert lifetime(said) == 3600.0
    assert lifetime(" 120 ") == 120.0 and lifetime(float("nan")) == 3600.0
