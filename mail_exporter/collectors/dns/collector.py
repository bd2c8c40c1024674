"""The ``dns`` collector: every DNS check on the section's ``interval``, scrapes get the cache.

As :mod:`~mail_exporter.collectors.background` runs work on an interval: the first
scrape runs the checks and waits for them (bounded by the section's ``timeout``); later
passes start in the collector's own thread at the first scrape after the interval, and
every scrape returns the last finished pass at once. So blocklists, which ban heavy
users, see one query per IP and zone per interval however often Prometheus scrapes.
A pass's metric families are built once, when it ends: for 10,000 domains (185,000
series) building them took about 1 s, which every scrape paid. They are written out
once too, in the text format and compressed (:class:`~mail_exporter.exposition.RenderedFamily`,
0.5 s for 10,000 domains, in the pass's thread), so that a scrape joins bytes instead
of formatting every sample again.
Each pass runs on its own event loop in that thread, with at most ``max_in_flight``
queries out at once (through ``resolver`` and ``blocklist_resolver`` together).

A collector rebuilt by a reload runs its checks afresh (its section changed) but goes
on with its predecessor's error counters, so that they never move backwards.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

from prometheus_client.core import Metric

from mail_exporter.collectors.background import IntervalWork, Runner
from mail_exporter.collectors.base import CollectorError
from mail_exporter.collectors.dns import mtasts
from mail_exporter.collectors.dns.checks import Results, run_checks
from mail_exporter.collectors.dns.config import DnsConfig
from mail_exporter.collectors.dns.families import error_families, result_families
from mail_exporter.exposition import RenderedFamily

logger = logging.getLogger(__name__)


class DnsCollector:
    def __init__(
        self,
        settings: DnsConfig,
        clock: Callable[[], float] = time.monotonic,
        background: Runner | None = None,
        mta_sts_url: Callable[[str], str] = mtasts.policy_url,
        previous: DnsCollector | None = None,
    ) -> None:
        self.settings = settings
        self.mta_sts_url = mta_sts_url
        self._passes = IntervalWork(
            "dns", float(settings.interval), self._refresh, clock, background
        )
        self._results: Results | None = None
        self._families: list[Metric] = []  # of _results, built once per pass
        self._failure: str | None = None
        self._lock = threading.Lock()
        self.check_errors: Counter[tuple[str, str]] = Counter()
        self.blocklist_errors: Counter[tuple[str, str]] = Counter()
        if previous is not None:  # error counters go on; those of zones no longer listed end
            zones = {*settings.ip_blocklists, *settings.domain_blocklists}
            with previous._lock:
                self.check_errors.update(previous.check_errors)
                self.blocklist_errors.update(
                    {key: n for key, n in previous.blocklist_errors.items() if key[0] in zones}
                )

    def collect(self) -> Iterable[Metric]:
        self._passes.tick()
        with self._lock:
            results, families, failure = self._results, self._families, self._failure
            errors = error_families(
                self.check_errors,
                self.blocklist_errors,
                [*self.settings.ip_blocklists, *self.settings.domain_blocklists],
            )
        if results is None:
            raise CollectorError(failure or "no DNS checks have finished yet")
        return [*families, *errors]

    def close(self) -> None:
        self._passes.close()

    def _refresh(self) -> None:
        try:
            results = asyncio.run(run_checks(self.settings, self.mta_sts_url))
        except Exception as error:  # in a background thread nobody else would see it
            logger.exception("DNS checks failed")
            with self._lock:
                self._failure = f"DNS checks failed: {error!r}"
            return
        families: list[Metric] = [RenderedFamily(family) for family in result_families(results)]
        with self._lock:
            self._results, self._families, self._failure = results, families, None
            self.check_errors.update(results.check_errors())
            self.blocklist_errors.update(results.blocklist_errors())
