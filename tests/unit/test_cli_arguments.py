"""What the ``bus`` command line takes is checked as it is typed: a time that is no time, a number
of seconds that no clock can wait, a count below 0 or a port past 65535 is said by argparse (exit
2) before anything runs. They ended in tracebacks (a socket's timeout, a datetime parse)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.app.cli import main
from bus.ports import free_port


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "bus.yaml"
    path.write_text(f'kafka: {{bootstrap: "127.0.0.1:{free_port()}", topic_prefix: t}}\ninbound: []\nroutes: []\noutbound: []\n')
    return path


def refused(command: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as ended:
        main(command)
    said = capsys.readouterr().err
    assert ended.value.code == 2 and "Traceback" not in said, said
    return said


@pytest.mark.parametrize(
    "command",
    [["dlq", "list", "--since", "garbage"], ["dlq", "purge", "--until", "2026-13-01"], ["redeliver", "erp", "--since", "yesterday"]],
    ids=["dlq-list", "dlq-purge", "redeliver"],
)
def test_a_since_or_until_that_is_no_time_is_said_before_anything_runs(
    config: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """`bus dlq list --since garbage` ended in a ValueError traceback once the config had loaded."""
    assert "an ISO 8601 time, e.g. 2026-12-01T14:00:00+00:00, not" in refused([*command, "-c", str(config)], capsys)


@pytest.mark.parametrize(
    ("command", "said"),
    [
        # a socket's ValueError
        (["health", "--timeout", "nan"], "argument --timeout: a number of seconds above 0 and at most 604,800 (a week), not 'nan'"),
        (["health", "--timeout", "-1"], "a number of seconds above 0 and at most 604,800 (a week), not '-1'"),
        (["health", "--timeout", "99999999999999999999999"], "at most 604,800 (a week), not '99999999999999999999999'"),  # OverflowError
        (["health", "--timeout", "inf"], "at most 604,800 (a week), not 'inf'"),
        (["status", "--hub", "http://127.0.0.1:9", "--watch", "0"], "argument --watch: a number of seconds above 0"),
        (["pause", "inbound", "x", "--hub", "http://127.0.0.1:9", "--wait", "inf"], "argument --wait: a number of seconds"),
        (["reconcile", "--show-ids", "-5"], "argument --show-ids: a whole number from 0, not '-5'"),
        (["migrate", "run", "--metrics-port", "99999"], "argument --metrics-port: a port from 1 to 65535"),
    ],
)
def test_seconds_counts_and_ports_no_clock_or_socket_can_use_are_said(
    config: Path, capsys: pytest.CaptureFixture[str], command: list[str], said: str
) -> None:
    assert said in refused([*command, "-c", str(config)], capsys)


def test_a_reconcile_window_that_is_no_duration_is_said(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reconcile", "-c", str(config), "--window", "forever"]) == 2  # a ValueError traceback
    said = capsys.readouterr().err
    assert "--window 'forever' is not a duration of at least 1s" in said and "Traceback" not in said, said


def test_a_target_ids_file_that_is_not_text_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bus.yaml"
    config.write_text(
        f'kafka: {{bootstrap: "127.0.0.1:{free_port()}", topic_prefix: t}}\ninbound: []\nroutes: []\n'
        "outbound: [{name: erp, type: http, url: 'http://127.0.0.1:9/erp'}]\n"
    )
    ids = tmp_path / "ids.bin"
    ids.write_bytes(b"\x30\x82\xff\xfe")
    assert main(["reconcile", "-c", str(config), "--subscriber", "erp", "--target-ids", str(ids)]) == 2  # a UnicodeDecodeError traceback
    said = capsys.readouterr().err
    assert "is not UTF-8 text (one event id per line)" in said and "Traceback" not in said, said
