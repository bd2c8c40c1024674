"""Every metric name the probes export, and the one place results become metric families.

Scheduled probes and ``/probe`` share :class:`ProbeFamilies`; scheduled ones
carry ``target`` and ``module`` labels on top of ``protocol``.  Counters and the
latency histogram (:mod:`mail_exporter.latency`) of scheduled probes are kept in
plain structures by the scheduler and only rendered here, at scrape time. The round
trips' families are :mod:`mail_exporter.roundtrip.families`.

Sample output of one scheduled STARTTLS probe::

    mail_probe_success{target="mx1",module="smtp_starttls",protocol="smtp"} 1.0
    mail_probe_phase_duration_seconds{target="mx1",...,phase="tls_handshake"} 0.0041
    mail_tls_cert_expiry_timestamp_seconds{target="mx1",...} 1.7989e+09
    mail_tls_version_info{target="mx1",...,version="TLS 1.3"} 1.0
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from mail_exporter.probes.result import FailureReason, ProbeResult
from mail_exporter.tls_facts import tls_version_label

FAILURE_REASONS: tuple[str, ...] = tuple(reason.value for reason in FailureReason)


class ProbeFamilies:
    """Metric families for a set of probe results sharing one label schema."""

    def __init__(self, label_names: Sequence[str], keep_empty: bool = False) -> None:
        names = list(label_names)
        self._keep_empty = keep_empty
        self._families: list[Metric] = []

        def gauge(name: str, documentation: str, extra: Sequence[str] = ()) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, documentation, labels=[*names, *extra])
            self._families.append(family)
            return family

        self.success = gauge("mail_probe_success", "1 if the last probe passed every step.")
        self.duration = gauge("mail_probe_duration_seconds", "Wall time of the last probe.")
        self.phase = gauge(
            "mail_probe_phase_duration_seconds",
            "Time the last probe spent in each phase.",
            ["phase"],
        )
        self.failure_info = gauge(
            "mail_probe_failure_info",
            "Present with value 1 while the last probe failed: the phase it stopped in and why.",
            ["phase", "reason"],
        )
        self.last_success = gauge(
            "mail_probe_last_success_timestamp_seconds", "When a probe last passed every step."
        )
        self.starttls_offered = gauge(
            "mail_probe_starttls_offered",
            "1 if the server offered STARTTLS/STLS on the plaintext session.",
        )
        self.plaintext_auth = gauge(
            "mail_probe_plaintext_auth_offered",
            "1 if the server advertised login on an unencrypted channel.",
        )
        self.cert_expiry = gauge(
            "mail_tls_cert_expiry_timestamp_seconds",
            "Earliest NotAfter in the presented chain, exported even when verification fails.",
        )
        self.cert_not_before = gauge(
            "mail_tls_cert_not_before_timestamp_seconds", "NotBefore of the leaf certificate."
        )
        self.cert_verified = gauge(
            "mail_tls_cert_verified", "1 if the chain and host name verified."
        )
        self.tls_version = gauge(
            "mail_tls_version_info", "TLS version of the session.", ["version"]
        )
        self.tls_cipher = gauge("mail_tls_cipher_info", "Cipher suite of the session.", ["cipher"])
        self.failures = CounterMetricFamily(
            "mail_probe_failures", "Failed probes by reason.", labels=[*names, "reason"]
        )
        self._families.append(self.failures)

    def add(
        self,
        labels: Sequence[str],
        result: ProbeResult,
        failures: Mapping[str, float],
        last_success: float | None,
    ) -> None:
        """Add one target's latest result, its failure counts and its last success time."""
        values = list(labels)
        self.success.add_metric(values, 1.0 if result.success else 0.0)
        self.duration.add_metric(values, result.duration_seconds)
        for phase, seconds in result.phases.items():
            self.phase.add_metric([*values, phase.value], seconds)
        if result.failure is not None:
            failure = result.failure
            self.failure_info.add_metric([*values, failure.phase.value, failure.reason.value], 1.0)
        if last_success is not None:
            self.last_success.add_metric(values, last_success)
        if result.starttls_offered is not None:
            self.starttls_offered.add_metric(values, float(result.starttls_offered))
        if result.plaintext_auth_offered is not None:
            self.plaintext_auth.add_metric(values, float(result.plaintext_auth_offered))
        for reason in FAILURE_REASONS:
            self.failures.add_metric([*values, reason], failures.get(reason, 0.0))
        self._add_tls(values, result)

    def _add_tls(self, values: list[str], result: ProbeResult) -> None:
        facts = result.tls
        if facts is None:
            return
        if facts.earliest_not_after is not None:
            self.cert_expiry.add_metric(values, facts.earliest_not_after)
        if facts.leaf_not_before is not None:
            self.cert_not_before.add_metric(values, facts.leaf_not_before)
        self.cert_verified.add_metric(values, 1.0 if facts.verified else 0.0)
        self.tls_version.add_metric([*values, tls_version_label(facts.version)], 1.0)
        self.tls_cipher.add_metric([*values, facts.cipher], 1.0)

    def __iter__(self) -> Iterator[Metric]:
        return (family for family in self._families if family.samples or self._keep_empty)


def latency_family(label_names: Sequence[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        "mail_probe_latency_seconds", "Durations of all scheduled probes.", labels=list(label_names)
    )
