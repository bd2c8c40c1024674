"""Reading the round trip's mailbox over IMAP (aioimaplib), and deleting only our messages.

- **Finding**: ``UID SEARCH HEADER X-Mail-Exporter-Token <token>`` on the server, then
  ``UID FETCH`` of just our header fields for the UIDs it names: the mailbox itself is
  never downloaded. ``junk_mailbox``, when set, is searched too (a missing one counts as
  empty) and the mailbox is searched last, so that it stays selected for IDLE.
- **Waiting**: with IDLE the server's notification ends the runner's pause between looks
  at once, and its time is the moment the message was seen; each look ends IDLE, so a
  notification that slipped in before IDLE began costs one pause at most. Without IDLE
  the pause is a plain sleep and the search's answer is the moment seen. Each look
  starts with NOOP (or SELECT), because Dovecot's SEARCH only sees what the previous
  command's mailbox sync found.
- **Deleting**, by UID only: with UIDPLUS, ``UID STORE +FLAGS.SILENT (\\Deleted)`` and
  ``UID EXPUNGE`` of exactly our UIDs. Without UIDPLUS there is no EXPUNGE at all: a plain
  one removes every message anyone marked \\Deleted, and a check for such messages
  before it cannot stop another client from setting the flag between the check and the
  EXPUNGE (IMAP has no lock). Instead ours are moved (``UID MOVE``; without MOVE,
  ``UID COPY`` and our originals flagged \\Deleted for the owner's client to expunge)
  to a folder of the exporter's own, which is then deleted whole (``DELETE``). Its name
  is ``cleanup_mailbox`` plus a random suffix drawn once per route runner, so no other
  client can know it beforehand; it exists only during a cleanup, and one left by a
  failed cleanup is reused and deleted by the next. Mail another client puts into it in
  those milliseconds would go with it: the one window IMAP without UIDPLUS leaves, and
  only for a client that looks for the folder. After a crash in that window the folder
  stays, with probe messages only. Without MOVE, searches skip \\Deleted messages, so a
  flagged original is not found again.
- **Sweeping**: a cleanup reads at most ``MAX_SWEEP`` messages of the route per mailbox,
  the newest, so that messages not ours piling up (the runner leaves them) never hide
  one of ours that arrives late.
- **Login** as :mod:`mail_exporter.imap_login` connects and logs in (shared with the
  reports collector); a refused login or a missing access token is ``receive_auth``.
  Mailbox names are sent quoted as configured (non-ASCII names in modified UTF-7).

Every command is bounded by the receive module's ``timeout``.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import aioimaplib

from mail_exporter import imap_login
from mail_exporter.config.probes import ModuleConfig
from mail_exporter.config.roundtrip import RoundTripReceive
from mail_exporter.imap_login import ImapLoginFailure, logout_and_close, response_text
from mail_exporter.probes import ProbeMemory
from mail_exporter.roundtrip.connection import bounded
from mail_exporter.roundtrip.mailbox import Found
from mail_exporter.roundtrip.message import HEADER_FIELDS, ROUTE_HEADER, TOKEN_HEADER, parse_tagged
from mail_exporter.roundtrip.outcome import RoundTripFailure, Stage
from mail_exporter.targets import Address

MAX_SWEEP = 100
"""Most messages of a route read per cleanup, the newest; older ones are not looked at."""
_FETCH_ITEMS = f"(UID BODY.PEEK[HEADER.FIELDS ({' '.join(HEADER_FIELDS)})])"
_UID = re.compile(rb"\bUID (\d+)")
_LOST = [b"connection lost"]
"""Put into the IDLE queue when the connection drops, so a waiting IDLE ends at once."""


def _header_blocks(lines: Sequence[bytes | bytearray]) -> dict[str, bytes]:
    """Header block by UID from a UID FETCH answer (the UID stands before or after it)."""
    blocks: dict[str, bytes] = {}
    for index, item in enumerate(lines):
        if isinstance(item, bytearray) and index > 0:
            after = bytes(lines[index + 1]) if index + 1 < len(lines) else b""
            match = _UID.search(bytes(lines[index - 1]) + after)
            if match:
                blocks[match.group(1).decode()] = bytes(item)
    return blocks


def cleanup_folder(receive: RoundTripReceive) -> str:
    """A new name for the folder our messages are deleted in without UIDPLUS."""
    return f"{receive.cleanup_mailbox}-{secrets.token_hex(16)}"


class ImapMailbox:
    """One logged-in IMAP session for one attempt; open it with :meth:`open`."""

    def __init__(
        self, protocol: Any, receive: RoundTripReceive, timeout: float, cleanup_folder: str
    ) -> None:
        self._protocol = protocol
        self._receive = receive
        self._timeout = timeout
        self._cleanup_folder = aioimaplib.quoted(cleanup_folder)
        self._selected: str | None = None
        self._woken: float | None = None
        self._idle_task: asyncio.Future[Any] | None = None
        junk = receive.junk_mailbox
        self._folders = [junk] if junk and junk != receive.mailbox else []
        self._folders.append(receive.mailbox)  # last: it stays selected for IDLE

    @classmethod
    async def open(
        cls,
        address: Address,
        module: ModuleConfig,
        receive: RoundTripReceive,
        cleanup_folder: str,
        memory: ProbeMemory,
    ) -> ImapMailbox:
        """Connect, secure, log in and select the mailbox; ``cleanup_folder`` is the
        route's name from :func:`cleanup_folder`, the same for all its attempts. An OAuth2
        login's token comes from ``memory``'s broker."""
        protocol = imap_login.BoundedProtocol(asyncio.get_running_loop())
        protocol.conn_lost_cb = lambda _: protocol.idle_queue.put_nowait(_LOST)
        mailbox = cls(protocol, receive, module.timeout_seconds, cleanup_folder)
        try:
            async with mailbox._step(Stage.RECEIVE, "connect"):
                await imap_login.connect(protocol, address, module)
            async with mailbox._step(Stage.RECEIVE, "login"):
                assert module.auth is not None  # the config requires a login to read mail
                seconds = module.timeout_seconds
                await imap_login.login(protocol, module.auth, address, memory, seconds)
            async with mailbox._step(Stage.RECEIVE, "select"):
                await mailbox._select(receive.mailbox, Stage.RECEIVE, required=True)
        except ImapLoginFailure as failure:
            await mailbox.close()
            stage = Stage.RECEIVE_AUTH if failure.login else Stage.RECEIVE
            raise RoundTripFailure(stage, failure.detail) from None
        except BaseException:
            await mailbox.close()
            raise
        return mailbox

    @property
    def capabilities(self) -> set[str]:
        return imap_login.capabilities(self._protocol)

    def _step(self, stage: Stage, what: str) -> AbstractAsyncContextManager[None]:
        return bounded(stage, what, self._timeout, (aioimaplib.AioImapException,))

    def _check_open(self, stage: Stage, what: str) -> None:
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            raise RoundTripFailure(stage, f"{what}: connection lost")

    async def _execute(self, command: Any, stage: Stage, what: str) -> Any:
        """Await an aioimaplib command; its response, or a ``stage`` failure unless OK."""
        self._check_open(stage, what)
        response = await command
        if response.result != "OK":
            raise RoundTripFailure(stage, f"{what}: {response.result} {response_text(response)}")
        return response

    async def _select(self, folder: str, stage: Stage, required: bool = False) -> bool:
        """Select ``folder`` unless it is; ``False`` when it does not exist and may not."""
        if self._selected == folder:
            return True
        self._check_open(stage, "SELECT")
        self._selected = None  # a failed SELECT leaves no mailbox selected
        response = await self._protocol.select(aioimaplib.quoted(folder))
        if response.result != "OK":
            if required:
                text = response_text(response)
                raise RoundTripFailure(stage, f"cannot select {folder!r}: {text}")
            return False
        self._selected = folder
        return True

    @property
    def _skips_deleted(self) -> tuple[str, ...]:
        """Criteria that hide our own flagged originals on servers without UIDPLUS and MOVE."""
        return () if self.capabilities & {"UIDPLUS", "MOVE"} else ("UNDELETED",)

    async def _search(self, stage: Stage, *criteria: str) -> list[str]:
        search = self._protocol.search(*criteria, charset=None, by_uid=True)
        response = await self._execute(search, stage, "UID SEARCH")
        # The last line is the tagged completion; the untagged SEARCH lines hold the UIDs.
        words = b" ".join(bytes(line) for line in response.lines[:-1]).split()
        return [word.decode() for word in words if word.isdigit()]

    async def _fetch(self, stage: Stage, uids: Sequence[str]) -> dict[str, bytes]:
        if not uids:
            return {}
        fetch = self._protocol.fetch(",".join(uids), _FETCH_ITEMS, by_uid=True)
        return _header_blocks((await self._execute(fetch, stage, "UID FETCH")).lines)

    async def _look_into(self, folder: str, stage: Stage) -> bool:
        """Select ``folder``, or sync it with NOOP when it is selected already."""
        if self._selected != folder:
            return await self._select(folder, stage)
        await self._execute(self._protocol.simple_command("NOOP"), stage, "NOOP")
        return True

    async def _tagged_in(self, folder: str, stage: Stage, *criteria: str) -> list[Found]:
        """Our messages in ``folder`` matching ``criteria`` (none when it does not exist)."""
        if not await self._look_into(folder, stage):
            return []
        uids = await self._search(stage, *self._skips_deleted, *criteria)
        seen = self._woken if self._woken is not None else time.monotonic()
        blocks = await self._fetch(stage, uids[-MAX_SWEEP:])  # UIDs ascend with arrival
        found = []
        for uid, block in blocks.items():
            message = parse_tagged(block)
            if message is not None:
                junk = folder != self._receive.mailbox
                found.append(Found(folder, uid, message, seen, junk))
        return found

    async def find(self, token: str) -> Found | None:
        criteria = ("HEADER", TOKEN_HEADER, aioimaplib.quoted(token))
        async with self._step(Stage.RECEIVE, "search"):
            hits = []
            for folder in self._folders:
                hits += await self._tagged_in(folder, Stage.RECEIVE, *criteria)
        matching = [hit for hit in hits if hit.message.token == token]
        return matching[-1] if matching else None  # the mailbox's hit over the junk's

    async def tagged(self, route: str) -> list[Found]:
        criteria = ("HEADER", ROUTE_HEADER, aioimaplib.quoted(route))
        async with self._step(Stage.CLEANUP, "search"):
            found = []
            for folder in self._folders:
                found += await self._tagged_in(folder, Stage.CLEANUP, *criteria)
        return [item for item in found if item.message.route == route]

    async def wait(self, seconds: float) -> None:
        self._woken = None
        if seconds <= 0:
            return
        if "IDLE" not in self.capabilities:
            await asyncio.sleep(seconds)
            return
        await self._idle(seconds)

    async def _idle(self, seconds: float) -> None:
        protocol = self._protocol
        self._check_open(Stage.RECEIVE, "IDLE")
        queue = protocol.idle_queue
        while not queue.empty():  # notifications the last search already covered
            queue.get_nowait()
        async with self._step(Stage.RECEIVE, "IDLE"):
            self._idle_task = idle = asyncio.ensure_future(protocol.idle())
            await self._idle_started(idle)
        try:
            push = await asyncio.wait_for(queue.get(), seconds)
        except TimeoutError:
            push = None
        finally:
            if not idle.done():
                protocol.idle_done()  # DONE, even when cancelled: the session stays usable
        if push is _LOST:
            raise RoundTripFailure(Stage.RECEIVE, "connection lost while idling")
        if push is not None:
            self._woken = time.monotonic()
        async with self._step(Stage.RECEIVE, "IDLE"):
            await self._execute(idle, Stage.RECEIVE, "IDLE")

    async def _idle_started(self, idle: asyncio.Future[Any]) -> None:
        """Wait for the server's ``+`` to IDLE; a refusal ends the command instead."""
        started = asyncio.ensure_future(self._protocol.wait_for_idle_response())
        try:
            await asyncio.wait({idle, started}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            started.cancel()
        if idle.done():
            await self._execute(idle, Stage.RECEIVE, "IDLE")

    async def delete(self, messages: Sequence[Found]) -> None:
        by_folder: dict[str, list[str]] = {}
        for message in messages:
            by_folder.setdefault(message.folder, []).append(message.uid)
        async with self._step(Stage.CLEANUP, "delete"):
            for folder, uids in by_folder.items():
                await self._select(folder, Stage.CLEANUP, required=True)
                if "UIDPLUS" in self.capabilities:
                    await self._expunge_uids(",".join(uids))
                else:
                    await self._move_out(",".join(uids))
            if by_folder and "UIDPLUS" not in self.capabilities:
                delete = self._protocol.simple_command("DELETE", self._cleanup_folder)
                await self._execute(delete, Stage.CLEANUP, "DELETE")

    async def _flag_deleted(self, uid_set: str) -> None:
        store = self._protocol.store(uid_set, "+FLAGS.SILENT", r"(\Deleted)", by_uid=True)
        await self._execute(store, Stage.CLEANUP, "UID STORE")

    async def _expunge_uids(self, uid_set: str) -> None:
        await self._flag_deleted(uid_set)
        expunge = self._protocol.expunge(uid_set, by_uid=True)
        await self._execute(expunge, Stage.CLEANUP, "UID EXPUNGE")

    async def _move_out(self, uid_set: str) -> None:
        """Move our messages to the cleanup folder (copy and flag without MOVE)."""
        await self._protocol.simple_command("CREATE", self._cleanup_folder)  # NO if it exists
        if "MOVE" in self.capabilities:
            move = self._protocol.move(uid_set, self._cleanup_folder, by_uid=True)
            await self._execute(move, Stage.CLEANUP, "UID MOVE")
            return
        copy = self._protocol.copy(uid_set, self._cleanup_folder, by_uid=True)
        await self._execute(copy, Stage.CLEANUP, "UID COPY")
        await self._flag_deleted(uid_set)

    async def close(self) -> None:
        if self._idle_task is not None and not self._idle_task.done():
            self._idle_task.cancel()
        await logout_and_close(self._protocol)
