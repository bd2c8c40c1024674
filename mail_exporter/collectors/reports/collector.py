"""The ``reports`` collector: a pass over the reports mailbox on the section's ``interval``.

As :mod:`~mail_exporter.collectors.background` runs work on an interval: the first
scrape runs a pass and waits for it, later passes start in the collector's own thread
at the first scrape after the interval, and every scrape returns the counters at once.
A pass runs on an event loop of its own in that thread (``asyncio.run``), bounded by
the section's ``timeout`` (and, the first one, by the scrape's collection deadline).

One pass, under the tally's pass lock (a collector rebuilt by a reload waits for its
predecessor's pass, whose counts land in the same tally):

1. Load the state file (:mod:`.state`; one that cannot be read fails the pass).
2. Log in, select, list the messages above the last UID read (at most
   ``max_messages_per_pass``, the oldest first) with their sizes.
3. Read each: one over ``max_message_bytes`` is a ``too_large`` rejection and is never
   downloaded (one whose size was announced smaller is read up to one byte over the
   bound, and refused alike); the others are read (:func:`.message.read_message`), their reports
   counted or refused, the notification rules matched. A message with anything
   understood (a report counted or seen before, a notification) is ``processed``, one
   with only refusals ``rejected``, the rest ``ignored``.
4. Save the state (new last UID, report ids, notification times) and commit the pass's
   counts: only now, so a pass that fails before counts nothing and the next one reads
   the same messages again.
5. File the processed messages (:mod:`.mailbox`). Counted already: a failure here is
   logged and fails the pass (``mail_exporter_collector_success`` 0), the messages stay
   unfiled where they are and are not read again.

A failed pass makes scrapes fail (with the reason) until a pass works again.

OAuth2 logins get their tokens from a token broker of the collector's own (kept across
reloads): the exporter's broker serves the main event loop, and a pass runs on another.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.core import Metric

from mail_exporter.collectors.background import IntervalWork, Runner
from mail_exporter.collectors.base import (
    Collector,
    CollectorError,
    collection_deadline,
    register_collector,
)
from mail_exporter.collectors.reports.config import ReportsConfig
from mail_exporter.collectors.reports.families import families
from mail_exporter.collectors.reports.mailbox import (
    Listed,
    MailboxError,
    ReportsMailbox,
    imap_date,
)
from mail_exporter.collectors.reports.message import read_message
from mail_exporter.collectors.reports.notifications import CompiledRule, matched, message_time
from mail_exporter.collectors.reports.rejection import Rejected
from mail_exporter.collectors.reports.state import StateError, load_state, save_state
from mail_exporter.collectors.reports.tally import PassTally, Tally
from mail_exporter.printable import printable
from mail_exporter.probes import ProbeMemory
from mail_exporter.targets import parse_address

logger = logging.getLogger(__name__)


@dataclass
class _Kept:
    """What outlives a collector rebuilt by a reload."""

    tally: Tally
    memory: ProbeMemory


class ReportsCollector:
    def __init__(
        self,
        settings: ReportsConfig,
        previous: ReportsCollector | None = None,
        clock: Callable[[], float] = time.monotonic,
        background: Runner | None = None,
    ) -> None:
        self.settings = settings
        self._kept: _Kept
        if previous is not None:
            self._kept = previous._kept
            self._kept.tally.configure(settings)
        else:
            self._kept = _Kept(Tally(settings), ProbeMemory())
        self._rules = tuple(CompiledRule.of(rule) for rule in settings.notifications)
        self._passes = IntervalWork(
            "reports", float(settings.interval), self._pass, clock, background
        )
        self._failure: str | None = "no pass has finished yet"
        self._lock = threading.Lock()

    @property
    def tally(self) -> Tally:
        return self._kept.tally

    def collect(self) -> Iterable[Metric]:
        self._passes.tick()
        with self._lock:
            failure = self._failure
        if failure is not None:
            raise CollectorError(failure)
        counters, last = self.tally.snapshot()
        return families(self.settings, counters, last)

    def close(self) -> None:
        self._passes.close()

    def _pass(self) -> None:
        seconds = min(float(self.settings.timeout), collection_deadline() - time.monotonic())
        try:
            with self.tally.pass_lock:
                asyncio.run(self._bounded_pass(max(0.0, seconds)))
        except (MailboxError, StateError) as error:
            failure: str | None = str(error)
        except TimeoutError:
            failure = f"the pass did not end within {seconds:.3g}s"
        except Exception as error:  # in a background thread nobody else would see it
            logger.exception("reports pass failed")
            failure = f"the pass failed: {error!r}"
        else:
            failure = None
        if failure is not None:
            logger.error("reports mailbox: %s", failure)
        with self._lock:
            self._failure = failure

    async def _bounded_pass(self, seconds: float) -> None:
        async with asyncio.timeout(seconds):
            await self._read_mailbox()

    async def _read_mailbox(self) -> None:
        settings = self.settings
        module = settings.imap_module
        if settings.address is None or module is None:
            raise MailboxError("the reports section names no address or imap module")
        path = settings.state_file
        state = load_state(path)
        address = parse_address(settings.address)
        mailbox = await ReportsMailbox.open(
            address, module, settings.mailbox, self._kept.memory, settings.max_message_bytes
        )
        try:
            before = (state.mailbox, state.uidvalidity)
            after = state.start_at(settings.mailbox, mailbox.uidvalidity)
            since = state.since
            if before[0] == settings.mailbox and before[1] not in (None, mailbox.uidvalidity):
                logger.warning(
                    "reports mailbox %s: UIDVALIDITY changed from %s to %d; reading again"
                    " the messages not filed that arrived since %s",
                    printable(settings.mailbox),
                    before[1],
                    mailbox.uidvalidity,
                    "the first" if since is None else imap_date(since),
                )
            listed, through = await mailbox.new_messages(
                after, settings.processed_flag, settings.max_messages_per_pass, since
            )
            counted = self.tally.begin(state)
            processed = []
            for item in listed:
                if await self._read(mailbox, item, counted):
                    processed.append(item.uid)
                if item.arrived is not None:
                    state.arrived(item.arrived, time.time())
            state.last_uid = through
            save_state(path, state)
            self.tally.commit(counted)
            await mailbox.file(processed, settings.processed_mailbox, settings.processed_flag)
        finally:
            await mailbox.close()

    async def _read(self, mailbox: ReportsMailbox, item: Listed, counted: PassTally) -> bool:
        """Count one message; whether it is to be filed as processed."""
        bound = self.settings.max_message_bytes
        if item.size > bound:
            counted.reject(Rejected("message", "too_large", f"{item.size} bytes"))
            counted.message("rejected")
            return False
        raw = await mailbox.body(item.uid, bound + 1)
        if raw is None:  # gone since it was listed (another client moved it): not ours to count
            return False
        if len(raw) > bound:  # more than the server announced
            counted.reject(Rejected("message", "too_large", f"over {bound} bytes"))
            counted.message("rejected")
            return False
        contents = read_message(raw, self.settings.limits)
        refusals = list(contents.rejected)
        understood = False
        for report in contents.dmarc:
            refused = counted.dmarc(report)
            refusals += [refused] if refused else []
            understood |= refused is None
        for tls_report in contents.tlsrpt:
            refused = counted.tlsrpt(tls_report)
            refusals += [refused] if refused else []
            understood |= refused is None
        when = message_time(contents, item.arrived, time.time())
        for rule, status in matched(self._rules, contents):
            counted.notification(rule, status, when)
            understood = True
        for refusal in refusals:
            counted.reject(refusal)
            logger.info("reports mailbox: message UID %d: %s", item.uid, refusal)
        counted.message("processed" if understood else "rejected" if refusals else "ignored")
        return understood


@register_collector(
    "reports",
    "DMARC aggregate reports, TLS-RPT reports and notifications from an IMAP mailbox",
    ReportsConfig,
)
def _reports(section: ReportsConfig, previous: Collector | None) -> ReportsCollector:
    return ReportsCollector(
        section, previous=previous if isinstance(previous, ReportsCollector) else None
    )
