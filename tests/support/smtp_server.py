"""A real SMTP server for the ``email`` outbound's tests: aiosmtpd, in a thread of its own, with
STARTTLS required before a login and a login required before a message, as a provider's
submission port (587) behaves. A test chooses answers per recipient (``550 5.1.1`` no such
mailbox, ``450 4.2.0`` greylisted for a number of tries) and can drop every connection."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from bus.ports import free_port
from tests.support.certs import Authority

USER, PASSWORD = "hub", "smtp-secret-7d2"

# aiosmtpd says every command at INFO, from its own thread, also while it stops after a test (its
# "EOF received" then reached a log stream pytest had closed): warnings and errors only.
logging.getLogger("mail.log").setLevel(logging.WARNING)


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage


@dataclass
class Mailbox:
    """What the server took, and how it answers."""

    received: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # recipient -> answer, every time
    refuse_times: dict[str, tuple[str, int]] = field(default_factory=dict)  # recipient -> (answer, how many more times)
    refuse_data: dict[str, str] = field(default_factory=dict)  # text in a message -> the answer to its DATA
    logins: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        with self.lock:
            if address in self.refuse:
                return self.refuse[address]
            if address in self.refuse_times:
                answer, left = self.refuse_times[address]
                if left > 0:
                    self.refuse_times[address] = (answer, left - 1)
                    return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        for text, answer in self.refuse_data.items():
            if text.encode() in content:
                return answer
        parsed = message_from_bytes(content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"

    def by_subject(self, subject: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.message["Subject"] == subject]


@dataclass
class SmtpServer:
    port: int
    ca: Path
    mailbox: Mailbox

    def config(self, **overrides: Any) -> dict[str, Any]:
        """The adapter settings that reach this server."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "security": "starttls",
            "tls": {"ca": str(self.ca)},
            "username": USER,
            "password": PASSWORD,
            **overrides,
        }


def _authenticate(mailbox: Mailbox) -> Any:
    def check(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (USER.encode(), PASSWORD.encode())
        if ok:
            with mailbox.lock:
                mailbox.logins += 1
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535 itself

    return check


@contextmanager
def smtp_server(folder: Path, *, idle_timeout: float = 300, smtputf8: bool = True) -> Iterator[SmtpServer]:
    """``idle_timeout``: seconds a connection may stay idle before the server closes it (Postfix:
    300). ``smtputf8``: whether it takes international addresses (RFC 6531)."""
    authority = Authority(folder / "smtp-pki")
    issued = authority.issue("smtp", server=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(issued.cert), str(issued.key))
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=_authenticate(mailbox),
        timeout=idle_timeout,
        enable_SMTPUTF8=smtputf8,
    )
    controller.start()
    try:
        yield SmtpServer(port, authority.cert, mailbox)
    finally:
        controller.stop()
