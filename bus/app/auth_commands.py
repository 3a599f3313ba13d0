"""``bus auth``: give the hub a company's consent for an OAuth2 connection, once.

``bus auth login NAME`` runs the authorization-code grant with PKCE: it prints the provider's
consent URL; the person who may consent opens it and approves; the provider redirects to the
connection's ``redirect_uri``, which this command receives itself when it is on 127.0.0.1 or
localhost (or, with ``--paste``, takes the code or the whole redirected URL typed in). It then
exchanges the code for tokens and stores them, encrypted with ``credentials.key``, in the hub's
Kafka, where the running hub (every replica) picks them up within seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from cryptography.fernet import Fernet

from bus.adapter_api import AdapterRegistry
from bus.app.commands import EXIT_CONFIG, _load
from bus.app.kafka_address import kafka_bootstrap
from bus.app.setup import create_topics
from bus.config.connections import ConnectionConfig
from bus.credentials.grant import ConsentLost, Grant, TokenEndpointError, Tokens, pkce_pair
from bus.credentials.store import CredentialStore
from bus.http_clients import async_client
from bus.kafka.clients import make_producer
from bus.kafka.topics import TopicNames, TopicSpec

_PAGE = "<!doctype html><title>bus auth</title><p>{text}</p><p>You can close this window.</p>"


def key(_: argparse.Namespace) -> int:
    """A new credentials.key."""
    print(Fernet.generate_key().decode())
    return 0


async def _receive(connection: ConnectionConfig, state: str, within: float) -> str:
    """Serve the redirect URI on loopback until the provider sends the code back; the code."""
    where = urlsplit(connection.redirect_uri)
    found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def callback(request: web.Request) -> web.Response:
        if request.query.get("state") != state:
            return web.Response(
                status=400, text=_PAGE.format(text="This answer is not for this login (state differs)."), content_type="text/html"
            )
        if "error" in request.query:
            said = f"{request.query['error']} {request.query.get('error_description', '')}".strip()
            if not found.done():
                found.set_exception(ConsentLost(f"the provider answered {said}"))
            return web.Response(text=_PAGE.format(text=f"Not connected: {said}"), content_type="text/html")
        code = request.query.get("code", "")
        if code and not found.done():
            found.set_result(code)
        return web.Response(text=_PAGE.format(text=f"Connection {connection.name} is connected."), content_type="text/html")

    app = web.Application()
    app.router.add_get(where.path or "/", callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, where.hostname or "127.0.0.1", where.port or 80).start()
        return await asyncio.wait_for(found, within)
    finally:
        await runner.cleanup()


def _pasted(text: str, state: str) -> str:
    """The code, from the code itself or the whole redirected URL (whose state must match)."""
    text = text.strip()
    if "code=" not in text:
        return text
    query = parse_qs(urlsplit(text).query or text)
    if query.get("state", [state])[0] != state:
        raise ConsentLost("the pasted URL is not the answer to this login (state differs)")
    return query.get("code", [""])[0]


async def _login(args: argparse.Namespace) -> int:
    loaded, _ = _load(args.config, AdapterRegistry.from_entry_points())
    hub = loaded.hub
    connection = next((c for c in hub.connections if c.name == args.name), None)
    if connection is None or hub.credentials is None:
        known = ", ".join(c.name for c in hub.connections) or "none"
        print(f"bus: no connection named {args.name!r} in {args.config} (connections: {known})", file=sys.stderr)
        return EXIT_CONFIG
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(24)
    async with async_client(timeout=30) as client:
        grant = Grant(connection, client)
        print(
            f"Open this URL and approve the access of connection {connection.name}:\n\n  {grant.consent_url(state, challenge)}\n",
            flush=True,
        )
        loopback = urlsplit(connection.redirect_uri).hostname in ("127.0.0.1", "localhost", "::1")
        try:
            if loopback and not args.paste:
                print(f"Waiting for the provider's redirect on {connection.redirect_uri} ...", flush=True)
                code = await _receive(connection, state, args.timeout)
            else:
                code = _pasted(await asyncio.to_thread(input, "Paste the code (or the whole URL you were sent to): "), state)
            tokens = await grant.exchange(code, verifier)
        except TimeoutError:
            print(f"bus: no answer from the provider within {args.timeout:g}s", file=sys.stderr)
            return 1
        except (ConsentLost, TokenEndpointError) as exc:
            print(f"bus: {exc}", file=sys.stderr)
            return 1
    bootstrap = kafka_bootstrap(args, hub)
    topics = TopicNames(hub.kafka.topic_prefix)
    await create_topics(
        hub.kafka, bootstrap, [TopicSpec(topics.credentials, 1, hub.kafka.replication_factor, {"cleanup.policy": "compact"})]
    )
    producer = make_producer(hub.kafka, bootstrap)
    await producer.start()
    try:
        await CredentialStore(hub.credentials, producer, hub.kafka, bootstrap, topics.credentials).save(connection.name, tokens)
    finally:
        await producer.stop()
    print(f"connection {connection.name}: logged in; tokens stored encrypted in {topics.credentials} ({_life(tokens)})")
    return 0


def _life(tokens: Tokens) -> str:
    left = max(0, round(tokens.expires_at - time.time()))
    return f"access token valid for {left}s, refresh token {'kept' if tokens.refresh_token else 'none'}"


def login(args: argparse.Namespace) -> int:
    return asyncio.run(_login(args))


async def _status(args: argparse.Namespace) -> int:
    loaded, _ = _load(args.config, AdapterRegistry.from_entry_points())
    hub = loaded.hub
    if hub.credentials is None or not hub.connections:
        print("no connections in this config")
        return 0
    bootstrap = kafka_bootstrap(args, hub)
    topics = TopicNames(hub.kafka.topic_prefix)
    producer = make_producer(hub.kafka, bootstrap)
    await producer.start()
    try:
        stored = await CredentialStore(hub.credentials, producer, hub.kafka, bootstrap, topics.credentials).load_all()
    finally:
        await producer.stop()
    missing = 0
    for connection in hub.connections:
        found = stored.get(connection.name)
        if isinstance(found, Tokens):
            print(f"{connection.name:20s} stored   generation {found.generation:<5d} {_life(found)}")
        else:
            missing += 1
            said = found or f"run: bus auth login {connection.name}"
            print(f"{connection.name:20s} {'unreadable' if found else 'no consent':8s} {said}")
    return 1 if missing else 0


def status(args: argparse.Namespace) -> int:
    return asyncio.run(_status(args))
