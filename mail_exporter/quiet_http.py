"""The exporter's own HTTP requests (token endpoints, revocation checks, Microsoft Graph):
a client that sends nothing it is not told to, and answers read within a bound.

- No proxy and no ``.netrc`` credentials are taken from the environment, no cookie is
  kept, no compression asked for (a small compressed answer cannot unpack into a large
  one), and the User-Agent names the exporter. Callers pass ``allow_redirects=False``:
  whether a request may follow one is never aiohttp's choice.
- The client sets no time limit of its own: each caller bounds its requests by the
  deadline of the probe, fetch or round trip they serve.
- :func:`bounded_body` reads at most ``limit`` bytes, refusing a longer answer as soon
  as its ``Content-Length`` or its bytes say so.
- :func:`json_object` reads an answer as a JSON object, or says it is none: text that is
  not JSON, not UTF-8, or nested deeper than the parser recurses (a few KiB of ``[``
  raise RecursionError, not ValueError) is no object, never an exception.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from typing import Any, Final

import aiohttp

from mail_exporter import __version__

USER_AGENT: Final = f"mail_exporter/{__version__}"
_CHUNK_BYTES: Final = 64 * 1024


class TooLarge(Exception):
    """An answer longer than the reader's limit."""


def quiet_session(
    headers: Mapping[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
    keep_alive: bool = False,
) -> aiohttp.ClientSession:
    """A client that sends nothing it is not told to (see the module docstring); ``tls``
    verifies servers (default: the system's CAs); ``keep_alive`` reuses a connection for
    the session's next request to the same server."""
    connector = aiohttp.TCPConnector(force_close=not keep_alive, ssl=tls if tls else True)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})},
        auto_decompress=False,
        trust_env=False,
        timeout=aiohttp.ClientTimeout(total=None),
    )


async def bounded_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body of ``response``, or :class:`TooLarge` past ``limit`` bytes."""
    if (response.content_length or 0) > limit:
        raise TooLarge
    body = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            raise TooLarge
    return bytes(body)


def json_object(body: bytes) -> dict[str, Any] | None:
    """``body`` as a JSON object; ``None`` when it is not one (see the module docstring)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None
