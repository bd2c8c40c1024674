"""Every metric the probes and round trips export, declared once, and their families.

Scheduled probes and ``/probe`` share :func:`probe_families`; scheduled ones carry
``target`` and ``module`` labels on top of ``protocol``. Counters and the latency
histogram of scheduled probes are kept in plain structures by the scheduler and only
rendered from these declarations (when a result arrives: see :mod:`.scheduler`).

Sample output of one scheduled STARTTLS probe::

    mail_probe_success{target="mx1",module="smtp_starttls",protocol="smtp"} 1.0
    mail_probe_phase_duration_seconds{target="mx1",...,phase="tls_handshake"} 0.0041
    mail_tls_cert_expiry_timestamp_seconds{target="mx1",...} 1.7989e+09
    mail_tls_version_info{target="mx1",...,version="TLS 1.3"} 1.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING

from mail_exporter.metric_spec import Family, MetricSpec, Reading, Row, as_is
from mail_exporter.probes.result import FailureReason, ProbeResult, TLSFacts

if TYPE_CHECKING:
    from mail_exporter.roundtrip.outcome import RouteStats

LATENCY_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
FAILURE_REASONS: tuple[str, ...] = tuple(reason.value for reason in FailureReason)


def tls_version_label(version: str) -> str:
    """``TLSv1.3`` as ``TLS 1.3``, the form blackbox_exporter users already query for."""
    return version.replace("TLSv", "TLS ") if version.startswith("TLSv") else version


def _tls(read: Callable[[TLSFacts], float | bool | None]) -> Callable[[ProbeResult], Reading]:
    """Reads a TLS fact of a result; none without a TLS session."""
    return lambda result: None if result.tls is None else read(result.tls)


# Their labels follow the probe's own: target, module, protocol when scheduled; protocol
# for /probe. Those of one value per probe read it from the ProbeResult.
SUCCESS = MetricSpec(
    "mail_probe_success", "1 if the last probe passed every step.", "gauge", (),
    lambda result: result.success,
)  # fmt: skip
DURATION = MetricSpec(
    "mail_probe_duration_seconds", "Wall time of the last probe.", "gauge", (),
    lambda result: result.duration_seconds,
)  # fmt: skip
PHASE_DURATION = MetricSpec(
    "mail_probe_phase_duration_seconds", "Time the last probe spent in each phase.", "gauge",
    ("phase",), as_is,
)  # fmt: skip
FAILURE_INFO = MetricSpec(
    "mail_probe_failure_info", "Present with value 1 while the last probe failed: the phase it "
    "stopped in and why.", "gauge", ("phase", "reason"), as_is,
)  # fmt: skip
LAST_SUCCESS = MetricSpec(
    "mail_probe_last_success_timestamp_seconds", "When a probe last passed every step.", "gauge",
    (), as_is,
)  # fmt: skip
STARTTLS_OFFERED = MetricSpec(
    "mail_probe_starttls_offered", "1 if the server offered STARTTLS/STLS on the plaintext "
    "session.", "gauge", (), lambda result: result.starttls_offered,
)  # fmt: skip
PLAINTEXT_AUTH_OFFERED = MetricSpec(
    "mail_probe_plaintext_auth_offered", "1 if the server advertised login on an unencrypted "
    "channel.", "gauge", (), lambda result: result.plaintext_auth_offered,
)  # fmt: skip
CERT_EXPIRY = MetricSpec(
    "mail_tls_cert_expiry_timestamp_seconds", "Earliest NotAfter in the presented chain, exported "
    "even when verification fails.", "gauge", (), _tls(lambda facts: facts.earliest_not_after),
)  # fmt: skip
CERT_NOT_BEFORE = MetricSpec(
    "mail_tls_cert_not_before_timestamp_seconds", "NotBefore of the leaf certificate.", "gauge",
    (), _tls(lambda facts: facts.leaf_not_before),
)  # fmt: skip
CERT_VERIFIED = MetricSpec(
    "mail_tls_cert_verified", "1 if the chain and host name verified.", "gauge", (),
    _tls(lambda facts: facts.verified),
)  # fmt: skip
TLS_VERSION = MetricSpec(
    "mail_tls_version_info", "TLS version of the session.", "gauge", ("version",), as_is,
)  # fmt: skip
TLS_CIPHER = MetricSpec(
    "mail_tls_cipher_info", "Cipher suite of the session.", "gauge", ("cipher",), as_is,
)  # fmt: skip
FAILURES = MetricSpec(
    "mail_probe_failures_total", "Failed probes by reason.", "counter", ("reason",), as_is,
)  # fmt: skip
PROBE_METRICS = (
    SUCCESS,
    DURATION,
    PHASE_DURATION,
    FAILURE_INFO,
    LAST_SUCCESS,
    STARTTLS_OFFERED,
    PLAINTEXT_AUTH_OFFERED,
    CERT_EXPIRY,
    CERT_NOT_BEFORE,
    CERT_VERIFIED,
    TLS_VERSION,
    TLS_CIPHER,
    FAILURES,
)


def probe_families(
    names: tuple[str, ...],
    labels: Sequence[str],
    result: ProbeResult,
    failures: Mapping[str, float],
    last_success: float | None,
) -> list[Family]:
    """Every probe family (those without samples too) of one target's latest result, its
    failure counts and its last success time, under the label names ``names``."""
    target = tuple(labels)
    tls, failure = result.tls, result.failure
    one: list[Row] = [(target, result)]
    rows: dict[str, Iterable[Row]] = {  # by name: a spec's hash costs more than the rest
        PHASE_DURATION.name: [((*target, p.value), s) for p, s in result.phases.items()],
        FAILURE_INFO.name: (
            [((*target, failure.phase.value, failure.reason.value), 1.0)] if failure else []
        ),
        LAST_SUCCESS.name: [(target, last_success)],
        TLS_VERSION.name: [((*target, tls_version_label(tls.version)), 1.0)] if tls else [],
        TLS_CIPHER.name: [((*target, tls.cipher), 1.0)] if tls else [],
        FAILURES.name: [
            ((*target, reason), failures.get(reason, 0.0)) for reason in FAILURE_REASONS
        ],
    }
    return [spec.family(rows.get(spec.name, one)) for spec in _probe_metrics(names)]


@cache
def _probe_metrics(names: tuple[str, ...]) -> tuple[MetricSpec, ...]:
    """PROBE_METRICS with the label names of one schema (scheduled, or /probe) first."""
    return tuple(spec.after(names) for spec in PROBE_METRICS)


class LatencyHistogram:
    """Cumulative histogram of one series' durations, kept as plain numbers."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        # Scrapes read from a worker thread: the count goes up first and the bucket
        # list is replaced whole, so a reader never sees a non-cumulative histogram.
        self.count += 1
        self.total += seconds
        self.counts = [
            n + (seconds <= bound) for n, bound in zip(self.counts, self.bounds, strict=True)
        ]

    def buckets(self) -> list[tuple[str, float]]:
        counts, count = self.counts, self.count
        pairs = [(repr(bound), float(n)) for bound, n in zip(self.bounds, counts, strict=True)]
        return [*pairs, ("+Inf", float(max(count, counts[-1])))]


