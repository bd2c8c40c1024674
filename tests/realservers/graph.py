"""A scripted Microsoft Graph on 127.0.0.1 over HTTPS: the mail requests the round trip
makes, answered in the shapes Microsoft documents, with their errors and throttling.

- Every request needs ``Authorization: Bearer`` with a token a :class:`TokenServer`
  issued and still holds (else 401 ``InvalidAuthenticationToken``); app-only tokens
  reach every mailbox, as the ``Mail.Send`` and ``Mail.ReadWrite`` application
  permissions do. A user not hosted here is 404 ``ErrorInvalidUser``.
- ``POST /v1.0/users/{user}/sendMail``: the body is checked as Graph checks it (a
  ``message`` with ``subject``, ``body`` and ``toRecipients``; at most five
  ``internetMessageHeaders``, each named ``X-``; ``saveToSentItems`` a boolean); 202
  with no body. The message is delivered at once to each recipient hosted here, into
  ``inbox`` (``junkemail`` while :attr:`GraphServer.to_junk` is set), with a ``Received``
  header and the X- headers; other recipients are relayed by SMTP to :attr:`relay`.
- ``GET /v1.0/users/{user}/mailFolders/{folder}/messages``: ``$select`` (only the named
  properties and ``id``; ``internetMessageHeaders`` only when selected, as Graph does),
  ``$filter`` (``receivedDateTime`` compared with ``ge``/``gt``/``le``/``lt`` and a
  ``Z`` literal), ``$orderby`` (``receivedDateTime desc``/``asc``), ``$top`` (1 to
  1000, default 10, and at most :attr:`page_cap` per page, as Graph may page below
  ``$top``) and ``$skip``; more is announced by ``@odata.nextLink``, the full URL of the
  next page (to :attr:`next_link_host` when set, to test a link that leaves the server).
- ``DELETE /v1.0/users/{user}/messages/{id}``: 204, or 404 ``ErrorItemNotFound``.
- :meth:`throttle` answers the next N requests of a method 429 with ``Retry-After``
  and Graph's throttling error body; :meth:`fail` answers the next one with a status
  and error (or a redirect, an oversized body, JSON nested too deep, a hang).
- An LMTP listener (:attr:`lmtp_port`) takes mail from a real Postfix into the inbox of a
  hosted user, with a ``Received`` header as Exchange would add.

Each request is logged in :attr:`requests` (method, path, query, JSON body). The server
runs its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import email.utils
import itertools
import json
import secrets
import smtplib
import ssl
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import Any

from aiohttp import web

from tests.realservers.loopback_http import LoopbackHTTP
from tests.realservers.oauth import TokenServer
from tests.realservers.pki import PKI

FOLDERS = ("inbox", "junkemail")
HANG_SECONDS = 60.0
_ARRIVALS = itertools.count()
_BODY = web.RequestKey("json", object)
"""The request's JSON body, read once by the checks every request passes."""


@dataclass
class Stored:
    """A message in a folder, as Graph keeps it."""

    id: str
    received: datetime.datetime
    headers: list[tuple[str, str]]
    subject: str = ""
    body: str = ""
    arrival: int = field(default_factory=lambda: next(_ARRIVALS))
    """Orders messages of one second, as Exchange's own clock (finer than the listing's) does."""

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)

    def resource(self, select: list[str] | None) -> dict[str, Any]:
        full: dict[str, Any] = {
            "id": self.id,
            "receivedDateTime": self.received.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "subject": self.subject,
            "bodyPreview": self.body[:255],
        }
        if select is None:
            return full
        shown = {key: full[key] for key in ("id", *select) if key in full}
        if "internetMessageHeaders" in select:
            shown["internetMessageHeaders"] = [{"name": n, "value": v} for n, v in self.headers]
        return shown


@dataclass
class Failure:
    """A canned answer for the next request of a method."""

    status: int
    code: str = ""
    message: str = ""
    kind: str = "error"  # error, redirect, oversize, deep, hang
    retry_after: str | None = None


def graph_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    body = {"error": {"code": code, "message": message,
                      "innerError": {"request-id": secrets.token_hex(8), "date": _now_text()}}}  # fmt: skip
    return web.json_response(body, status=status, headers=headers)


