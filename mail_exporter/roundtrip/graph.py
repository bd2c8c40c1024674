"""Microsoft Graph as a leg of the round trip, for tenants that turn SMTP AUTH off:
``sendMail`` submits, the messages of a folder are looked through, ``DELETE`` removes ours.

The requests (Graph v1.0, as Microsoft documents them):

- **Send**: ``POST {base_url}/users/{mailbox}/sendMail`` with the message as JSON: its
  subject, a text body, the recipient, and the round trip's ``X-`` headers (token, route,
  send time, ``X-Auto-Response-Suppress``) as ``internetMessageHeaders`` (Graph takes
  five at most, each named ``X-``), with ``saveToSentItems: false`` so that nothing
  piles up in Sent Items. Graph answers ``202 Accepted`` once it has queued the message;
  the transit time runs from the request's start, as an SMTP submission's does.
- **Open**: before anything is sent, the receive leg's token and one ``GET`` of a single
  message of ``folder``: a refused token or a missing mailbox stops the attempt there.
- **Look**: ``GET {base_url}/users/{mailbox}/mailFolders/{folder}/messages`` with
  ``$select=id,internetMessageHeaders`` (Graph returns the headers only when they are
  selected), ``$orderby=receivedDateTime desc`` and ``$top``; when looking for the
  attempt's own message also ``$filter=receivedDateTime ge T``, T being
  :data:`FILTER_SLACK_SECONDS` before the attempt began (the mailbox's clock and ours
  may differ). ``@odata.nextLink`` is followed for :data:`MAX_PAGES` pages at most, newest
  first, and only to the origin of ``base_url``. Graph cannot filter on a header, so a
  message is found by its ``X-Mail-Exporter-Token`` value in ``internetMessageHeaders``
  here, read as IMAP reads the header fields it fetches (``Received`` gives the hop
  delays). ``junk_folder`` (``junkemail``), when set, is looked through too; arrival
  there is the junk outcome. Graph has no push without a subscription endpoint, so the
  runner's pauses between looks are plain sleeps.
- **Delete**: ``DELETE {base_url}/users/{mailbox}/messages/{id}`` for each message the
  runner hands over, by the id it was listed with, and nothing else (which messages are
  ours is the runner's rule, :mod:`.runner`: tokens this process issued). A 404 is a
  message already gone.

Every request carries the leg's bearer token from the exporter's broker and waits at most
the leg's ``timeout``; a token that cannot be had, a 401 or a 403 fails ``send_auth`` or
``receive_auth`` (``cleanup`` during the cleanup), anything else ``send``, ``receive`` or
``cleanup``. Answers are read up to :data:`MAX_RESPONSE_BYTES`, no redirect is followed,
and ``base_url`` is ``https://`` but to loopback (the config's rule), verified against
``ca_file`` or the system's CAs (:mod:`mail_exporter.quiet_http`).

Throttling: a 429 or a 503 is counted (``mail_roundtrip_throttled_total``) and the
request sent again after its ``Retry-After`` (seconds or an HTTP date; without one,
:data:`FIRST_RETRY_SECONDS` doubling), at most :data:`MAX_RETRIES` times and only while
the wait ends within the route's ``timeout`` of the request's first try; otherwise the
step fails at once, saying how long Graph asked to wait. A failure's detail has the HTTP
status and Graph's ``error.code`` and ``error.message``, printable and bounded, never the
token.
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from mail_exporter.config.roundtrip import GraphLeg, GraphReceive, GraphSend
from mail_exporter.oauth2.broker import TokenBroker
from mail_exporter.oauth2.token import TokenError, shown
from mail_exporter.quiet_http import TooLarge, bounded_body, json_object, quiet_session
from mail_exporter.roundtrip.mailbox import Found
from mail_exporter.roundtrip.message import HEADER_FIELDS, TaggedMessage, parse_tagged
from mail_exporter.roundtrip.outcome import RoundTripFailure, Stage

MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024
PAGE_SIZE: Final = 50
MAX_PAGES: Final = 2
"""Pages of :data:`PAGE_SIZE` read per folder and look: the newest 100 messages, as IMAP's
cleanup reads the newest 100 of a route."""
FILTER_SLACK_SECONDS: Final = 900.0
MAX_RETRIES: Final = 5
FIRST_RETRY_SECONDS: Final = 1.0
THROTTLED: Final = frozenset({429, 503})
MAX_ID_CHARACTERS: Final = 1024
"""Longest message id taken from a listing (Graph's are about 150 characters)."""

_WANTED = frozenset(name.lower() for name in HEADER_FIELDS)

Throttled = Callable[[], None]
"""Called for each throttled answer, to count it."""


@dataclass(frozen=True)
class Stages:
    """Where a request's failures count: most of them, and those of a refused token."""

    failure: Stage
    refused: Stage


SEND = Stages(Stage.SEND, Stage.SEND_AUTH)
RECEIVE = Stages(Stage.RECEIVE, Stage.RECEIVE_AUTH)
CLEANUP = Stages(Stage.CLEANUP, Stage.CLEANUP)


def _tls_context(leg: GraphLeg) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(leg.ca_file) if leg.ca_file else None)


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """The seconds ``Retry-After`` asks to wait (a number, or an HTTP date after Unix time
    ``now``); ``None`` without a readable one."""
    value = headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now)


