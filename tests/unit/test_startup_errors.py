"""A start-up failure is one line naming the config field, the value and what to do."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from bus.errors import StartupError
from bus.runtime.web import WebServer
from ops.server import OpsServer


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


async def test_a_webhook_port_in_use_says_which_field_and_what_to_do(taken_port: int) -> None:
    server = WebServer("127.0.0.1", taken_port)
    with pytest.raises(StartupError) as caught:
        await server.start()
    message = str(caught.value)
    assert message.startswith(f"http.port: cannot listen on 127.0.0.1:{taken_port}: ")
    assert "set http.port to a free port (0 picks one)" in message and "\n" not in message
    await server.stop()


async def test_an_ops_port_in_use_and_an_address_no_interface_has(taken_port: int) -> None:
    ops = OpsServer("127.0.0.1", taken_port, lambda: {})
    with pytest.raises(StartupError, match=r"ops.port: cannot listen on .* set ops.port to a free port"):
        await ops.start()
    await ops.stop()
    elsewhere = OpsServer("192.0.2.1", 0, lambda: {})  # TEST-NET-1: no interface here has it
    with pytest.raises(StartupError, match=r"^ops.host: cannot listen on 192.0.2.1:0: .*set ops.host to 127.0.0.1 or 0.0.0.0"):
        await elsewhere.start()
    await elsewhere.stop()
