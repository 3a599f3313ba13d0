"""``email`` outbound: each event an email, handed to an SMTP server.

Delivered means the server accepted the message (its 250 to DATA) for at least one recipient.
The server's answers decide the rest, as SMTP says: a 4xx is for now (greylisting, a mailbox
full, a rate limit: retried, the event's key waits), a 5xx for good (no such mailbox, a message
too large or rejected: a dead letter carrying the server's answer). Recipients refused while
others were accepted are said at WARNING; the event counts as delivered, since trying it again
would send the others a second copy. A lost connection or no answer within ``timeout_s`` is
retried on a new connection.

Every message carries a ``Message-ID`` made from the event id, the same on every try, so a
mail system that sees a message twice (the server's answer lost, the event tried again) can
tell; the event id is also in ``X-Bus-Event-Id``. Values from events are rendered into the
headers without line breaks (a recipient holding one is refused; in the subject it becomes a
space), so an event cannot add a header (a ``Bcc``) to the message; in ``html`` they are escaped.

One connection per adapter, kept open and used by one message at a time: an SMTP connection
carries one transaction at a time, and a relay takes messages faster than people read them.
"""

from __future__ import annotations

__all__ = ["EmailOutbound"]

import asyncio
import contextlib
import hashlib
import html
import re
from email.message import EmailMessage
from email.utils import formataddr, formatdate, getaddresses
from typing import Any, ClassVar

import aiosmtplib

from adapters.email.config import EmailOutboundConfig, one_address
from bus.adapter_api import Context, Event, Health, Outbound, PermanentError, RetryableError, compile_template

_LINE_BREAKS = re.compile(r"[\r\n]+")
_ID_TEXT = re.compile(r"[^A-Za-z0-9.\-_]")  # what a Message-ID's left part may hold as it is


def _addresses(rendered: str, field: str) -> list[str]:
    """The mailboxes of a rendered recipient list; PermanentError naming the one that is not one."""
    if "\r" in rendered or "\n" in rendered:
        raise PermanentError(f"{field} {rendered!r} holds a line break: not an email address (the event cannot add a header)")
    found = []
    for name, box in getaddresses([rendered]):
        if not name and not box:
            continue
        text = formataddr((name, box)) if name else box  # a name with a comma is quoted again: "Lee, Ann" <ann@...>
        try:
            one_address(text)
        except ValueError as exc:
            raise PermanentError(f"{field} {rendered!r}: {exc}") from None
        found.append(text)
    return found


def _answer(response: Any) -> str:
    return f"{response.code} {response.message}".strip()


