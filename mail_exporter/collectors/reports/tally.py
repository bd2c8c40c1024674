"""The reports collector's counters, and how a pass's reports become label values.

A pass counts into a :class:`PassTally` of its own, which the collector merges into the
:class:`Tally` only once the pass has read everything it took: a pass that fails
half-way (login, a lost connection, its time limit) counts nothing, and the next one
reads the same messages again. The Tally lives as long as the exporter: a collector
rebuilt by a reload is handed its predecessor's, so counters never go back.

Label values are bounded whatever a report says:

- ``domain``: the configured domain the report's domain is or is under (the longest
  such one); a report of none is refused as ``unknown_domain``.
- ``reporter``: the organisation name, lowercased, for the first ``max_reporters``
  names that fit (printable, at most 128 characters), ``other`` after
  (:class:`~mail_exporter.collectors.logs.labels.LabelGuard`).
- ``source``: the sending address, normalised; per domain, the ``top_sources`` biggest
  senders of unaligned mail are admitted, by their volume in the pass that first saw
  them (ties by address), and keep their series; any other, and a source that is no IP
  address, is ``other``.
- ``disposition``, ``policy_type`` and TLS-RPT ``result``: fixed sets, ``other`` beyond.

A report counts once by (kind, reporter, report id), across passes and restarts
(:mod:`.state`): one seen again is a duplicate.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from mail_exporter.collectors.logs.labels import OTHER, LabelGuard
from mail_exporter.collectors.reports.config import UNKNOWN_STATUS, ReportsConfig
from mail_exporter.collectors.reports.dmarc import DmarcReport
from mail_exporter.collectors.reports.rejection import Rejected
from mail_exporter.collectors.reports.state import ReportsState, report_key
from mail_exporter.collectors.reports.tlsrpt import TlsRptReport

DISPOSITIONS = frozenset({"none", "quarantine", "reject"})
POLICY_TYPES = frozenset({"sts", "tlsa", "no-policy-found"})
RESULT_TYPES = frozenset(
    {
        "starttls-not-supported",
        "certificate-host-mismatch",
        "certificate-expired",
        "certificate-not-trusted",
        "validation-failure",
        "tlsa-invalid",
        "dnssec-invalid",
        "dane-required",
        "sts-policy-fetch-error",
        "sts-policy-invalid",
        "sts-webpki-invalid",
    }
)
MESSAGE_RESULTS = ("processed", "rejected", "ignored")


def _one_of(value: str, known: frozenset[str]) -> str:
    return value if value in known else OTHER


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _source(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def configured_domain(domain: str, domains: Iterable[str]) -> str | None:
    """The configured domain ``domain`` is or is under (the longest), else None."""
    matches = [d for d in domains if domain == d or domain.endswith("." + d)]
    return max(matches, key=len) if matches else None


@dataclass
class Counters:
    """Every counter of the collector, by its label values (in the families' order)."""

    dmarc_messages: Counter[tuple[str, str, str, str, str]] = field(default_factory=Counter)
    unaligned: Counter[tuple[str, str]] = field(default_factory=Counter)
    dmarc_reports: Counter[tuple[str, str]] = field(default_factory=Counter)
    tlsrpt_sessions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    tlsrpt_reports: Counter[tuple[str, str]] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    notifications: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, other: Counters) -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).update(getattr(other, name))


class Tally:
    """The counters, the label guards and the lock a pass holds (a reloaded collector's
    pass waits for its predecessor's to end; both count here)."""

    def __init__(self, settings: ReportsConfig) -> None:
        self.counters = Counters()
        self.last_notified: dict[tuple[str, str], float] = {}
        self.pass_lock = threading.Lock()
        self._lock = threading.Lock()
        self.configure(settings)

    def configure(self, settings: ReportsConfig) -> None:
        """Take up a (reloaded) section's bounds; names that have series keep them as
        far as the new bounds allow."""
        with self._lock:
            self.settings = settings
            self.reporters = LabelGuard(settings.max_reporters)
            self.sources: dict[str, set[str]] = {}
            for _, reporter in self.counters.dmarc_reports:
                self.reporters(reporter)
            for _, reporter in self.counters.tlsrpt_reports:
                self.reporters(reporter)
            for domain, source in self.counters.unaligned:
                admitted = self.sources.setdefault(domain, set())
                if source != OTHER and len(admitted) < settings.top_sources:
                    admitted.add(source)

    def snapshot(self) -> tuple[Counters, dict[tuple[str, str], float]]:
        """Copies to render from, while passes go on: the counters, and the newest
        message time of each configured rule and status."""
        with self._lock:
            copy = Counters()
            copy.add(self.counters)
            return copy, dict(self.last_notified)

    def begin(self, state: ReportsState) -> PassTally:
        return PassTally(self, state)

    def commit(self, counted: PassTally) -> None:
        with self._lock:
            sources = counted.admit_sources(self.sources, self.settings.top_sources)
            for (domain, source), count in counted.unaligned_by_source.items():
                key = (domain, source if source in sources.get(domain, ()) else OTHER)
                counted.counters.unaligned[key] += count
            self.counters.add(counted.counters)
            rules = {rule.name: rule for rule in self.settings.notifications}
            self.last_notified = {
                (name, status): timestamp
                for (name, status), timestamp in counted.state.notifications.items()
                if name in rules and (status in rules[name].statuses or status == UNKNOWN_STATUS)
            }

    def reporter(self, name: str) -> str:
        with self._lock:
            return self.reporters(name.strip().lower())


