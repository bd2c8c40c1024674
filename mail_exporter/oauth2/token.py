"""What a token source gives or why it cannot: :class:`AccessToken`, :class:`TokenError`.

An access token goes into a SASL line (XOAUTH2, OAUTHBEARER) and an HTTP header, so
whatever a source hands over is held to RFC 6750's ``b64token`` characters and at most
:data:`MAX_TOKEN_CHARACTERS`: a line break in it could end the line and start a command
of its own, and no real token has one (Microsoft's are JWTs of 1 to 3 KB, Google's
opaque strings of about 200 characters).

A failure has a reason from the fixed set :class:`TokenFailure` (the label values of
``mail_oauth2_token_fetch_failures_total``) and a detail people read: printable, at most
:data:`MAX_DETAIL_CHARACTERS`, and never holding a secret the request carried.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from mail_exporter.printable import printable

MAX_TOKEN_CHARACTERS: Final = 16 * 1024
MAX_DETAIL_CHARACTERS: Final = 300
DEFAULT_LIFETIME_SECONDS: Final = 300.0
"""How long a token is taken to live when its source does not say (no ``expires_in``):
five minutes, after which it is fetched again (helpers that print bare tokens usually
print ones valid for an hour)."""

_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


@dataclass(frozen=True)
class AccessToken:
    """A bearer token and when it expires (Unix time; ``math.inf`` when nobody says)."""

    value: str = field(repr=False)
    expires_at: float = math.inf


class TokenFailure(StrEnum):
    """Why a fetch failed: the ``reason`` label of ``mail_oauth2_token_fetch_failures_total``."""

    HTTP = "http"
    """The token endpoint could not be reached, or answered other than 200 without an
    OAuth2 error (a 5xx, a redirect, a body that is no error JSON)."""
    TIMEOUT = "timeout"
    """No token within the fetch's time bound."""
    INVALID_RESPONSE = "invalid_response"
    """A 200 that holds no usable token (not JSON, no ``access_token``, another type)."""
    DENIED = "denied"
    """The endpoint refused with an OAuth2 error (``invalid_client``, ``invalid_grant``)."""
    COMMAND = "command"
    """``token_command`` failed, hung, or printed no token."""
    FILE = "file"
    """``token_file`` (or the refresh token's file) could not be read or written, or holds
    no token."""


class TokenError(Exception):
    """No token: ``detail`` says why, ``reason`` in a word (:class:`TokenFailure`)."""

    def __init__(self, detail: str, reason: TokenFailure = TokenFailure.HTTP) -> None:
        super().__init__(detail)
        self.detail = detail
        self.reason = reason


def shown(text: str | bytes, secrets: Iterable[str] = ()) -> str:
    """Text for a failure's detail: ``secrets`` cut out, printable, bounded."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return printable(text, MAX_DETAIL_CHARACTERS)


def checked_token(
    value: str, where: str, reason: TokenFailure = TokenFailure.INVALID_RESPONSE
) -> str:
    """``value`` if it can be sent as a bearer token, else a TokenError naming ``where``."""
    if not value:
        raise TokenError(f"{where} gave an empty token", reason)
    if len(value) > MAX_TOKEN_CHARACTERS:
        raise TokenError(f"{where} gave a token over {MAX_TOKEN_CHARACTERS} characters", reason)
    if _B64TOKEN.fullmatch(value) is None:
        raise TokenError(
            f"{where} gave a token with characters a bearer token cannot have "
            "(letters, digits and -._~+/ only)",
            reason,
        )
    return value


def lifetime(
    expires_in: object, where: str, reason: TokenFailure = TokenFailure.INVALID_RESPONSE
) -> float:
    """``expires_in`` in seconds (a number, or digits in a string as some servers send it);
    :data:`DEFAULT_LIFETIME_SECONDS` when absent."""
    if expires_in is None:
        return DEFAULT_LIFETIME_SECONDS
    if isinstance(expires_in, str) and expires_in.strip().isdigit():
        expires_in = int(expires_in)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        raise TokenError(f"{where} gave an expires_in that is no number", reason)
    if not 0 < expires_in < math.inf:
        raise TokenError(f"{where} gave expires_in {expires_in}: not a positive number", reason)
    return float(expires_in)