def graph_error(body: bytes) -> str:
    """Graph's ``error.code: error.message`` of an error answer, or ``""``."""
    data = json_object(body)
    error = data.get("error") if data is not None else None
    if not isinstance(error, dict):
        return ""
    said = [part for part in (error.get("code"), error.get("message")) if isinstance(part, str)]
    return ": ".join(part for part in said if part)


class GraphClient:
    """One leg's requests in one attempt, on one kept-alive connection."""

    def __init__(
        self, leg: GraphLeg, tokens: TokenBroker, budget: float, throttled: Throttled
    ) -> None:
        self._leg = leg
        self._tokens = tokens
        self._budget = budget
        self._throttled = throttled
        self._origin = URL(leg.base_url).origin()
        self._http = quiet_session(
            {"Accept": "application/json"}, _tls_context(leg), keep_alive=True
        )
        self._token = ""

    def url(self, *segments: str, query: Mapping[str, str] | None = None) -> URL:
        """``base_url`` with ``segments`` as path segments (each quoted whole) and ``query``
        quoted as OData wants it (a space as ``%20``, not ``+``)."""
        text = "/".join([self._leg.base_url, *(quote(part, safe="@") for part in segments)])
        if query:
            text += "?" + "&".join(f"{k}={quote(v, safe=',:')}" for k, v in query.items())
        return URL(text, encoded=True)

    def next_link(self, page: Mapping[str, Any], stages: Stages, what: str) -> URL | None:
        """The page's ``@odata.nextLink``, when it stays on ``base_url``'s origin."""
        link = page.get("@odata.nextLink")
        if link is None:
            return None
        try:
            url = URL(link, encoded=True) if isinstance(link, str) else None
            origin = url.origin() if url is not None else None
        except ValueError:
            origin = None
        if url is None or origin != self._origin:
            raise RoundTripFailure(
                stages.failure, f"{what}: @odata.nextLink leads off {self._origin}: not followed"
            )
        return url

    async def call(
        self,
        method: str,
        url: URL,
        stages: Stages,
        what: str,
        expected: Collection[int],
        body: Mapping[str, Any] | None = None,
    ) -> tuple[int, bytes]:
        """Send the request until it is not throttled; the status (one of ``expected``)
        and the answer, or a :class:`RoundTripFailure` of ``stages``."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._budget
        pause = FIRST_RETRY_SECONDS
        for retry in range(MAX_RETRIES + 1):
            status, headers, answer = await self._exchange(method, url, stages, what, body)
            if status in expected:
                return status, answer
            if status not in THROTTLED:
                raise self._refusal(status, answer, stages, what)
            self._throttled()
            wait = retry_after(headers, time.time())
            if wait is None:
                wait, pause = pause, pause * 2
            if retry == MAX_RETRIES or loop.time() + wait > give_up:
                break
            await asyncio.sleep(wait)
        said = shown(f"HTTP {status} {graph_error(answer)}".strip(), [self._token])
        raise RoundTripFailure(
            stages.failure,
            f"{what}: throttled ({said}), asked to wait {wait:g}s more: past the route's "
            f"timeout or after {MAX_RETRIES} tries",
        )

    async def _exchange(
        self,
        method: str,
        url: URL,
        stages: Stages,
        what: str,
        body: Mapping[str, Any] | None,
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        timeout = self._leg.timeout_seconds
        loop = asyncio.get_running_loop()
        try:
            token = await self._tokens.token(self._leg.token, loop.time() + timeout)
        except TokenError as error:
            raise RoundTripFailure(stages.refused, f"token: {error.detail}") from None
        self._token = token.value
        headers = {"Authorization": f"Bearer {token.value}"}
        try:
            async with asyncio.timeout(timeout):
                async with self._http.request(
                    method, url, json=body, headers=headers, allow_redirects=False
                ) as response:
                    answer = await bounded_body(response, MAX_RESPONSE_BYTES)
                    return response.status, response.headers, answer
        except TimeoutError:
            raise RoundTripFailure(
                stages.failure, f"{what}: no answer within {timeout:.3g}s"
            ) from None
        except TooLarge:
            raise RoundTripFailure(
                stages.failure, f"{what}: answer over {MAX_RESPONSE_BYTES >> 20} MiB"
            ) from None
        except (aiohttp.ClientError, OSError, ssl.SSLError) as error:
            said = shown(str(error) or type(error).__name__, [token.value])
            raise RoundTripFailure(stages.failure, f"{what}: {said}") from None

    def _refusal(self, status: int, answer: bytes, stages: Stages, what: str) -> RoundTripFailure:
        said = " ".join(part for part in (f"HTTP {status}", graph_error(answer)) if part)
        if 300 <= status < 400:
            said += " (redirects are not followed)"
        stage = stages.refused if status in (401, 403) else stages.failure
        return RoundTripFailure(stage, f"{what}: {shown(said, [self._token])}")

    async def close(self) -> None:
        await self._http.close()


def _json_object(answer: bytes, stages: Stages, what: str) -> dict[str, Any]:
    data = json_object(answer)
    if data is None:
        raise RoundTripFailure(stages.failure, f"{what}: the answer is not a JSON object")
    return data


def graph_message(message: EmailMessage, sender: str | None) -> dict[str, Any]:
    """The ``sendMail`` body for ``message``: its subject, text, recipient and ``X-``
    headers; ``from`` only when ``sender`` is given."""
    headers = [
        {"name": name, "value": str(value)}
        for name, value in message.items()
        if name.lower().startswith("x-")
    ]
    mail: dict[str, Any] = {
        "subject": str(message["Subject"]),
        "body": {"contentType": "Text", "content": message.get_content()},
        "toRecipients": [{"emailAddress": {"address": str(message["To"])}}],
        "internetMessageHeaders": headers,
    }
    if sender is not None:
        mail["from"] = {"emailAddress": {"address": sender}}
    return {"message": mail, "saveToSentItems": False}


async def send_mail(
    leg: GraphSend,
    message: EmailMessage,
    tokens: TokenBroker,
    budget: float,
    throttled: Throttled,
) -> None:
    """Submit ``message`` with ``sendMail``; :class:`RoundTripFailure` unless accepted."""
    client = GraphClient(leg, tokens, budget, throttled)
    try:
        url = client.url("users", leg.mailbox, "sendMail")
        await client.call("POST", url, SEND, "sendMail", {202}, graph_message(message, leg.from_))
    finally:
        await client.close()


def _tagged(item: object) -> tuple[str, TaggedMessage] | None:
    """A listed message's id and our headers; ``None`` unless it has a token."""
    if not isinstance(item, dict):
        return None
    ident, headers = item.get("id"), item.get("internetMessageHeaders")
    if not isinstance(ident, str) or not 0 < len(ident) <= MAX_ID_CHARACTERS:
        return None
    lines = []
    for header in headers if isinstance(headers, list) else ():
        name = header.get("name") if isinstance(header, dict) else None
        value = header.get("value") if isinstance(header, dict) else None
        if isinstance(name, str) and name.lower() in _WANTED and isinstance(value, str):
            # one line each: a line break in a value must not start a header of its own
            lines.append(f"{name}: {' '.join(value.splitlines())}")
    message = parse_tagged(("\r\n".join(lines) + "\r\n\r\n").encode())
    return (ident, message) if message is not None else None