class EmailOutbound(Outbound[EmailOutboundConfig]):
    Config: ClassVar[type[EmailOutboundConfig]] = EmailOutboundConfig
    summary: ClassVar[str] = "Send each event as an email through an SMTP server (STARTTLS or TLS, a login)."

    def __init__(self, config: EmailOutboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        self._to = compile_template(config.to)
        self._cc = compile_template(config.cc) if config.cc else None
        self._bcc = compile_template(config.bcc) if config.bcc else None
        self._reply_to = compile_template(config.reply_to) if config.reply_to else None
        self._subject = compile_template(config.subject, escape=lambda v: _LINE_BREAKS.sub(" ", v))
        self._text = compile_template(config.text)
        self._html = compile_template(config.html, escape=html.escape) if config.html else None
        self._envelope_sender = getaddresses([config.sender])[0][1]  # where bounces go
        self._domain = self._envelope_sender.rpartition("@")[2] or "bus.invalid"
        self._where = f"{config.host}:{config.port}"
        self._smtp: aiosmtplib.SMTP | None = None
        self._failing = ""  # why the last connection could not be made; "" once one is
        self._lock = asyncio.Lock()  # one SMTP transaction at a time on the connection

    # -- the connection ----------------------------------------------------------------------
    async def start(self) -> None:
        async with self._lock:
            await self._connect()

    async def _connect(self) -> bool:
        """Connect unless connected; True when this made the connection (RetryableError saying why it could not)."""
        if self._smtp is not None and self._smtp.is_connected:
            return False
        try:
            await self._open()
        except RetryableError as exc:
            self._failing = str(exc)
            raise
        self._failing = ""
        return True

    async def _open(self) -> None:
        config = self.config
        try:
            context = config.tls.context() if config.tls is not None else None
        except OSError as exc:
            raise RetryableError(f"email {config.name}: the TLS files cannot be used: {exc}") from exc
        smtp = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            use_tls=config.security == "tls",
            start_tls=config.security == "starttls",  # never "if offered": a server that cannot is refused, not used in the clear
            tls_context=context,
            timeout=config.timeout_s,
        )
        try:
            await smtp.connect()
            if config.username is not None and config.password is not None:
                await smtp.login(config.username, config.password.get_secret_value())
        except aiosmtplib.SMTPAuthenticationError as exc:
            await self._close(smtp)
            raise RetryableError(f"email {config.name}: {self._where} refused the login of {config.username!r}: {_answer(exc)}") from exc
        except aiosmtplib.SMTPException as exc:
            await self._close(smtp)
            raise RetryableError(f"email {config.name}: cannot connect to {self._where}: {exc}") from exc
        except (OSError, TimeoutError) as exc:
            await self._close(smtp)
            raise RetryableError(f"email {config.name}: cannot connect to {self._where}: {exc!r}") from exc
        self._smtp = smtp

    @staticmethod
    async def _close(smtp: aiosmtplib.SMTP) -> None:
        with contextlib.suppress(Exception):  # a connection already gone has nothing to say
            if smtp.is_connected:
                await smtp.quit(timeout=5)
        smtp.close()

    async def stop(self) -> None:
        async with self._lock:
            smtp, self._smtp = self._smtp, None
            if smtp is not None:
                await self._close(smtp)

    async def health(self) -> Health:
        # Not "connected now": a server closes a connection left idle (Postfix after 5 minutes), and
        # the next message makes a new one. Unhealthy while connections cannot be made.
        return Health(not self._failing, self._failing)

    # -- a message ---------------------------------------------------------------------------
    def message(self, event: Event) -> tuple[EmailMessage, list[str]]:
        """The message for ``event`` and its envelope recipients; PermanentError when a rendered
        value cannot be used (a recipient that is not an address)."""
        data, meta = event.data, event.meta()
        to = _addresses(self._to(data, meta), "to")
        cc = _addresses(self._cc(data, meta), "cc") if self._cc else []
        bcc = _addresses(self._bcc(data, meta), "bcc") if self._bcc else []
        if not (to or cc or bcc):
            raise PermanentError(f"no recipient: to rendered {self._to(data, meta)!r} for this event")
        message = EmailMessage()
        message["From"] = self.config.sender
        if to:
            message["To"] = ", ".join(to)
        if cc:
            message["Cc"] = ", ".join(cc)
        if self._reply_to is not None and (reply := _addresses(self._reply_to(data, meta), "reply_to")):
            message["Reply-To"] = ", ".join(reply)
        message["Subject"] = _LINE_BREAKS.sub(" ", self._subject(data, meta))
        message["Date"] = formatdate(localtime=False, usegmt=True)
        # The same on every try of the event: mail systems drop a message they have seen.
        left = _ID_TEXT.sub("-", event.id)[:64] + "." + hashlib.sha256(event.id.encode()).hexdigest()[:12]
        message["Message-ID"] = f"<{left}@{self._domain}>"
        message["X-Bus-Event-Id"] = _LINE_BREAKS.sub(" ", event.id)
        message.set_content(self._text(data, meta))
        if self._html is not None:
            message.add_alternative(self._html(data, meta), subtype="html")
        return message, [box for _, box in getaddresses([*to, *cc, *bcc])]

    async def deliver(self, event: Event) -> None:
        message, recipients = self.message(event)
        async with self._lock:
            refused = await self._send(message, self._envelope_sender, recipients)
        if refused:
            self.ctx.logger.warning(
                "email %s: event %s sent, but %s refused %s",
                self.config.name, event.id, self._where, "; ".join(f"{box}: {_answer(r)}" for box, r in refused.items()),
            )  # fmt: skip

    async def _send(self, message: EmailMessage, sender: str, recipients: list[str]) -> dict[str, Any]:
        """Send on the connection (made again if lost); the recipients refused while others were taken."""
        while True:
            fresh = await self._connect()  # failing raises RetryableError
            assert self._smtp is not None
            try:
                refused, _ = await self._smtp.send_message(message, sender=sender, recipients=recipients)
            except aiosmtplib.SMTPRecipientsRefused as exc:  # every recipient refused
                said = "; ".join(f"{e.recipient}: {_answer(e)}" for e in exc.recipients)
                for_good = all(e.code >= 500 for e in exc.recipients)
                raise (PermanentError if for_good else RetryableError)(f"{self._where} refused every recipient: {said}") from exc
            except aiosmtplib.SMTPServerDisconnected as exc:
                await self._lost()
                if not fresh:  # a connection the server closed while it was idle: once more, on a new one
                    continue
                raise RetryableError(f"email to {self._where}: the connection was lost: {exc}") from exc
            except aiosmtplib.SMTPResponseException as exc:  # the sender or the message refused
                if exc.code == 421:  # the server is closing the connection (shutting down, too busy)
                    await self._lost()
                if exc.code >= 500:
                    raise PermanentError(f"{self._where} refused the message: {_answer(exc)}") from exc
                raise RetryableError(f"{self._where} refused the message for now: {_answer(exc)}") from exc
            except aiosmtplib.SMTPNotSupported as exc:  # an international address, and a server without SMTPUTF8
                raise PermanentError(f"{self._where} cannot take this message: {exc}") from exc
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                await self._lost()
                raise RetryableError(f"email to {self._where} failed: {exc!r}") from exc
            else:
                return refused

    async def _lost(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()