class PassTally:
    """What one pass counted, and the state it changed, until it is committed."""

    def __init__(self, tally: Tally, state: ReportsState) -> None:
        self.tally = tally
        self.settings = tally.settings
        self.state = state
        self.counters = Counters()
        self.unaligned_by_source: Counter[tuple[str, str]] = Counter()

    def _first_time(self, kind: str, reporter: str, report_id: str) -> bool:
        key = report_key(kind, reporter, report_id)
        if self.state.seen(key):
            self.counters.duplicates[kind] += 1
            return False
        self.state.remember(key)
        return True

    def reject(self, rejected: Rejected) -> None:
        self.counters.rejected[rejected.kind, rejected.reason] += 1

    def dmarc(self, report: DmarcReport) -> Rejected | None:
        """Count ``report``; the refusal when its domain is not configured."""
        domain = configured_domain(report.domain, self.settings.domains)
        if domain is None:
            return Rejected("dmarc", "unknown_domain", f"domain {report.domain!r}")
        if not self._first_time("dmarc", report.reporter, report.report_id):
            return None
        reporter = self.tally.reporter(report.reporter)
        self.counters.dmarc_reports[domain, reporter] += 1
        for record in report.records:
            disposition = _one_of(record.disposition, DISPOSITIONS)
            key = (domain, reporter, disposition)
            dkim, spf = _bool(record.dkim_aligned), _bool(record.spf_aligned)
            self.counters.dmarc_messages[(*key, dkim, spf)] += record.count
            if not (record.dkim_aligned or record.spf_aligned) and record.count:
                source = _source(record.source_ip) or OTHER
                self.unaligned_by_source[domain, source] += record.count
        return None

    def tlsrpt(self, report: TlsRptReport) -> Rejected | None:
        """Count the policies of configured domains in ``report``; the refusal when it has
        none."""
        policies = [
            (domain, policy)
            for policy in report.policies
            if (domain := configured_domain(policy.policy_domain, self.settings.domains))
        ]
        if not policies:
            names = sorted({policy.policy_domain for policy in report.policies})[:3]
            return Rejected("tlsrpt", "unknown_domain", f"policy domains {names}")
        if not self._first_time("tlsrpt", report.reporter, report.report_id):
            return None
        reporter = self.tally.reporter(report.reporter)
        sessions = self.counters.tlsrpt_sessions
        for domain in {domain for domain, _ in policies}:
            self.counters.tlsrpt_reports[domain, reporter] += 1
        for domain, policy in policies:
            policy_type = _one_of(policy.policy_type, POLICY_TYPES)
            sessions[domain, policy_type, "success"] += policy.successful
            detailed = 0
            for result, count in policy.failures:
                sessions[domain, policy_type, _one_of(result, RESULT_TYPES)] += count
                detailed += count
            if policy.failed > detailed:
                sessions[domain, policy_type, OTHER] += policy.failed - detailed
        return None

    def notification(self, rule: str, status: str, timestamp: float) -> None:
        self.counters.notifications[rule, status] += 1
        last = self.state.notifications.get((rule, status))
        if last is None or timestamp > last:
            self.state.notifications[rule, status] = timestamp

    def message(self, result: str) -> None:
        self.counters.messages[result] += 1

    def admit_sources(self, admitted: dict[str, set[str]], limit: int) -> dict[str, set[str]]:
        """Admit, per domain, the pass's biggest new unaligned sources while there is room
        (changes ``admitted``, which it returns)."""
        by_domain: dict[str, list[tuple[int, str]]] = {}
        for (domain, source), count in self.unaligned_by_source.items():
            if source != OTHER and source not in admitted.get(domain, ()):
                by_domain.setdefault(domain, []).append((-count, source))
        for domain, candidates in by_domain.items():
            known = admitted.setdefault(domain, set())
            for _, source in sorted(candidates)[: max(0, limit - len(known))]:
                known.add(source)
        return admitted
