"""The ``email`` outbound against a real SMTP server (aiosmtpd, tests/support/smtp_server.py) that
asks for STARTTLS and a login, and the real embedded broker: payments taken by the webhook become
emails with the recipient, subject and bodies the config renders; a mailbox that does not exist
is a dead letter with the server's answer, a greylisted one is retried until taken; an event
cannot add a header; a refused login is said, not sent around."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.email.config import EmailOutboundConfig
from bus.app.cli import main
from bus.ports import free_port
from tests.integration.test_delivery import dead_letters
from tests.support.hub import build_hub, payment_hub_config, write_config
from tests.support.proxy import TcpProxy
from tests.support.smtp_server import SmtpServer, smtp_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with smtp_server(tmp_path) as found:
        yield found


def email_config(bootstrap: str, server: SmtpServer, **overrides: Any) -> dict[str, Any]:
    config = payment_hub_config(bootstrap, "http://127.0.0.1:9")
    config["inbound"][0]["emit"]["map"]["description"] = "data.note"
    config["routes"] = [{"name": "receipts", "from": "Payment", "to": ["receipts"]}]
    config["outbound"] = [
        {
            "name": "receipts",
            "type": "email",
            **server.config(),
            "from": "Billing <billing@example.com>",
            "to": "$${customer_id}",
            "bcc": "archive@example.com",
            "subject": "Payment $${payment_id}: $${description}",
            "text": "We received $${amount} ($${currency}).\nNote: $${description}",
            "html": "<p>We received <b>$${amount}</b>: $${description}</p>",
            "delivery": {"max_attempts": 30, "backoff_initial": "100ms", "backoff_max": "300ms"},
            **overrides,
        }
    ]
    return config


def paid(i: int, customer: str, note: str = "thanks") -> dict[str, Any]:
    return {
        "id": f"evt_{i}",
        "data": {"id": f"pi_{i}", "amount": 1000 + i, "currency": "EUR", "customer": customer, "note": note, "status": "succeeded"},
    }


async def post(port: int, *payments: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": "k1"}) as client:
        for body in payments:
            answer = await client.post("/hooks/payments", json=body)
            assert answer.status_code == 202, answer.text


def delivered(subscriber: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("bus_deliveries_total", {"subscriber": subscriber, "outcome": "delivered"}) or 0.0


async def until(check: Any, timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.1)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("not within the time")


async def test_payments_become_emails_and_the_servers_answers_decide_what_is_retried_or_dead_lettered(
    tmp_path: Path, bootstrap: str, server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    mailbox = server.mailbox
    mailbox.refuse["nobody@example.com"] = "550 5.1.1 <nobody@example.com>: no such mailbox"
    mailbox.refuse_times["slow@example.com"] = ("450 4.2.0 <slow@example.com>: greylisted, try again later", 3)
    mailbox.refuse_data["pi_6"] = "554 5.7.1 Message rejected as spam"
    config = email_config(bootstrap, server)
    async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
        assert hub.web is not None
        await post(
            hub.web.port,
            paid(1, "Ann Lee <ann@example.com>", note="first\r\nBcc: evil@example.com <script>"),
            paid(2, "nobody@example.com"),
            paid(3, "slow@example.com"),
            paid(4, "ann@example.com\r\nBcc: evil@example.com"),
            paid(5, "not an address"),
            paid(6, "ann@example.com"),
            paid(7, '"Lee, Ann" <lee@example.com>, jörg@example.com'),  # a quoted name with a comma; an international address
        )
        subject = "Payment pi_1: first Bcc: evil@example.com <script>"
        await until(lambda: mailbox.by_subject(subject))
        first = mailbox.by_subject(subject)
        assert len(first) == 1, [r.message["Subject"] for r in mailbox.received]
        sent = first[0]
        assert sent.sender == "billing@example.com" and sorted(sent.recipients) == ["ann@example.com", "archive@example.com"]
        message = sent.message
        assert message["From"] == "Billing <billing@example.com>" and message["To"] == "Ann Lee <ann@example.com>"
        assert message["Bcc"] is None and all("evil" not in v for k, v in message.items() if k != "Subject"), "no header added"
        assert message["Message-ID"].startswith("<evt_1.") and message["Message-ID"].endswith("@example.com>")
        assert message["X-Bus-Event-Id"] == "evt_1"
        text = message.get_body(("plain",)).get_content()
        assert text.replace("\r\n", "\n").startswith("We received 1001 (eur).\nNote: first"), text
        body = message.get_body(("html",)).get_content()
        assert "<b>1001</b>" in body and "&lt;script&gt;" in body and "<script" not in body, body

        # Greylisted three times (450: for now), then taken; once.
        await until(lambda: len(mailbox.by_subject("Payment pi_3: thanks")) == 1)
        letters = await dead_letters(hub, "receipts", 3)
        reasons = {dict(m.headers)["ce_id"].decode(): dict(m.headers)["bus_error"].decode() for m in letters}
        assert set(reasons) == {"evt_4", "evt_5", "evt_6"}, reasons
        assert "refused the message: 554 5.7.1 Message rejected as spam" in reasons["evt_6"], reasons
        assert "holds a line break" in reasons["evt_4"], reasons
        assert "to 'not an address'" in reasons["evt_5"] and "is not an email address" in reasons["evt_5"], reasons
        await asyncio.sleep(1.0)
        assert sorted(r.message["X-Bus-Event-Id"] for r in mailbox.received) == ["evt_1", "evt_2", "evt_3", "evt_7"], "each sent once"
        (seventh,) = mailbox.by_subject("Payment pi_7: thanks")
        assert seventh.message["To"] == '"Lee, Ann" <lee@example.com>, jörg@example.com', seventh.message["To"]
        assert sorted(seventh.recipients) == ["archive@example.com", "jörg@example.com", "lee@example.com"]
        # The one recipient that does not exist refused (550), the blind copy taken: sent, and said.
        assert [r.recipients for r in mailbox.received if r.message["X-Bus-Event-Id"] == "evt_2"] == [["archive@example.com"]]
        assert "event evt_2 sent, but" in caplog.text and "nobody@example.com: 550 5.1.1" in caplog.text
        assert all("evil@example.com" not in r.recipients for r in mailbox.received)
        assert mailbox.logins == 1, "one connection, kept open"
        assert (await hub.outbound[0].health()).ok


async def test_a_connection_the_server_closed_while_idle_is_made_again_without_a_retry(
    tmp_path: Path, bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Mail servers close a connection left idle (Postfix after 5 minutes; this one after 1 s):
    the next message goes out on a new connection at once, not after a failed try, and the
    adapter stays healthy meanwhile."""
    with smtp_server(tmp_path, idle_timeout=1) as server:
        async with build_hub(write_config(tmp_path / "bus.yaml", email_config(bootstrap, server))) as hub:
            assert hub.web is not None
            await post(hub.web.port, paid(1, "ann@example.com"))
            await until(lambda: len(server.mailbox.received) == 1)
            await asyncio.sleep(2.5)  # closed by the server meanwhile
            assert (await hub.outbound[0].health()).ok
            await post(hub.web.port, paid(2, "ann@example.com"))
            await until(lambda: len(server.mailbox.received) == 2)
            assert server.mailbox.logins >= 2, "a new connection for the second"
        assert "subscriber receipts: retrying" not in caplog.text


