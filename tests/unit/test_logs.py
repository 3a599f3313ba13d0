"""Logs: one JSON object per line when asked, and no secret ever written, in either format."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path

import pytest

from bus.logs import JsonFormatter, Redactor, RepeatedWarning, TextFormatter, about_event, secrets_in
from tests.support.hub import load, payment_hub_config, write_config


@pytest.fixture
def captured() -> tuple[logging.Logger, Redactor, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    redactor = Redactor()
    handler.addFilter(redactor)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.logs")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, redactor, stream


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_level_logger_message_and_extra_fields(captured: tuple[logging.Logger, Redactor, io.StringIO]) -> None:
    logger, _, stream = captured
    logger.warning("delivery to %s failed", "erp", extra={"subscriber": "erp", "attempt": 3})
    [entry] = lines(stream)
    assert entry["level"] == "warning" and entry["logger"] == "test.logs"
    assert entry["message"] == "delivery to erp failed"
    assert entry["subscriber"] == "erp" and entry["attempt"] == 3
    assert str(entry["time"]).endswith("Z")


def test_secrets_from_the_config_are_masked_wherever_they_appear(
    tmp_path: Path, captured: tuple[logging.Logger, Redactor, io.StringIO]
) -> None:
    logger, redactor, stream = captured
    security = {"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "bus", "sasl_password": "kafka-pw-4f9a"}
    config = payment_hub_config("127.0.0.1:9092", "http://127.0.0.1:1", security=security)
    loaded, _, _ = load(write_config(tmp_path / "bus.yaml", config))
    redactor.remember(secrets_in([loaded.hub, loaded.inbound, loaded.outbound]))
    logger.info("connecting with kafka-pw-4f9a as bus")
    try:
        raise RuntimeError("auth failed for password kafka-pw-4f9a")
    except RuntimeError:
        logger.exception("broker refused")
    text = stream.getvalue()
    assert "kafka-pw-4f9a" not in text
    first, second = lines(stream)
    assert first["message"] == "connecting with *** as bus"
    assert "auth failed for password ***" in str(second["exception"])


def test_names_the_hub_shows_anyway_are_not_masked_when_they_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured: tuple[logging.Logger, Redactor, io.StringIO]
) -> None:
    """Every ${...} value is masked in logs, for a secret put in a field that is not a secret's
    (a URL path, an expression). The topic prefix, the Kafka bootstrap servers and the adapters'
    names from ${...} were masked too: every log line naming a topic read ``***.deliver.erp``, and
    an inbound named after the prefix ``***ify-orders``. They are in every topic name and metric
    label anyway; they are shown now, and a secret planted beside them is still masked."""
    logger, redactor, stream = captured
    monkeypatch.setenv("PREFIX", "shop")
    monkeypatch.setenv("BOOT", "127.0.0.1:9092")
    monkeypatch.setenv("PATH_TOKEN", "tok-in-the-path")
    config = payment_hub_config("${BOOT}", "http://127.0.0.1:1/${PATH_TOKEN}")
    config["kafka"]["topic_prefix"] = "${PREFIX}"
    config["inbound"][0]["name"] = "shopify-orders"
    loaded, _, _ = load(write_config(tmp_path / "bus.yaml", config))
    assert loaded.hub.kafka.topic_prefix == "shop" and "tok-in-the-path" in loaded.secrets
    assert not {"shop", "127.0.0.1:9092"} & loaded.secrets
    redactor.remember([*loaded.secrets, *secrets_in([loaded.hub, loaded.inbound, loaded.outbound])])
    logger.info("shopify-orders: published to shop.canonical.Payment via 127.0.0.1:9092; POST /tok-in-the-path")
    [entry] = lines(stream)
    assert entry["message"] == "shopify-orders: published to shop.canonical.Payment via 127.0.0.1:9092; POST /***"


@pytest.mark.parametrize(
    ("message", "hidden"),
    [
        ("cannot reach postgresql://erp:s3cr3t-pw@db:5432/erp", "s3cr3t-pw"),
        ("request headers {'Authorization': 'Bearer eyJhbGciOi.x.y'}", "eyJhbGciOi.x.y"),
        ("GET /v1/leads?access_token=tok_123456&page=2 answered 401", "tok_123456"),
        ('token refresh failed: {"client_secret": "cs_live_99"}', "cs_live_99"),
    ],
)
def test_credential_shaped_text_is_masked_even_when_the_config_never_saw_it(
    captured: tuple[logging.Logger, Redactor, io.StringIO], message: str, hidden: str
) -> None:
    logger, _, stream = captured
    logger.warning(message)
    [entry] = lines(stream)
    assert hidden not in str(entry["message"])
    assert "***" in str(entry["message"])


def test_ordinary_messages_pass_unchanged(captured: tuple[logging.Logger, Redactor, io.StringIO]) -> None:
    logger, redactor, stream = captured
    redactor.remember(["abc"])  # too short to hide: it would mask ordinary words
    logger.info("delivered 42 events to erp (abc order)")
    assert lines(stream)[0]["message"] == "delivered 42 events to erp (abc order)"


def test_json_lines_about_an_event_carry_its_trace_and_span_ids() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("bus.delivery", logging.WARNING, __file__, 1, "dead-lettered %s", ("evt_1",), None)
    assert "trace_id" not in json.loads(formatter.format(record))  # not about an event
    with about_event("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"):
        line = json.loads(formatter.format(record))
        with about_event("00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"):  # a span inside: its own id
            inner = json.loads(formatter.format(record))
    assert (line["trace_id"], line["span_id"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert inner["span_id"] == "1111111111111111"
    assert "trace_id" not in json.loads(formatter.format(record))  # and gone after
    with about_event("not-a-traceparent"):
        assert "trace_id" not in json.loads(formatter.format(record))


async def test_a_warning_repeated_per_message_is_said_at_once_then_summed_up_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.repeated")
    said = RepeatedWarning(logger, every_s=0.3)
    with caplog.at_level(logging.WARNING, logger="test.repeated"):
        said.warn("parked: a")
        for reason in ("b", "c", "d"):
            said.warn(f"parked: {reason}")
        assert [r.getMessage() for r in caplog.records] == ["parked: a"]  # the first at once, the flood held
        await asyncio.sleep(0.45)
        assert [r.getMessage() for r in caplog.records][1:] == ["parked: d (3 like it in the last 0.3s; the latest said here)"]
        said.warn("parked: e")  # within the interval the summary opened: held
        await asyncio.sleep(0.45)
        assert caplog.records[-1].getMessage() == "parked: e (1 like it in the last 0.3s; the latest said here)"
        await asyncio.sleep(0.45)  # an interval with none: quiet, and the next is said at once
        said.warn("parked: f")
        assert caplog.records[-1].getMessage() == "parked: f" and len(caplog.records) == 4


def test_a_text_line_cannot_be_split_or_drive_a_terminal_by_what_a_message_quotes() -> None:
    """Reasons quote senders' values: a line break in one wrote a second line of the sender's
    choosing into the hub's text log, and an escape sequence reached the operator's terminal."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("bus.test.text")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("parked: %s", "bad\r\nERROR bus.auth: admin logged in\x1b[2J\u2028tab\there, jörg ✓")
        try:
            raise ValueError("x")
        except ValueError:
            logger.exception("failed: %s", "a\nb")
    finally:
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert lines[0] == "WARNING bus.test.text: parked: bad\\r\\nERROR bus.auth: admin logged in\\x1b[2J\\u2028tab\there, jörg ✓"
    assert lines[1] == "ERROR bus.test.text: failed: a\\nb" and lines[2] == "Traceback (most recent call last):", lines
