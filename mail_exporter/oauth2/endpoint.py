"""One request to a token endpoint (RFC 6749 3.2): a form POSTed, a token or an error read.

The request is ``application/x-www-form-urlencoded`` with the client's credentials in
the form (``client_secret_post``, which Microsoft and Google both take, or a client
assertion), over a connection of its own that sends nothing it is not told to:

- no redirect is followed (a 3xx is an error: the form holds secrets, and a token
  endpoint has no reason to move them elsewhere);
- no proxy and no ``.netrc`` credentials are taken from the environment, no cookie is
  kept, no compression asked for;
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

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote_plus

import aiohttp

from mail_exporter import __version__
from mail_exporter.oauth2.token import (
    MAX_TOKEN_CHARACTERS,
    TokenError,
    TokenFailure,
    checked_token,
    lifetime,
    shown,
)

MAX_RESPONSE_BYTES: Final = 1024 * 1024
_CHUNK_BYTES: Final = 64 * 1024
_USER_AGENT: Final = f"mail_exporter/{__version__}"
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
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True),
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": _USER_AGENT, "Accept": "application/json",
                 "Accept-Encoding": "identity"},
        auto_decompress=False,
        trust_env=False,
        timeout=aiohttp.ClientTimeout(total=None),  # the broker bounds every fetch
    ) as http:  # fmt: skip
        try:
            async with http.post(url, data=dict(form), allow_redirects=False) as response:
                body = await _bounded_body(response, url)
                status = response.status
        except (aiohttp.ClientError, OSError) as error:
            said = shown(str(error) or type(error).__name__, secrets)
            raise TokenError(f"cannot reach {url}: {said}", TokenFailure.HTTP) from None
    if status == 200:
        return _token_response(body, url)
    raise _refusal(status, body, url, secrets)


_PUBLIC_FIELDS: Final = frozenset({"grant_type", "client_id", "scope", "client_assertion_type"})
"""Form fields that are no secret; every other value is cut out of what is shown."""


async def _bounded_body(response: aiohttp.ClientResponse, url: str) -> bytes:
    too_large = TokenError(f"{url} sent more than {MAX_RESPONSE_BYTES >> 20} MiB", _INVALID)
    if (response.content_length or 0) > MAX_RESPONSE_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise too_large
    return bytes(body)


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _token_response(body: bytes, url: str) -> TokenResponse:
    data = _json_object(body)
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
    data = _json_object(body)
    error = data.get("error") if data is not None else None
    if isinstance(error, str):
        description = data.get("error_description") if data is not None else None
        said = error if not isinstance(description, str) else f"{error}: {description}"
        reason = TokenFailure.DENIED if 400 <= status < 500 else TokenFailure.HTTP
        return TokenError(f"{url} refused (HTTP {status}): {shown(said, secrets)}", reason)
    redirect = " (redirects are not followed)" if 300 <= status < 400 else ""
    return TokenError(f"{url} answered HTTP {status}{redirect}", TokenFailure.HTTP)
