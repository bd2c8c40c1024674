"""Reading the round trip's maildrop over POP3 (asyncio streams), deleting only our messages.

POP3 shows the maildrop as it was at login, so every look is a new session: connect,
TLS, login (the probes' POP3 code, XOAUTH2 and OAUTHBEARER included; no access token is
``receive_auth``), ``UIDL``, then ``TOP n 0`` for each message not
seen before: headers only, never a body. What each UIDL turned out to be is remembered
per route across attempts, so a mailbox full of other mail is read once, newest first,
at most ``MAX_TOPS`` messages per session. Between looks the session is closed (a
POP3 session may lock the maildrop) for the runner's pause.

Deletion is ``DELE`` of our message numbers, mapped from their UIDLs within the same
session, and ``QUIT`` to commit: nothing else is marked. POP3 has a single maildrop, so
``mailbox``, ``junk_mailbox`` and ``cleanup_mailbox`` do not apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence

from mail_exporter.config.probes import ModuleConfig
from mail_exporter.probes import ProbeMemory
from mail_exporter.probes.pop3 import command, open_pop3
from mail_exporter.probes.result import FailureReason, ProbeResult
from mail_exporter.probes.session import ProbeFailure, Session
from mail_exporter.roundtrip.connection import bounded
from mail_exporter.roundtrip.mailbox import Found
from mail_exporter.roundtrip.message import TaggedMessage, parse_tagged
from mail_exporter.roundtrip.outcome import RoundTripFailure, Stage
from mail_exporter.targets import Address

FOLDER = "INBOX"
MAX_TOPS = 200
"""Most unknown messages whose headers one session reads; the rest wait for the next."""
MAX_LISTING_LINES = 200_000
MAX_HEADER_LINES = 10_000
CLOSE_SECONDS = 2.0

_LOGIN_REASONS = frozenset({FailureReason.AUTH, FailureReason.TOKEN})
"""The probes' failures of a login: ``receive_auth`` in the round trip."""

HeaderCache = dict[str, TaggedMessage | None]
"""Per route: UIDL → our headers, or ``None`` for a message that is not ours."""


class Pop3Mailbox:
    """The maildrop of one attempt; each look after a :meth:`wait` is a new session."""

    def __init__(
        self, address: Address, module: ModuleConfig, headers: HeaderCache, memory: ProbeMemory
    ) -> None:
        self._address = address
        self._module = module
        self._headers = headers
        self._memory = memory
        self._session: Session | None = None
        self._numbers: dict[str, int] = {}
        self._listed_at = 0.0

    @classmethod
    async def open(
        cls, address: Address, module: ModuleConfig, headers: HeaderCache, memory: ProbeMemory
    ) -> Pop3Mailbox:
        """Log in and read the maildrop, so that a refused login shows before anything is
        sent; the session then ends, as the next look needs a new one anyway. An OAuth2
        login's token comes from ``memory``'s broker."""
        mailbox = cls(address, module, headers, memory)
        try:
            await mailbox._look()
        finally:
            await mailbox.close()
        return mailbox

    @contextlib.asynccontextmanager
    async def _step(self, stage: Stage, what: str) -> AsyncIterator[None]:
        async with bounded(stage, what, self._module.timeout_seconds):
            try:
                yield
            except ProbeFailure as failure:
                login = failure.reason in _LOGIN_REASONS and stage == Stage.RECEIVE
                raise RoundTripFailure(
                    Stage.RECEIVE_AUTH if login else stage, f"{what}: {failure.detail}"
                ) from None

    async def _look(self) -> None:
        """Open a session unless one is open, and read what is new in the maildrop."""
        if self._session is not None:
            return
        async with self._step(Stage.RECEIVE, "login"):
            deadline = time.monotonic() + self._module.timeout_seconds  # as _step bounds it
            session = Session(
                self._address, self._module, ProbeResult("pop3"), deadline, self._memory
            )
            self._session = session
            await session.connect()
            if self._module.tls == "implicit":
                await session.start_tls()
            await open_pop3(session)
        async with self._step(Stage.RECEIVE, "listing"):
            self._numbers = await self._listing(session)
            self._listed_at = time.monotonic()
            await self._read_new_headers(session)

    async def _lines(self, session: Session, limit: int) -> list[str]:
        """A multi-line answer's lines, dot-unstuffed, without the final dot."""
        lines: list[str] = []
        while len(lines) < limit:
            line = await session.read_line()
            if line == ".":
                return lines
            lines.append(line[1:] if line.startswith(".") else line)
        raise ProbeFailure(FailureReason.PROTOCOL, f"answer longer than {limit} lines")

    async def _listing(self, session: Session) -> dict[str, int]:
        await command(session, "UIDL", FailureReason.PROTOCOL)
        numbers: dict[str, int] = {}
        for line in await self._lines(session, MAX_LISTING_LINES):
            number, _, uid = line.partition(" ")
            if number.isdigit() and uid.strip():
                numbers[uid.strip()] = int(number)
        return numbers

    async def _read_new_headers(self, session: Session) -> None:
        for uid in [uid for uid in self._headers if uid not in self._numbers]:
            del self._headers[uid]
        unknown = sorted(
            (number, uid) for uid, number in self._numbers.items() if uid not in self._headers
        )
        for number, uid in reversed(unknown[-MAX_TOPS:]):  # the newest are likeliest ours
            await command(session, f"TOP {number} 0", FailureReason.PROTOCOL)
            block = "\r\n".join(await self._lines(session, MAX_HEADER_LINES)) + "\r\n\r\n"
            self._headers[uid] = parse_tagged(block.encode())

    def _ours(self) -> list[Found]:
        found = []
        for uid in self._numbers:
            message = self._headers.get(uid)
            if message is not None:
                found.append(Found(FOLDER, uid, message, self._listed_at))
        return found

    async def find(self, token: str) -> Found | None:
        await self._look()
        return next((item for item in self._ours() if item.message.token == token), None)

    async def wait(self, seconds: float) -> None:
        await self.close()
        await asyncio.sleep(max(0.0, seconds))

    async def tagged(self, route: str) -> list[Found]:
        await self._look()
        return [item for item in self._ours() if item.message.route == route]

    async def delete(self, messages: Sequence[Found]) -> None:
        await self._look()
        session = self._session
        assert session is not None
        async with self._step(Stage.CLEANUP, "delete"):
            for message in messages:
                if message.uid in self._numbers:
                    number = self._numbers[message.uid]
                    await command(session, f"DELE {number}", FailureReason.PROTOCOL)
            await command(session, "QUIT", FailureReason.PROTOCOL)  # commits the DELEs
        self._session = None
        await session.close()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_SECONDS):
                await session.write_line("QUIT")
        await session.close()
