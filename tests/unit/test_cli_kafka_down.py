"""The commands that go straight to Kafka say so when it does not answer, with exit 1 (they printed
aiokafka's traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.app.cli import EXIT_RUNTIME, main
from bus.ports import free_port


@pytest.mark.parametrize(
    "command",
    [["dlq", "list"], ["reconcile"], ["redeliver", "erp", "--since", "2026-12-01T00:00:00Z"]],
    ids=["dlq", "reconcile", "redeliver"],
)
def test_a_kafka_that_is_down_is_said_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    config = tmp_path / "bus.yaml"
    nobody = f"127.0.0.1:{free_port()}"  # a port nothing listens on
    config.write_text(
        f'kafka: {{bootstrap: "{nobody}", topic_prefix: t}}\n'
        "inbound: []\n"
        "routes: []\n"
        "outbound: [{name: erp, type: http, url: 'http://127.0.0.1:9/erp'}]\n"
    )
    assert main([*command, "-c", str(config)]) == EXIT_RUNTIME
    said = capsys.readouterr().err
    assert "bus: Kafka did not answer" in said and nobody in said and "Traceback" not in said, said
