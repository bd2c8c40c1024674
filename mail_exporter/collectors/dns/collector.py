"""The ``dns`` collector: every DNS check on the section's ``interval``, scrapes get the cache.

Like the ``smart`` collector: the first scrape runs the checks and waits for them
(bounded by the section's ``timeout``); later passes start in the collector's own
thread at the first scrape after the interval, and every scrape returns the last
finished pass at once. So blocklists, which ban heavy users, see one query per IP and
zone per interval however often Prometheus scrapes. Each pass runs on its own event
loop in that thread, with at most ``max_in_flight`` queries out at once (through
``resolver`` and ``blocklist_resolver`` together).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.core import Metric

from mail_exporter.collectors import CollectorError
from mail_exporter.collectors.dns import mtasts
from mail_exporter.collectors.dns.checks import Results, run_checks
from mail_exporter.collectors.dns.families import error_families, result_families
from mail_exporter.config.collectors import DnsConfig

logger = logging.getLogger(__name__)

Runner = Callable[[Callable[[], None]], object]


class DnsCollector:
    def __init__(
        self,
        settings: DnsConfig,
        clock: Callable[[], float] = time.monotonic,
        background: Runner | None = None,
        mta_sts_url: Callable[[str], str] = mtasts.policy_url,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.mta_sts_url = mta_sts_url
        self._thread: ThreadPoolExecutor | None = None
        if background is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="dns")
            background = self._thread.submit
        self.background = background
        self._due = float("-inf")
        self._results: Results | None = None
        self._failure: str | None = None
        self._lock = threading.Lock()
        self.check_errors: Counter[tuple[str, str]] = Counter()
        self.blocklist_errors: Counter[tuple[str, str]] = Counter()

    def collect(self) -> Iterable[Metric]:
        if self._results is None and self._failure is None:
            self._due = self.clock() + float(self.settings.interval)
            self._refresh()
        elif self.clock() >= self._due:
            self._due = self.clock() + float(self.settings.interval)
            self.background(self._refresh)
        with self._lock:
            results, failure = self._results, self._failure
            errors = error_families(
                self.check_errors,
                self.blocklist_errors,
                [*self.settings.ip_blocklists, *self.settings.domain_blocklists],
            )
        if results is None:
            raise CollectorError(failure or "no DNS checks have finished yet")
        return [*result_families(results), *errors]

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=False, cancel_futures=True)

    def _refresh(self) -> None:
        try:
            results = asyncio.run(run_checks(self.settings, self.mta_sts_url))
        except Exception as error:  # in a background thread nobody else would see it
            logger.exception("DNS checks failed")
            with self._lock:
                self._failure = f"DNS checks failed: {error!r}"
            return
        with self._lock:
            self._results, self._failure = results, None
            self.check_errors.update(results.check_errors())
            self.blocklist_errors.update(results.blocklist_errors())
