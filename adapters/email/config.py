"""Config of the ``email`` outbound: an SMTP server to hand messages to, and what each message says."""

from __future__ import annotations

__all__ = ["EmailOutboundConfig", "one_address"]

from email.headerregistry import Address
from email.utils import getaddresses, parseaddr
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from bus.adapter_api import ClientTls, OutboundConfig, TemplateText


def one_address(text: str) -> str:
    """``text`` if it is one mailbox (``Name <box@example.com>`` or ``box@example.com``);
    ValueError saying why not. No line break passes: a header cannot be added through an address."""
    if "\r" in text or "\n" in text:
        raise ValueError(f"{text!r} is not an email address: it holds a line break")
    if len(getaddresses([text])) != 1:
        raise ValueError(f"{text!r} is not one email address")
    name, box = parseaddr(text)
    local, at, domain = box.rpartition("@")
    if not at or not local or "." not in domain.strip(".") or " " in box:
        raise ValueError(f"{text!r} is not an email address (box@example.com, or Name <box@example.com>)")
    try:
        # The email package's own parser (a local part it cannot read); an international one
        # (jörg@..., RFC 6531) is the server's to take or refuse (SMTPUTF8), as the sending says.
        Address(display_name=name, addr_spec=box if box.isascii() else box.encode("ascii", "replace").decode().replace("?", "x"))
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{text!r} is not an email address: {exc}") from None
    return text


class EmailOutboundConfig(OutboundConfig):
    """Send each event as an email through an SMTP server (a relay: Postfix, Exchange, Amazon SES,
    SendGrid or Mailgun over SMTP). Delivered once the server accepted the message; a recipient or
    a message it refuses for good (a 5xx answer: no such mailbox, too large, rejected) is a dead
    letter with the server's answer, and one it refuses for now (a 4xx: greylisting, a full
    mailbox, a rate limit) is retried."""

    type: Literal["email"] = "email"
    host: str = Field(description="SMTP server.", examples=["smtp.example.com", "email-smtp.eu-west-1.amazonaws.com"])
    port: int = Field(default=587, ge=1, le=65535, description="Port: 587 for STARTTLS (the default), 465 for TLS, 25 for a relay.")
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls",
        description="starttls: connect, then upgrade to TLS, and refuse a server that cannot (never sent in the clear). tls: "
        "TLS from the start (port 465). none: plain SMTP, for a relay on the same host or network, without a login.",
    )
    tls: ClientTls | None = Field(
        default=None,
        description="The CA that signs the server's certificate (default: the system's), and a client certificate if the "
        "relay asks for one.",
    )
    username: str | None = Field(default=None, description="Login, if the server asks for one (AUTH).")
    password: SecretStr | None = Field(default=None, description="Its password (use ${ENV}).")
    sender: str = Field(
        alias="from",
        description="The sender: `box@example.com` or `Name <box@example.com>`; also the envelope sender bounces go to.",
        examples=["Billing <billing@example.com>"],
    )
    to: TemplateText = Field(
        description="Recipients, comma-separated: a ${} template over the event's fields. A recipient that is not an address "
        "(or renders empty) makes the event a dead letter, saying so.",
        examples=["${customer.email}", "ops@example.com, ${account_manager}"],
    )
    cc: TemplateText | None = Field(default=None, description="Copy recipients, comma-separated (a template).")
    bcc: TemplateText | None = Field(default=None, description="Blind copy recipients, comma-separated (a template); not in the headers.")
    reply_to: TemplateText | None = Field(default=None, description="Where replies go (a template).")
    subject: TemplateText = Field(
        description="Subject (a template); a line break in a value becomes a space.", examples=["Invoice ${number} is overdue"]
    )
    text: TemplateText = Field(description="The plain-text body (a template).", examples=["Hello ${name},\n\nInvoice ${number} ..."])
    html: TemplateText | None = Field(
        default=None,
        description="An HTML body besides the text (a template; each value is HTML-escaped, so data cannot add markup).",
    )
    timeout_s: float = Field(default=30.0, gt=0, le=600, description="How long to wait for the server's answer; then retry.")

    @field_validator("sender")
    @classmethod
    def _sender(cls, sender: str) -> str:
        return one_address(sender)  # not a template: the envelope sender, where bounces go, is one address

    @model_validator(mode="after")
    def _no_password_in_the_clear(self) -> EmailOutboundConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password for a login, or neither")
        if self.security == "none" and self.username is not None:
            raise ValueError("a login over security: none would send the password in the clear; use starttls or tls")
        if self.security == "none" and self.tls is not None:
            raise ValueError("tls is for security: starttls or tls; security: none is plain SMTP")
        return self
