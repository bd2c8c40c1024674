"""Refusals on the logs of a real Postfix relaying to a receiver that refuses as the big ones do.

The private Postfix of :mod:`tests.realservers.postfix` relays everything to a scripted
loopback receiver that answers each RCPT with the codes and key phrases Gmail,
Microsoft and Yahoo document for their refusals (4xx and 5xx with enhanced codes,
multi-line like Gmail's). Each recipient is its own message, so each delivery's reply
class, enhanced code and reason must count exactly once, by receiving domain. One
accepted message with three recipients gives the message-shape histograms.
"""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time
from collections.abc import Iterator

import pytest

from mail_exporter.collectors.logs.collector import LogsCollector
from mail_exporter.collectors.logs.config import LogsConfig
from tests.conftest import new_postfix
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix
from tests.scripted import send
from tests.test_logs_real_servers import quiet, samples, wait_until_following

pytestmark = pytest.mark.integration

REFUSALS = {
    "ratelimited@gmail.com": ["421-4.7.28 [127.0.0.1] unusual rate of unsolicited mail from",
                              "421 4.7.28 your IP address: temporarily rate limited - gsmtp"],
    "nobody@gmail.com": ["550-5.1.1 The email account that you tried to reach does",
                         "550 5.1.1 not exist - gsmtp"],
    "full@gmail.com": ["452 4.2.2 The email account is over quota - gsmtp"],
    "unauth@gmail.com": ["550 5.7.26 Blocked: the sender is unauthenticated - gsmtp"],
    "tls@gmail.com": ["530 5.7.0 Must issue a STARTTLS command first - gsmtp"],
    "blocked@outlook.com": ["550 5.7.1 Messages from [127.0.0.1] weren't sent: part of their "
                            "network is on our block list (S3150)"],
    "throttled@outlook.com": ["451 4.7.650 The mail server [127.0.0.1] has been temporarily "
                              "rate limited due to IP reputation (S775)"],
    "volume@yahoo.com": ["421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due "
                         "to unexpected volume or user complaints"],
    "listed@yahoo.com": ["553 5.7.1 [BL21] Connections not accepted from 127.0.0.1, because "
                         "the ip is in Spamhaus's list"],
}  # fmt: skip
"""Recipient → the receiver's reply to its RCPT (our wording around the documented codes
and key phrases)."""
ACCEPTED = ("one@example.net", "two@example.net", "three@example.net")
REFUSALS_BY_DOMAIN = {
    ("gmail.com", "deferred", "rate_limited"): 1, ("gmail.com", "bounced", "unknown_user"): 1,
    ("gmail.com", "deferred", "mailbox_full"): 1, ("gmail.com", "bounced", "policy"): 1,
    ("gmail.com", "bounced", "tls_required"): 1, ("outlook.com", "bounced", "reputation"): 1,
    ("outlook.com", "deferred", "rate_limited"): 1, ("yahoo.com", "deferred", "rate_limited"): 1,
    ("yahoo.com", "bounced", "reputation"): 1,
}  # fmt: skip
REFUSAL_CODES = {
    ("4", "4.7.28"): 1, ("5", "5.1.1"): 1, ("4", "4.2.2"): 1, ("5", "5.7.26"): 1,
    ("5", "5.7.0"): 1, ("5", "5.7.1"): 2, ("4", "other"): 1, ("4", "4.7.0"): 1,
}  # fmt: skip


async def receiver(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts everything but the recipients of :data:`REFUSALS`, which get their reply."""
    await send(writer, "220 mx.receiver.test ESMTP")
    while line := await reader.readline():
        command = line.decode().strip()
        verb = command.split(" ")[0].upper()
        if verb == "EHLO":
            await send(writer, "250-mx.receiver.test", "250 8BITMIME")
        elif verb == "RCPT":
            address = command[command.find("<") + 1 : command.find(">")]
            await send(writer, *REFUSALS.get(address, ["250 2.1.5 ok"]))
            if address in REFUSALS and REFUSALS[address][0].startswith("421"):
                return
        elif verb == "DATA":
            await send(writer, "354 go on")
            while (await reader.readline()) not in (b".\r\n", b""):
                pass
            await send(writer, "250 2.0.0 queued")
        elif verb == "QUIT":
            await send(writer, "221 2.0.0 bye")
            return
        else:
            await send(writer, "250 2.0.0 ok")


class Receiver:
    """:func:`receiver` on 127.0.0.1 in a thread of its own."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(receiver, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())

    def __enter__(self) -> Receiver:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class RelayingPostfix(Postfix):
    """Relays to the receiver instead of to a refused port."""

    receiver_port = 0

    def _take_ports(self) -> None:
        super()._take_ports()
        self.refused_port = self.receiver_port


@pytest.fixture(scope="module")
def relaying_postfix(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, dovecot: Dovecot
) -> Iterator[RelayingPostfix]:
    with Receiver() as listening:
        RelayingPostfix.receiver_port = listening.port
        server = new_postfix(tmp_path_factory, pki, dovecot, RelayingPostfix, "postfix-refusals")
        server.start()
        yield server
        server.stop()


def moved(before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
          after: dict[tuple[str, tuple[tuple[str, str], ...]], float],
          name: str, keys: tuple[str, ...]) -> dict[tuple[str, ...], float]:  # fmt: skip
    """How far each series of ``name`` moved, by the values of ``keys``."""
    found: dict[tuple[str, ...], float] = {}
    for (sample, labels), value in after.items():
        if sample == name:
            key = tuple(dict(labels)[k] for k in keys)
            found[key] = found.get(key, 0.0) + value - before.get((sample, labels), 0.0)
    return {key: n for key, n in found.items() if n}


def test_each_refusal_counts_its_class_code_reason_and_receiver(
    relaying_postfix: RelayingPostfix,
) -> None:
    quiet(relaying_postfix.log_path)
    settings = LogsConfig.model_validate({
        "enabled": True, "poll_interval": "50ms",
        "sources": [{"path": str(relaying_postfix.log_path)}],
    })  # fmt: skip
    collector = LogsCollector(settings)
    try:
        wait_until_following(collector)
        before = samples(collector)
        with smtplib.SMTP("127.0.0.1", relaying_postfix.smtp_port) as client:
            for recipient in REFUSALS:
                client.sendmail("alice@example.org", [recipient], "Subject: t\r\n\r\nhi\r\n")
            client.sendmail("alice@example.org", list(ACCEPTED), "Subject: t\r\n\r\nhi\r\n")
        deadline = time.monotonic() + 30
        name = "mail_delivery_refusals_total"
        while sum(moved(before, samples(collector), name, ("domain",)).values()) < len(REFUSALS):
            assert time.monotonic() < deadline, samples(collector)
            time.sleep(0.1)
        quiet(relaying_postfix.log_path)
        after = samples(collector)
    finally:
        collector.close()
    by_domain = moved(before, after, name, ("domain", "status", "reason"))
    assert by_domain == REFUSALS_BY_DOMAIN
    codes = moved(before, after, "mail_delivery_refusal_codes_total",
                  ("code_class", "enhanced_code"))  # fmt: skip
    assert codes == REFUSAL_CODES
    recipients = moved(before, after, "mail_message_recipients_bucket", ("le",))
    assert recipients[("1.0",)] >= len(REFUSALS)  # and the bounce notices to alice
    assert recipients[("5.0",)] - recipients[("2.0",)] == 1  # the message of three
    assert moved(before, after, "mail_message_size_bytes_count", ())[()] >= len(REFUSALS) + 1
