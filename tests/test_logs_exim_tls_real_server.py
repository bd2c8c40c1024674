"""Exim's outbound TLS sessions on the main log of a real Exim 4.96 whose deliveries are refused.

The private Exim of :mod:`tests.realservers.exim` relays everything through ``remote_smtp``
to a scripted loopback receiver that offers STARTTLS, completes the handshake and then
refuses: ``gone…`` recipients with 550 at RCPT, ``later…`` with 451, ``spam…`` with 554
after DATA; others are accepted. Each message is its own delivery attempt, so its TLS
session must count once however many ``=>``, ``**`` and ``==`` lines it gave.
``tests/fixtures/logs/exim_tls_refusals`` was recorded from this run.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from mail_exporter.collectors.logs.counters import LogCounters
from mail_exporter.collectors.logs.dispatch import LineDispatcher
from tests.realservers.exim import COMMAND_TIMEOUT_SECONDS
from tests.realservers.pki import PKI, create_pki
from tests.scripted import Handler, scripted_server, send, server_context, upgrade
from tests.test_exim_queue import real_exim, work_dir

__all__ = ["work_dir"]  # the fixture, shared with the queue collector's tests

pytestmark = pytest.mark.integration

MESSAGES = (
    ("gone@remote.test",),  # one refused recipient
    ("gone@remote.test", "gone2@remote.test"),  # two refused in one session, no `=>`
    ("gone@b.test", "ok@a.test", "later@c.test", "ok2@d.test"),  # `**`, `=>`, `==`, `->`
    ("later@remote.test",),  # deferred only: Exim 4.96 logs no `X=` on `==`
    ("spam@remote.test",),  # refused after DATA
)
SESSIONS_LOGGED = 4
"""TLS sessions the main log shows: every message's but the deferred-only one."""
RCPT_REPLIES = {
    "gone": "550 5.1.1 <{}>: Recipient address rejected: User unknown",
    "later": "451 4.7.1 <{}>: Recipient address rejected: try again later",
}
DATA_REFUSAL = "554 5.7.1 Message rejected as spam"
TRANSPORT = """\
begin routers
to_receiver:
  driver = manualroute
  route_list = * 127.0.0.1
  self = send
  transport = remote_smtp
begin transports
remote_smtp:
  driver = smtp
  port = {port}
  hosts_require_tls = *
  tls_verify_certificates = {ca}
  tls_try_verify_hosts =
begin retry
* * F,1h,10m
"""
"""Everything to the receiver over TLS, its certificate verified against the test's CA
(it names 127.0.0.1), so ``CV=yes``."""


def receiver(pki: PKI) -> Handler:
    context = server_context(pki.server_cert, pki.server_key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, "220 remote.test ESMTP")
        secure = spam = False
        while line := await reader.readline():
            command = line.decode().strip()
            verb = command.split(" ")[0].upper()
            if verb == "EHLO":
                await send(
                    writer, "250-remote.test", *([] if secure else ["250-STARTTLS"]), "250 8BITMIME"
                )
            elif verb == "STARTTLS":
                await send(writer, "220 go ahead")
                await upgrade(writer, context)
                secure = True
            elif verb == "RCPT":
                address = command[command.find("<") + 1 : command.find(">")]
                local = address.split("@")[0].rstrip("0123456789")
                spam = spam or local == "spam"
                await send(writer, RCPT_REPLIES.get(local, "250 {}").format(address))
            elif verb == "DATA":
                await send(writer, "354 go ahead")
                while (await reader.readline()).rstrip(b"\r\n") != b".":
                    pass
                await send(writer, DATA_REFUSAL if spam else "250 queued")
            elif verb == "QUIT":
                await send(writer, "221 bye")
                return
            else:  # MAIL, RSET
                spam = False
                await send(writer, "250 ok")

    return handler


async def refused_deliveries(directory: Path) -> str:
    """Queue :data:`MESSAGES` from ``<>`` (no bounces), run the queue once; the main log."""
    exim = real_exim(directory)
    certificates = directory / "pki"
    certificates.mkdir(mode=0o755)
    pki = create_pki(certificates)
    for path in certificates.iterdir():
        path.chmod(0o644)  # exim delivers as Debian-exim
    async with scripted_server(receiver(pki)) as address:
        port = address.rpartition(":")[2]
        config = exim.config_path.read_text().replace("begin routers\nbegin transports\n", "")
        exim.config_path.write_text(config + TRANSPORT.format(port=port, ca=pki.ca_file))
        for recipients in MESSAGES:
            queued = await asyncio.create_subprocess_exec(
                *exim.command, "-odq", "-f", "", *recipients, stdin=subprocess.PIPE
            )
            await asyncio.wait_for(
                queued.communicate(b"Subject: t\n\nhello\n"), COMMAND_TIMEOUT_SECONDS
            )
        run = await asyncio.create_subprocess_exec(*exim.command, "-qf")
        await asyncio.wait_for(run.wait(), COMMAND_TIMEOUT_SECONDS * 3)
    return (exim.log_directory / "mainlog").read_text()


def test_refused_deliveries_count_each_tls_session_once(work_dir: Path) -> None:
    log = asyncio.run(refused_deliveries(work_dir))
    counters = LogCounters(top_domains=10)
    feed = LineDispatcher(counters, ()).feeder("exim")
    for line in log.splitlines():
        feed(line)
    assert log.count(" ** ") == 5 and " X=" in log, log
    assert dict(counters.tls_connections) == {
        ("exim", "remote_smtp", "TLS 1.3", "verified"): SESSIONS_LOGGED
    }, log
    assert not [key for key in counters.lines if key[2] == "unsupported"], log