def _now_text() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _new_id() -> str:
    """An id in the shape of Graph's: URL-safe base64 with padding."""
    return base64.urlsafe_b64encode(b"AAMkAG" + secrets.token_bytes(60)).decode()


class Refusal(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


@dataclass
class GraphServer:
    pki: PKI
    tokens: TokenServer
    users: tuple[str, ...] = ("probe@test.local",)
    relay: tuple[str, int] | None = None
    to_junk: bool = False
    page_cap: int = 1000
    next_link_host: str | None = None
    also_deliver: int = 0
    """Messages of someone else delivered right after each sendMail message (a busy inbox)."""
    mailboxes: dict[str, dict[str, list[Stored]]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    lmtp_port: int = 0
    _failures: dict[str, list[Failure]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _http: LoopbackHTTP = field(default_factory=lambda: LoopbackHTTP("Graph server"))
    _lmtp: asyncio.Server | None = None

    def __post_init__(self) -> None:
        for user in self.users:
            self.mailboxes[user] = {folder: [] for folder in FOLDERS}

    # --- what tests set and read ------------------------------------------------------

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/v1.0"

    def throttle(self, method: str, times: int = 1, retry_after: str | None = "1") -> None:
        for _ in range(times):
            self.fail(method, Failure(429, "TooManyRequests", "Too many requests.", "error",
                                      retry_after))  # fmt: skip

    def fail(self, method: str, failure: Failure) -> None:
        with self._lock:
            self._failures.setdefault(method, []).append(failure)

    def put(
        self,
        user: str,
        headers: list[tuple[str, str]],
        folder: str = "inbox",
        received: datetime.datetime | None = None,
    ) -> Stored:
        """Store a message as if it had arrived (someone else's, or a forgery)."""
        moment = received or datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        message = Stored(_new_id(), moment, headers, dict(headers).get("Subject", ""))
        with self._lock:
            self.mailboxes[user][folder].append(message)
        return message

    def messages(self, user: str, folder: str = "inbox") -> list[Stored]:
        with self._lock:
            return list(self.mailboxes[user][folder])

    def logged(self, method: str) -> list[tuple[str, str, dict[str, str], Any]]:
        with self._lock:
            return [entry for entry in self.requests if entry[0] == method]

    # --- life -------------------------------------------------------------------------

    def start(self) -> GraphServer:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        self._http.start(self._application, context)
        return self

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> GraphServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _application(self) -> web.Application:
        app = web.Application(middlewares=[self._checks])
        app.router.add_post("/v1.0/users/{user}/sendMail", self._send_mail)
        app.router.add_get("/v1.0/users/{user}/mailFolders/{folder}/messages", self._list)
        app.router.add_delete("/v1.0/users/{user}/messages/{id}", self._delete)
        app.on_shutdown.append(self._close_lmtp)
        self._lmtp = await asyncio.start_server(self._lmtp_session, "127.0.0.1", 0)
        self.lmtp_port = self._lmtp.sockets[0].getsockname()[1]
        return app

    async def _close_lmtp(self, app: web.Application) -> None:
        assert self._lmtp is not None
        self._lmtp.close()

    # --- the checks every request passes ----------------------------------------------

    @web.middleware
    async def _checks(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = None
        if request.can_read_body:
            with contextlib.suppress(ValueError):
                body = json.loads(await request.read())
        request[_BODY] = body
        with self._lock:
            self.requests.append((request.method, request.path, dict(request.query), body))
            queued = self._failures.get(request.method)
            failure = queued.pop(0) if queued else None
        bearer = request.headers.get("Authorization", "")
        if not bearer.startswith("Bearer ") or self.tokens.active(bearer[7:]) is None:
            return graph_error(
                401, "InvalidAuthenticationToken", "Access token is empty or invalid."
            )
        if failure is not None:
            return await self._failed(failure, request)
        if request.match_info.get("user") not in self.mailboxes:
            user = request.match_info.get("user")
            return graph_error(404, "ErrorInvalidUser", f"The requested user '{user}' is invalid.")
        try:
            response: web.StreamResponse = await handler(request)
        except Refusal as refusal:
            return refusal.response
        return response

    async def _failed(self, failure: Failure, request: web.Request) -> web.StreamResponse:
        if failure.kind == "redirect":
            raise web.HTTPFound(f"https://127.0.0.1:{self.port}/elsewhere{request.path_qs}")
        if failure.kind == "oversize":
            return web.json_response({"value": [], "padding": " " * (5 * 1024 * 1024)})
        if failure.kind == "deep":  # JSON nested past any parser's recursion limit
            return web.Response(body=b"[" * 500_000, content_type="application/json")
        if failure.kind == "hang":
            assert self._http.released is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._http.released.wait(), HANG_SECONDS)
            return web.Response(status=503)
        headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
        return graph_error(failure.status, failure.code, failure.message, **headers)

    # --- sendMail ---------------------------------------------------------------------

    async def _send_mail(self, request: web.Request) -> web.Response:
        body = request[_BODY]
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict):
            raise Refusal(
                graph_error(400, "ErrorInvalidRequest", "Empty Payload. JSON content expected.")
            )
        saved = body.get("saveToSentItems", True)
        headers = message.get("internetMessageHeaders", [])
        recipients = message.get("toRecipients")
        if not isinstance(saved, bool) or not isinstance(headers, list) or not recipients:
            raise Refusal(
                graph_error(400, "ErrorInvalidRecipients", "At least one recipient is not valid.")
            )
        if len(headers) > 5:
            raise Refusal(graph_error(400, "InvalidInternetMessageHeaderCollection",
                          "Maximum number of headers in one message should be less than or equal to 5."))  # fmt: skip
        if any(not str(h.get("name", "")).lower().startswith("x-") for h in headers):
            raise Refusal(graph_error(400, "InvalidInternetMessageHeader",
                          "The internet message header name should start with 'x-' or 'X-'."))  # fmt: skip
        sender = request.match_info["user"]
        custom = [(str(h["name"]), str(h["value"])) for h in headers]
        subject = str(message.get("subject", ""))
        text = str(message.get("body", {}).get("content", ""))
        for recipient in recipients:
            address = recipient["emailAddress"]["address"]
            if address in self.mailboxes:
                self._deliver(address, sender, subject, text, custom)
            elif self.relay is not None:
                await asyncio.to_thread(self._relayed, address, sender, subject, text, custom)
        return web.Response(status=202)

    def _deliver(
        self, user: str, sender: str, subject: str, text: str, custom: list[tuple[str, str]]
    ) -> None:
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        stamp = email.utils.format_datetime(now)
        headers = [
            ("Received", f"from graph.test (127.0.0.1) by mailbox.graph.test with HTTP; {stamp}"),
            ("From", sender), ("To", user), ("Subject", subject), *custom,
        ]  # fmt: skip
        stored = Stored(_new_id(), now, headers, subject, text)
        with self._lock:
            self.mailboxes[user]["junkemail" if self.to_junk else "inbox"].append(stored)
        for index in range(self.also_deliver):
            self.put(user, [("From", "busy@example.org"), ("Subject", f"busy {index}")])

    def _relayed(
        self, to: str, sender: str, subject: str, text: str, custom: list[tuple[str, str]]
    ) -> None:
        message = EmailMessage()
        message["Received"] = (
            f"from graph.test by outbound.graph.test with HTTP; {email.utils.formatdate()}"
        )
        message["From"], message["To"], message["Subject"] = sender, to, subject
        for name, value in custom:
            message[name] = value
        message.set_content(text)
        assert self.relay is not None
        with smtplib.SMTP(*self.relay, timeout=30) as smtp:
            smtp.send_message(message, from_addr=sender, to_addrs=[to])

    # --- listing ----------------------------------------------------------------------

    async def _list(self, request: web.Request) -> web.Response:
        user, folder = request.match_info["user"], request.match_info["folder"].lower()
        if folder not in FOLDERS:
            raise Refusal(
                graph_error(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
            )
        query = request.query
        try:
            top = int(query.get("$top", "10"))
            skip = int(query.get("$skip", "0"))
        except ValueError:
            raise Refusal(graph_error(400, "BadRequest", "Invalid $top or $skip")) from None
        if not 1 <= top <= 1000 or skip < 0:
            raise Refusal(graph_error(400, "BadRequest", "$top must be within 1 and 1000"))
        matching = [m for m in self.messages(user, folder) if _matches(query.get("$filter"), m)]
        order = query.get("$orderby", "receivedDateTime desc")
        if order not in ("receivedDateTime desc", "receivedDateTime asc"):
            raise Refusal(graph_error(400, "BadRequest", f"Unsupported $orderby {order}"))
        matching.sort(key=lambda m: (m.received, m.arrival), reverse=order.endswith("desc"))
        count = min(top, self.page_cap)
        page = matching[skip : skip + count]
        select = query["$select"].split(",") if "$select" in query else None
        answer: dict[str, Any] = {
            "@odata.context": f"{self.base_url}/$metadata#users('{user}')/mailFolders('{folder}')/messages",
            "value": [message.resource(select) for message in page],
        }
        if skip + count < len(matching):
            host = self.next_link_host or "127.0.0.1"
            following = request.url.with_host(host).update_query({"$skip": str(skip + count)})
            answer["@odata.nextLink"] = str(following)
        return web.json_response(answer)

    # --- delete -----------------------------------------------------------------------

    async def _delete(self, request: web.Request) -> web.Response:
        user, ident = request.match_info["user"], request.match_info["id"]
        with self._lock:
            for messages in self.mailboxes[user].values():
                for message in messages:
                    if message.id == ident:
                        messages.remove(message)
                        return web.Response(status=204)
        raise Refusal(
            graph_error(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )
        )

    # --- LMTP, from a real Postfix ----------------------------------------------------

    async def _lmtp_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        recipients: list[str] = []

        async def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        try:
            await reply("220 mailbox.graph.test LMTP ready")
            while line := (await reader.readline()).decode(errors="replace").strip():
                verb = line.split(" ", 1)[0].upper()
                if verb == "LHLO":
                    await reply("250-mailbox.graph.test\r\n250 8BITMIME")
                elif verb == "MAIL":
                    recipients = []
                    await reply("250 2.1.0 ok")
                elif verb == "RCPT":
                    address = line.partition(":")[2].strip().strip("<>").split(">")[0]
                    known = address in self.mailboxes
                    recipients += [address] if known else []
                    await reply("250 2.1.5 ok" if known else "550 5.1.1 no such user")
                elif verb == "DATA":
                    await reply("354 go ahead")
                    raw = await _dot_terminated(reader)
                    for recipient in recipients:
                        self._store_raw(recipient, raw)
                        await reply("250 2.0.0 delivered")
                elif verb == "QUIT":
                    await reply("221 bye")
                    break
                else:
                    await reply("250 ok")
        finally:
            writer.close()

    def _store_raw(self, user: str, raw: bytes) -> None:
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        parsed = BytesParser(policy=default_policy).parsebytes(raw)
        received = (
            f"from postfix by mailbox.graph.test with LMTP; {email.utils.format_datetime(now)}"
        )
        headers = [("Received", received)] + [
            (n, " ".join(str(v).split())) for n, v in parsed.items()
        ]
        body = parsed.get_body(("plain",))
        text = body.get_content() if body is not None else ""
        with self._lock:
            self.mailboxes[user]["inbox"].append(
                Stored(_new_id(), now, headers, str(parsed["Subject"]), text)
            )


async def _dot_terminated(reader: asyncio.StreamReader) -> bytes:
    lines = []
    while (line := await reader.readline()) not in (b".\r\n", b".\n", b""):
        lines.append(line[1:] if line.startswith(b".") else line)
    return b"".join(lines)


_COMPARISONS = {
    "ge": lambda a, b: a >= b, "gt": lambda a, b: a > b,
    "le": lambda a, b: a <= b, "lt": lambda a, b: a < b,
}  # fmt: skip


def _matches(expression: str | None, message: Stored) -> bool:
    """``$filter`` as the round trip writes it; anything else is a 400, as Graph answers
    a filter it cannot read."""
    if expression is None:
        return True
    parts = expression.split(" ")
    if len(parts) != 3 or parts[0] != "receivedDateTime" or parts[1] not in _COMPARISONS:
        raise Refusal(graph_error(400, "BadRequest", f"Invalid filter clause: {expression}"))
    try:
        moment = datetime.datetime.strptime(parts[2], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.UTC
        )
    except ValueError:
        raise Refusal(graph_error(400, "BadRequest", f"Invalid date literal {parts[2]}")) from None
    return bool(_COMPARISONS[parts[1]](message.received, moment))
