"""``bus run`` as a child process for a recipe, on a broker the recipe starts or is given."""

from __future__ import annotations

__all__ = ["RecipeHub", "free_port", "verdict", "wait_until"]

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bus.kafka.broker import EmbeddedBroker
from bus.ports import free_port, taken


class RecipeHub:
    """The hub of one recipe: ``bus run -c bus.yaml`` with the recipe's environment.

    ``bootstrap=None`` starts an embedded broker here, in the recipe's process, rather than
    letting the hub start one inside itself: ``bus reconcile`` and other commands then reach the
    same broker from outside the hub, as they would reach a real cluster.
    """

    def __init__(self, config: Path, env: dict[str, str], *, bootstrap: str | None = None, prefix: str = "bus") -> None:
        self.config = config
        self.http_port, self.ops_port = free_port(), free_port()
        self._own_broker = EmbeddedBroker() if bootstrap is None else None
        self.bootstrap = bootstrap or ""
        self.env = {**os.environ, **env, "TOPIC_PREFIX": prefix, "HTTP_PORT": str(self.http_port), "OPS_PORT": str(self.ops_port)}
        self.proc: asyncio.subprocess.Process | None = None
        self.bus = str(Path(sys.executable).with_name("bus"))

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def start(self, within: float = 90) -> None:
        if self._own_broker is not None:
            await self._own_broker.start()
            self.bootstrap = self._own_broker.bootstrap
        self.env["KAFKA_BOOTSTRAP"] = self.bootstrap
        for attempt in range(3):
            self.proc = await asyncio.create_subprocess_exec(self.bus, "run", "-c", str(self.config), env=self.env)
            if await self._ready(within):
                return
            # The ports were free when chosen; another program can take one before the hub binds
            # it (it exits: "cannot listen on ..."). Then choose again; any other exit is the hub's.
            if attempt == 2 or not (taken(self.http_port) or taken(self.ops_port)):
                raise RuntimeError(f"the hub exited early with code {self.proc.returncode} (its log is above)")
            print(f"port {self.http_port} or {self.ops_port} was taken by another program; starting the hub on new ports", flush=True)
            self.http_port, self.ops_port = free_port(), free_port()
            self.env.update(HTTP_PORT=str(self.http_port), OPS_PORT=str(self.ops_port))

    async def _ready(self, within: float) -> bool:
        """True once the hub answers ready; False if it exited first."""
        assert self.proc is not None
        deadline = time.monotonic() + within
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    return False
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"http://127.0.0.1:{self.ops_port}/readyz")).status_code == 200:
                        return True
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the hub was not ready within {within:.0f}s (http://127.0.0.1:{self.ops_port}/readyz)")

    async def stop(self) -> int:
        """SIGTERM (a graceful stop); returns the hub's exit code."""
        code = 0
        if self.proc is not None:
            if self.proc.returncode is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(self.proc.wait(), 60)
            except TimeoutError:
                self.proc.kill()
                code = await self.proc.wait()
        if self._own_broker is not None:
            await self._own_broker.stop()
        return code

    async def command(self, *args: str) -> tuple[int, str]:
        """Another ``bus`` command against this hub's config and broker, e.g. ``reconcile``."""
        proc = await asyncio.create_subprocess_exec(
            self.bus, *args, "-c", str(self.config), "--bootstrap", self.bootstrap, env=self.env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    async def metrics(self) -> str:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://127.0.0.1:{self.ops_port}/metrics")).text


async def wait_until(condition: Callable[[], bool], within: float, what: str) -> None:
    """Poll ``condition()`` until true; raise naming ``what`` when it never holds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {within:.0f}s for {what}")
        await asyncio.sleep(0.2)


def verdict(problems: list[str], ok: str) -> int:
    """A recipe's last line and exit code: what held, or every check that did not."""
    print(f"\nrecipe OK: {ok}" if not problems else "\nrecipe FAILED: " + "; ".join(problems))
    return 0 if not problems else 1
