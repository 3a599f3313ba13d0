"""The embedded broker lives and dies with its hub, and `bus reconcile` does not pretend.

- kill -9 of a `bus run` on the embedded broker leaves no broker process behind (the kernel ends it
  with its parent), so a machine does not fill with orphaned brokers.
- `bus reconcile` against a broker that started afresh (what a restarted embedded broker is: it
  keeps nothing) says it cannot prove a balance and exits non-zero, instead of "balanced".
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx
import pytest

from bus.app.cli import main
from bus.ports import free_port
from tests.support.hub import HubProcess, payment_hub_config, write_config


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended; only its parent's wait is missing


async def test_kill_9_of_the_hub_leaves_no_embedded_broker_behind(tmp_path: Path) -> None:
    config = payment_hub_config("embedded", "http://127.0.0.1:9", webhook_port=free_port(), ops_port=free_port())
    path = write_config(tmp_path / "bus.yaml", config)
    hub = HubProcess(path, config["ops"]["port"])
    await hub.start()
    assert hub.proc is not None
    brokers = [p for p in children(hub.proc.pid) if "tansu" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
    assert len(brokers) == 1, brokers
    await hub.kill()
    deadline = time.monotonic() + 10
    while alive(brokers[0]):
        assert time.monotonic() < deadline, f"broker {brokers[0]} outlived the killed hub"
        await asyncio.sleep(0.1)


async def test_reconcile_against_a_fresh_broker_cannot_prove_a_balance(
    tmp_path: Path, bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The config of a hub that delivered to erp and support, pointed at a broker that holds nothing of it.
    path = write_config(tmp_path / "bus.yaml", payment_hub_config(bootstrap, "http://127.0.0.1:9"))
    code = await asyncio.to_thread(main, ["reconcile", "-c", str(path), "--bootstrap", bootstrap])
    out = capsys.readouterr().out
    assert code != 0
    assert "CANNOT PROVE" in out and "started afresh" in out and "balanced" not in out.replace("CANNOT PROVE a balance", "")


async def test_a_user_with_no_home_runs_the_embedded_broker_and_bus_health_finds_the_ops_port(tmp_path: Path) -> None:
    """The image's user has no home directory: the broker runs from the installed package. The
    image's HEALTHCHECK is `bus health`, which reads the ops port from the config."""
    broker_port = free_port()
    config = payment_hub_config("embedded", "http://127.0.0.1:9", webhook_port=free_port(), ops_port=free_port(), embedded_port=broker_port)
    path = write_config(tmp_path / "bus.yaml", config)
    hub = HubProcess(path, config["ops"]["port"], env={"HOME": "/nonexistent"})
    await hub.start()
    try:
        assert not (Path("/nonexistent") / ".calfkit").exists()
        bus = str(Path(sys.executable).with_name("bus"))
        for extra in ([], ["--ready"]):
            done = await asyncio.create_subprocess_exec(bus, "health", "-c", str(path), *extra)
            assert await done.wait() == 0
        # The broker listens where the config says, and `bus dlq` finds it through the hub's ops port.
        done = await asyncio.create_subprocess_exec(bus, "dlq", "list", "-c", str(path), "--json", stdout=asyncio.subprocess.PIPE)
        out, _ = await done.communicate()
        assert done.returncode == 0 and out.strip() == b"[]"
        async with httpx.AsyncClient() as client:
            ready = (await client.get(f"http://127.0.0.1:{config['ops']['port']}/readyz")).json()
        assert ready["kafka"]["bootstrap"] == f"127.0.0.1:{broker_port}"
    finally:
        assert await hub.terminate() == 0
    done = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("bus")), "health", "-c", str(path), stderr=asyncio.subprocess.PIPE
    )
    _, err = await done.communicate()
    assert done.returncode == 1 and f"127.0.0.1:{config['ops']['port']}/healthz: no answer" in err.decode()


def test_the_image_asks_bus_health_and_has_no_port_of_its_own() -> None:
    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    healthcheck = dockerfile[dockerfile.index("HEALTHCHECK") :].split("\n\n")[0]
    assert '"bus", "health", "--config", "/etc/bus/bus.yaml"' in healthcheck and "9090" not in healthcheck
