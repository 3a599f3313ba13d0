"""The adapter catalogue: `bus adapters list|describe`, families sharing a type name, and an
adapter shipped as a separate installed package, found through its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bus.adapter_api import AdapterRegistry
from bus.app.cli import main

BUS = str(Path(sys.executable).with_name("bus"))


def test_a_family_registers_both_directions_under_one_type() -> None:
    registry = AdapterRegistry.from_entry_points()
    inbound, outbound = registry.get("amqp", "inbound"), registry.get("amqp", "outbound")
    assert inbound is not None and inbound.direction == "inbound"
    assert outbound is not None and outbound.direction == "outbound"
    assert registry.get("http_webhook", "outbound") is None


def test_describe_prints_fields_and_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["adapters", "describe", "amqp", "--direction", "inbound"]) == 0
    out = capsys.readouterr().out
    assert "| `queue` | string | **required** |" in out and "### `AmqpInboundConfig.emit`" in out
    assert main(["adapters", "describe", "http", "--json-schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["properties"]["url"]["pattern"] == "^https?://" and "url" in schema["required"]
    assert main(["adapters", "describe", "smtp"]) == 2
    assert "no adapter type 'smtp'" in capsys.readouterr().err


def test_an_adapter_from_a_separately_installed_package_is_found(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "acme_bus_echo").mkdir(parents=True)
    (source / "acme_bus_echo" / "__init__.py").write_text(
        textwrap.dedent(
            '''
            from typing import ClassVar, Literal
            from bus.adapter_api import Event, Outbound, OutboundConfig

            class EchoConfig(OutboundConfig):
                """Print each event."""
                type: Literal["echo"] = "echo"

            class EchoOutbound(Outbound[EchoConfig]):
                Config: ClassVar[type[EchoConfig]] = EchoConfig
                summary: ClassVar[str] = "Print each event (a third-party adapter)."

                async def deliver(self, event: Event) -> None:
                    print(event.id)
            '''
        )
    )
    (source / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "acme-bus-echo"
            version = "0.1.0"

            [project.entry-points."bus.adapters"]
            echo = "acme_bus_echo:EchoOutbound"
            """
        )
    )
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(source)],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    listed = subprocess.run([BUS, "adapters", "list"], env=env, capture_output=True, text=True, check=True).stdout
    assert "echo             outbound  Print each event (a third-party adapter)." in listed
    config = tmp_path / "bus.yaml"
    config.write_text("kafka: {bootstrap: embedded}\noutbound:\n  - {name: out, type: echo}\n")
    checked = subprocess.run([BUS, "validate", "-c", str(config)], env=env, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    assert "1 outbound" in checked.stdout
    # Without the package, the same config names the unknown type.
    missing = subprocess.run([BUS, "validate", "-c", str(config)], capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "unknown outbound adapter type 'echo'" in missing.stderr