LATENCY = MetricSpec(
    "mail_probe_latency_seconds", "Durations of all scheduled probes.", "histogram", (),
    lambda histogram: (histogram.buckets(), histogram.total),
)  # fmt: skip


# Round trip -------------------------------------------------------------------------------

ROUNDTRIP_BUCKETS: tuple[float, ...] = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
"""From sub-second loopback deliveries to the hour after which admins call mail lost."""


ROUNDTRIP_FAILURES = MetricSpec(
    "mail_roundtrip_failures_total", "Failed round trips by stage: send, send_auth, receive, "
    "receive_auth, timeout, cleanup.", "counter", ("route", "stage"), as_is,
)  # fmt: skip
ROUNDTRIP_HOPS = MetricSpec(
    "mail_roundtrip_hop_delay_seconds", "Delay each hop added, from the Received headers of the "
    "last message seen in time (hop 1 is the first server; hops past 5 add to hop 5).", "gauge",
    ("route", "hop"), as_is,
)  # fmt: skip
ROUNDTRIP_METRICS = (
    MetricSpec("mail_roundtrip_success", "1 if the last round trip's message was seen in the "
        "mailbox in time.", "gauge", ("route",), lambda stats: stats.success),
    MetricSpec("mail_roundtrip_duration_seconds", "Start of sending to the message seen in the "
        "mailbox, last success.", "gauge", ("route",), lambda stats: stats.duration),
    MetricSpec("mail_roundtrip_delivery_seconds", "Start of sending to the message seen, for "
        "every message seen in time.", "histogram", ("route",),
        lambda stats: (stats.delivery.buckets(), stats.delivery.total)),
    MetricSpec("mail_roundtrip_last_success_timestamp_seconds", "When a round trip last succeeded.",
        "gauge", ("route",), lambda stats: stats.last_success),
    ROUNDTRIP_FAILURES,
    MetricSpec("mail_roundtrip_late_arrivals_total", "Messages seen after their route's timeout "
        "(each counted once, not lost again).", "counter", ("route",), lambda stats: stats.late),
    MetricSpec("mail_roundtrip_junk_total", "Messages seen in time in the junk mailbox instead of "
        "the mailbox.", "counter", ("route",), lambda stats: stats.junk),
    ROUNDTRIP_HOPS,
)  # fmt: skip
"""Those of one value per route read it from the route's RouteStats."""


def roundtrip_families(routes: Mapping[str, RouteStats]) -> list[Family]:
    """The families of the routes' running totals; values not known yet are left out, never
    reported as 0.

    Sample output of a route whose last attempt passed::

        mail_roundtrip_success{route="local-loop"} 1.0
        mail_roundtrip_duration_seconds{route="local-loop"} 0.052
        mail_roundtrip_failures_total{route="local-loop",stage="timeout"} 0.0
        mail_roundtrip_hop_delay_seconds{route="local-loop",hop="1"} 0.0
    """
    rows: dict[MetricSpec, list[Row]] = {
        ROUNDTRIP_FAILURES: [
            ((route, stage), count)
            for route, stats in routes.items()
            for stage, count in stats.failures.items()
        ],
        ROUNDTRIP_HOPS: [
            ((route, hop), seconds)
            for route, stats in routes.items()
            for hop, seconds in stats.hops.items()
        ],
    }
    by_route: list[Row] = [((route,), stats) for route, stats in routes.items()]
    built = [spec.family(rows.get(spec, by_route)) for spec in ROUNDTRIP_METRICS]
    return [family for family in built if family.samples]
