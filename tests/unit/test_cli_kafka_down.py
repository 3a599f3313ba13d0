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


@pytest.mark.parametrize(
    "command",
    [["dlq", "list", "--since", "garbage"], ["dlq", "purge", "--until", "2026-13-01"], ["redeliver", "erp", "--since", "yesterday"]],
    ids=["dlq-list", "dlq-purge", "redeliver"],
)
def test_a_since_or_until_that_is_no_time_is_said_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """`bus dlq list --since garbage` ended in a ValueError traceback once the config had loaded."""
    config = tmp_path / "bus.yaml"
    config.write_text(f'kafka: {{bootstrap: "127.0.0.1:{free_port()}", topic_prefix: t}}\ninbound: []\nroutes: []\noutbound: []\n')
    with pytest.raises(SystemExit) as ended:
        main([*command, "-c", str(config)])
    said = capsys.readouterr().err
    assert ended.value.code == 2 and "an ISO 8601 time, e.g. 2026-12-01T14:00:00+00:00, not" in said, said
    assert "Traceback" not in said