class GraphMailbox:
    """The receive leg's mailbox for one attempt; open it with :meth:`open`."""

    def __init__(self, leg: GraphReceive, client: GraphClient) -> None:
        self._leg = leg
        self._client = client
        self._since = time.time() - FILTER_SLACK_SECONDS
        junk = leg.junk_folder
        self._folders = [junk] if junk and junk != leg.folder else []
        self._folders.append(leg.folder)  # last, so that its copy of a message wins

    @classmethod
    async def open(
        cls, leg: GraphReceive, tokens: TokenBroker, budget: float, throttled: Throttled
    ) -> GraphMailbox:
        """Get the token and read one message of the folder, so that a refused token or
        a missing mailbox shows before anything is sent."""
        mailbox = cls(leg, GraphClient(leg, tokens, budget, throttled))
        try:
            url = mailbox._messages(leg.folder, {"$select": "id", "$top": "1"})
            _, answer = await mailbox._client.call("GET", url, RECEIVE, "messages", {200})
            _json_object(answer, RECEIVE, "messages")
        except BaseException:
            await mailbox.close()
            raise
        return mailbox

    def _messages(self, folder: str, query: Mapping[str, str]) -> URL:
        path = ("users", self._leg.mailbox, "mailFolders", folder, "messages")
        return self._client.url(*path, query=query)

    async def _listed(self, folder: str, stages: Stages, since: float | None) -> list[Found]:
        """Our messages among the newest of ``folder`` (received since ``since``)."""
        query = {
            "$select": "id,internetMessageHeaders",
            "$orderby": "receivedDateTime desc",
            "$top": str(PAGE_SIZE),
        }
        if since is not None:
            moment = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            query["$filter"] = f"receivedDateTime ge {moment}"
        url: URL | None = self._messages(folder, query)
        what = f"messages of {folder}"
        found: list[Found] = []
        for _ in range(MAX_PAGES):
            if url is None:
                break
            _, answer = await self._client.call("GET", url, stages, what, {200})
            seen = time.monotonic()
            page = _json_object(answer, stages, what)
            items = page.get("value")
            if not isinstance(items, list):
                raise RoundTripFailure(stages.failure, f"{what}: the answer has no value list")
            for ident, message in filter(None, map(_tagged, items)):
                junk = folder != self._leg.folder
                found.append(Found(folder, ident, message, seen, junk))
            url = self._client.next_link(page, stages, what)
        return found

    async def find(self, token: str) -> Found | None:
        hits = []
        for folder in self._folders:
            hits += await self._listed(folder, RECEIVE, self._since)
        matching = [hit for hit in hits if hit.message.token == token]
        return matching[-1] if matching else None

    async def wait(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def tagged(self, route: str) -> list[Found]:
        found = []
        for folder in self._folders:
            found += await self._listed(folder, CLEANUP, None)
        return [item for item in found if item.message.route == route]

    async def delete(self, messages: Sequence[Found]) -> None:
        for message in messages:
            url = self._client.url("users", self._leg.mailbox, "messages", message.uid)
            await self._client.call("DELETE", url, CLEANUP, "delete", {200, 204, 404})

    async def close(self) -> None:
        await self._client.close()
