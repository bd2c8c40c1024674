"""One request to a token endpoint (RFC 6749 3.2): a form POSTed, a token or an error read.

The request is ``application/x-www-form-urlencoded`` with the client's credentials in
the form (``client_secret_post``, which Microsoft and Google both take, or a client
assertion), over a connection of its own that sends nothing it is not told to
(:mod:`mail_exporter.quiet_http`):

- no redirect is followed (a 3xx is an error: the form holds secrets, and a token
  endpoint has no reason to move them elsewhere);
- the answer is read up to :data:`MAX_RESPONSE_BYTES` and no further.

A 200 must be a JSON object with a bearer ``access_token`` (RFC 6749 5.1; a
``token_type`` other than ``Bearer`` is refused, a missing one taken as it), an optional
``expires_in`` (see :func:`mail_exporter.oauth2.token.lifetime`) and, from a refresh
grant, a new ``refresh_token`` when the server rotates them. A 4xx with an error JSON
(RFC 6749 5.2) is a refusal (``denied``) whose ``error`` and ``error_description`` go
into the detail; anything else is ``http``. A detail never holds a secret of the
request, even where the server quoted one back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote_plus

import aiohttp

from mail_exporter.oauth2.token import (
    MAX_TOKEN_CHARACTERS,
    TokenError,
    TokenFailure,
    checked_token,
    lifetime,
    shown,
)
from mail_exporter.quiet_http import TooLarge, bounded_body, json_object, quiet_session

MAX_RESPONSE_BYTES: Final = 1024 * 1024
_INVALID: Final = TokenFailure.INVALID_RESPONSE


@dataclass(frozen=True)
class TokenResponse:
    """A token endpoint's answer: the token, its lifetime, and a rotated refresh token."""

    access_token: str = field(repr=False)
    expires_in: float
    refresh_token: str | None = field(default=None, repr=False)


async def request_token(url: str, form: Mapping[str, str]) -> TokenResponse:
    """POST ``form`` to ``url``; the token it answers, or a TokenError saying why not."""
    secrets = [
        said
        for key, value in form.items()
        if key not in _PUBLIC_FIELDS
        for said in (value, quote_plus(value))  # as sent, and as a server may quote it
    ]
    async with quiet_session({"Accept": "application/json"}) as http:  # bounded by the broker
        try:
            async with http.post(url, data=dict(form), allow_redirects=False) as response:
                body = await bounded_body(response, MAX_RESPONSE_BYTES)
                status = response.status
        except TooLarge:
            too_large = f"{url} sent more than {MAX_RESPONSE_BYTES >> 20} MiB"
            raise TokenError(too_large, _INVALID) from None
        except (aiohttp.ClientError, OSError) as error:
            said = shown(str(error) or type(error).__name__, secrets)
            raise TokenError(f"cannot reach {url}: {said}", TokenFailure.HTTP) from None
    if status == 200:
        return _token_response(body, url)
    raise _refusal(status, body, url, secrets)


_PUBLIC_FIELDS: Final = frozenset({"grant_type", "client_id", "scope", "client_assertion_type"})
"""Form fields that are no secret; every other value is cut out of what is shown."""


def _token_response(body: bytes, url: str) -> TokenResponse:
    data = json_object(body)
    if data is None:
        raise TokenError(f"{url} answered 200 without a JSON object", _INVALID)
    token, token_type = data.get("access_token"), data.get("token_type", "Bearer")
    if not isinstance(token, str):
        raise TokenError(f"{url} answered 200 without an access_token", _INVALID)
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenError(
            f"{url} gave a token of type {shown(str(token_type))}, not Bearer",
            _INVALID,
        )
    refresh = data.get("refresh_token")
    if refresh is not None and not _refresh_token(refresh):
        raise TokenError(f"{url} gave a refresh_token that cannot be kept", _INVALID)
    kept = refresh if isinstance(refresh, str) else None
    return TokenResponse(checked_token(token, url), lifetime(data.get("expires_in"), url), kept)


def _refresh_token(value: object) -> bool:
    """RFC 6749 A.17: visible ASCII characters and spaces, kept as one line of its file."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_TOKEN_CHARACTERS
        and all(" " <= c <= "~" for c in value)
    )


def _refusal(status: int, body: bytes, url: str, secrets: list[str]) -> TokenError:
    """Why a status other than 200: the OAuth2 error when the body is one."""
    data = json_object(body)
    error = data.get("error") if data is not None else None
    if isinstance(error, str):
        description = data.get("error_description") if data is not None else None
        said = error if not isinstance(description, str) else f"{error}: {description}"
        reason = TokenFailure.DENIED if 400 <= status < 500 else TokenFailure.HTTP
        return TokenError(f"{url} refused (HTTP {status}): {shown(said, secrets)}", reason)
    redirect = " (redirects are not followed)" if 300 <= status < 400 else ""
    return TokenError(f"{url} answered HTTP {status}{redirect}", TokenFailure.HTTP)
