"""Config of OAuth2 connections: a company's consent, given once to the hub with the
authorization-code grant (``bus auth login NAME``), that adapters then call APIs with."""

from __future__ import annotations

__all__ = ["ConnectionConfig", "CredentialsConfig"]

from typing import Literal

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, field_validator

from bus.config.base import ConfigModel
from bus.config.fields import Duration, duration


class CredentialsConfig(ConfigModel):
    """Where the tokens of ``connections`` are kept: encrypted (Fernet: AES-128-CBC with an
    HMAC-SHA256) in a compacted Kafka topic, so every replica reads the newest and a restarted
    pod goes on with the refresh token its predecessor was given."""

    store: Literal["kafka"] = Field(default="kafka", description="kafka: the `<prefix>._credentials` topic, compacted.")
    key: SecretStr = Field(
        description="The encryption key: 32 url-safe base64 bytes (`bus auth key` makes one). Keep it in a secret (${file:...}); "
        "without it the stored tokens cannot be read."
    )

    @field_validator("key")
    @classmethod
    def _fernet(cls, value: SecretStr) -> SecretStr:
        try:
            Fernet(value.get_secret_value().encode())
        except (ValueError, TypeError):
            raise ValueError("credentials.key is not a key: 32 url-safe base64-encoded bytes; `bus auth key` prints a new one") from None
        return value


class ConnectionConfig(ConfigModel):
    """An OAuth2 authorization-code connection (RFC 6749 4.1 with PKCE, RFC 7636): someone with the
    right to consent runs `bus auth login NAME` once; the hub keeps the tokens, refreshes the
    access token before it expires and stores a rotated refresh token before it uses it."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="The connection's name, as adapters' `auth.connection` give it.")
    authorize_url: str = Field(pattern=r"^https?://", description="The provider's authorization (consent) endpoint.")
    token_url: str = Field(pattern=r"^https?://", description="The provider's token endpoint.")
    client_id: str = Field(min_length=1, description="The app's client id.")
    client_secret: SecretStr | None = Field(default=None, description="The app's client secret (none for a public client: PKCE alone).")
    client_auth: Literal["basic", "body"] = Field(default="basic", description="How the client authenticates at the token endpoint.")
    scopes: list[str] = Field(
        default_factory=list, description="Scopes to ask consent for.", examples=[["com.intuit.quickbooks.accounting"]]
    )
    redirect_uri: str = Field(
        default="http://127.0.0.1:8765/callback",
        pattern=r"^https?://",
        description="Registered with the provider. On 127.0.0.1 or localhost, `bus auth login` receives the redirect itself; "
        "elsewhere, paste the code (or the whole redirected URL) it asks for.",
    )
    extra_params: dict[str, str] = Field(
        default_factory=dict, description="More parameters for the consent URL (`access_type: offline`, `prompt: consent`)."
    )
    refresh_before: Duration = Field(
        default=duration("60s"),
        description="Refresh this long before the access token expires, or at nine tenths of its life if that comes sooner.",
    )
