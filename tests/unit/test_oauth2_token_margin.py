"""OAuth2 client credentials: a short-lived token is reused for most of its life, a long-lived one
is refreshed a minute before it lapses (against a local token endpoint)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from adapters.http.wire import WireClient, via_wire
from bus.credentials.client_credentials import ClientCredentials, OAuth2ClientCredentials, via_httpx
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