async def test_a_connection_dropped_unsaid_on_the_way_is_made_again_without_a_retry(
    tmp_path: Path, bootstrap: str, server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A firewall or NAT between the hub and the server forgets an idle connection without telling
    either end: the adapter learns it only when the next message's first command is answered with a
    reset. That message goes out on a new connection at once, not as a failed try."""
    proxy = TcpProxy(free_port(), server.port)
    await proxy.start()
    try:
        config = email_config(bootstrap, server)
        config["outbound"][0]["port"] = proxy.listen_port
        before = delivered("receipts")
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            assert hub.web is not None
            await post(hub.web.port, paid(1, "ann@example.com"))
            # Delivered, not only received: the server holds the message before its answer reaches
            # the hub, and a connection forgotten in between would cut the first message's answer.
            await until(lambda: delivered("receipts") == before + 1)
            assert len(server.mailbox.received) == 1
            proxy.go_stale()
            assert (await hub.outbound[0].health()).ok, "nothing is known of it yet"
            await post(hub.web.port, paid(2, "bob@example.com"))
            await until(lambda: len(server.mailbox.received) == 2)
            assert proxy.stale_used == 1, "the second message was tried on the forgotten connection first"
            assert proxy.connections == 2 and server.mailbox.logins >= 2, "and sent on a new one"
        assert "subscriber receipts: retrying" not in caplog.text
    finally:
        await proxy.stop()


async def test_a_refused_login_or_an_unknown_certificate_is_said_and_nothing_is_sent(
    tmp_path: Path, bootstrap: str, server: SmtpServer
) -> None:
    for overrides, said in (
        ({"password": "wrong"}, "refused the login of 'hub': 535"),
        ({"tls": None}, "CERTIFICATE_VERIFY_FAILED"),  # the server's CA is not one the system trusts
    ):
        config = email_config(bootstrap, server, **overrides)
        async with build_hub(write_config(tmp_path / "bus.yaml", config)) as hub:
            assert hub.web is not None
            await post(hub.web.port, paid(1, "ann@example.com"))
            await until(lambda hub=hub: "outbound receipts" in hub.starting)
            assert said in hub.starting["outbound receipts"], hub.starting
            assert "smtp-secret" not in hub.starting["outbound receipts"]
            await asyncio.sleep(0.5)
    assert server.mailbox.received == []


async def test_an_international_address_to_a_server_that_cannot_take_one_is_refused_for_good(tmp_path: Path) -> None:
    """RFC 6531: a mailbox like jörg@example.com needs a server that offers SMTPUTF8. One that
    does not cannot take the message however often it is tried: a dead letter saying so, and the
    next message goes out on the same connection."""
    from adapters.email.outbound import EmailOutbound
    from bus.errors import PermanentError
    from bus.event import Event
    from tests.support.sink import bare_context

    with smtp_server(tmp_path, smtputf8=False) as server:
        settings = {"name": "m", "type": "email", **server.config(), "from": "b@example.com", "to": "${to}", "subject": "s", "text": "t"}
        adapter = EmailOutbound(EmailOutboundConfig.model_validate(settings), bare_context())
        await adapter.start()
        try:
            with pytest.raises(PermanentError, match=r"cannot take this message: .*SMTPUTF8 is not supported"):
                await adapter.deliver(Event(schema="Payment", data={"to": "jörg@example.com"}, source="t", id="e1"))
            await adapter.deliver(Event(schema="Payment", data={"to": "joerg@example.com"}, source="t", id="e2"))
        finally:
            await adapter.stop()
        assert [r.recipients for r in server.mailbox.received] == [["joerg@example.com"]]
        assert server.mailbox.logins == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"from": "billing at example.com"}, "is not an email address"),
        ({"from": "$${sales_rep}"}, "is not an email address"),  # not a template: the envelope sender is one address
        ({"security": "none"}, "would send the password in the clear"),
        ({"password": None}, "give both username and password"),
    ],
)
def test_settings_that_cannot_work_are_config_errors(tmp_path: Path, server: SmtpServer, change: dict[str, Any], message: str) -> None:
    settings = {"name": "receipts", "type": "email", **server.config(), "from": "b@example.com", "to": "x@example.com"}
    settings |= {"subject": "s", "text": "t", **change}
    with pytest.raises(ValueError, match=message):
        EmailOutboundConfig.model_validate({k: v for k, v in settings.items() if v is not None})


def test_a_template_naming_a_field_the_schema_lacks_fails_validate(tmp_path: Path, server: SmtpServer) -> None:
    config = email_config("127.0.0.1:9092", server, to="$${customer_email}")
    assert main(["validate", "-c", str(write_config(tmp_path / "bus.yaml", config))]) != 0
