"""Every metric the probes export, declared once, and their families.

Scheduled probes and ``/probe`` share :func:`probe_families`; scheduled ones carry
``target`` and ``module`` labels on top of ``protocol``. Counters and the latency
histogram (:mod:`mail_exporter.latency`) of scheduled probes are kept in plain
structures by the scheduler and only rendered from these declarations (when a result
arrives: see :mod:`.scheduler`). The round trips' families are
:mod:`mail_exporter.roundtrip.families`.

Sample output of one scheduled STARTTLS probe::

    mail_probe_success{target="mx1",module="smtp_starttls",protocol="smtp"} 1.0
    mail_probe_phase_duration_seconds{target="mx1",...,phase="tls_handshake"} 0.0041
    mail_tls_cert_expiry_timestamp_seconds{target="mx1",...} 1.7989e+09
    mail_tls_version_info{target="mx1",...,version="TLS 1.3"} 1.0
    mail_tls_cert_info{target="mx1",...,subject_cn="mx1.example.com",issuer_cn="R11",
        serial="4b1f...",sha256_fingerprint="9c0e...",key_type="rsa",
        signature_algorithm="sha256WithRSAEncryption"} 1.0
    mail_tls_chain_cert_expiry_timestamp_seconds{target="mx1",...,position="1",
        subject_cn="R11"} 1.7578e+09

The certificate families take their label values from :class:`~.tls_facts.CertificateIdentity`,
already printable and bounded; the leaf's info is one series per target, the chain's at
most :data:`~.tls_facts.CHAIN_LIMIT`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache

from mail_exporter.exposition import spec_text
from mail_exporter.metric_spec import Family, MetricSpec, Reading, Row, as_is, attribute
from mail_exporter.probes.result import FailureReason, ProbeResult
from mail_exporter.probes.tls_scan import TLSScan
from mail_exporter.tls_facts import CertificateIdentity, TLSFacts, tls_version_label

FAILURE_REASONS: tuple[str, ...] = tuple(reason.value for reason in FailureReason)


def _tls(read: Callable[[TLSFacts], float | bool | None]) -> Callable[[ProbeResult], Reading]:
    """Reads a TLS fact of a result; none without a TLS session."""
    return lambda result: None if result.tls is None else read(result.tls)


def _relay(after_login: bool) -> Callable[[ProbeResult], Reading]:
    """Reads the relay check's verdict of a result, if the check was of this kind."""

    def read(result: ProbeResult) -> Reading:
        relay = None if result.smtp_posture is None else result.smtp_posture.relay
        return None if relay is None or relay.after_login != after_login else relay.allowed

    return read


def _leaf(read: Callable[[CertificateIdentity], float | None]) -> Callable[[ProbeResult], Reading]:
    """Reads a fact of a result's leaf certificate; none without one."""

    def reading(result: ProbeResult) -> Reading:
        leaf = result.tls.leaf if result.tls else None
        return None if leaf is None else read(leaf)

    return reading


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
AUTH_MECHANISM = MetricSpec(
    "mail_probe_auth_mechanism_info", "1, naming how the last probe logged in: plain, login, "
    "user (POP3 USER/PASS), xoauth2 or oauthbearer; absent when it did not.", "gauge",
    ("mechanism",), as_is,
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
# Certificate identity and the presented chain.
CERT_INFO = MetricSpec(
    "mail_tls_cert_info", "1, naming the leaf certificate the server presented.", "gauge",
    ("subject_cn", "issuer_cn", "serial", "sha256_fingerprint", "key_type", "signature_algorithm"),
    as_is,
)  # fmt: skip
# Named as mail_dns_dkim_key_size: "_bits" and "_count" are what promtool's lint refuses
# (bits are no base unit; _count is a histogram's).
CERT_KEY_SIZE = MetricSpec(
    "mail_tls_cert_key_size", "Size of the leaf certificate's public key in bits.", "gauge", (),
    _leaf(lambda leaf: leaf.key_bits),
)  # fmt: skip
CERT_SAN_ENTRIES = MetricSpec(
    "mail_tls_cert_san_entries", "Entries in the leaf certificate's subjectAltName.", "gauge", (),
    _leaf(lambda leaf: leaf.san_count),
)  # fmt: skip
CERT_NAME_COVERED = MetricSpec(
    "mail_tls_cert_name_covered", "1 if the leaf certificate's subjectAltName covers the probed "
    "name.", "gauge", (), _tls(lambda facts: facts.name_covered),
)  # fmt: skip
CHAIN_CERT_EXPIRY = MetricSpec(
    "mail_tls_chain_cert_expiry_timestamp_seconds", "NotAfter of each presented certificate, "
    "position 0 the leaf.", "gauge", ("position", "subject_cn"), as_is,
)  # fmt: skip
CHAIN_LENGTH = MetricSpec(
    "mail_tls_chain_length", "Certificates the server presented.", "gauge", (),
    _tls(lambda facts: facts.chain_length),
)  # fmt: skip
FAILURES = MetricSpec(
    "mail_probe_failures_total", "Failed probes by reason.", "counter", ("reason",), as_is,
)  # fmt: skip
# SMTP security checks (probes/smtp_posture.py): only for a module that asks for them, and
# only with an answer. Each relay verdict comes from the check of its kind.
OPEN_RELAY = MetricSpec(
    "mail_smtp_open_relay", "1 if the server accepted a recipient outside its domains without "
    "a login (RCPT TO answered 2xx), 0 if it refused.", "gauge", (),
    _relay(after_login=False),
)  # fmt: skip
AUTH_RELAY_ALLOWED = MetricSpec(
    "mail_smtp_auth_relay_allowed", "1 if the server accepted a recipient outside its domains "
    "after the module's login, 0 if it refused.", "gauge", (), _relay(after_login=True),
)  # fmt: skip
USER_ENUMERATION = MetricSpec(
    "mail_smtp_user_enumeration", "1 if the command told the configured address from an unknown "
    "user (2xx for it, another answer for the unknown one).", "gauge", ("command",), as_is,
)  # fmt: skip
# Revocation of the leaf (``revocation:`` on the module): see mail_exporter.probes.revocation.
CERT_REVOKED = MetricSpec(
    "mail_tls_cert_revoked", "1 if a revocation check (CRL, OCSP, staple) says the leaf "
    "certificate is revoked, 0 if those that answered say it is not; absent when none "
    "answered.", "gauge", (),
    lambda result: None if result.revocation is None else result.revocation.revoked,
)  # fmt: skip
REVOCATION_CHECK_SUCCESS = MetricSpec(
    "mail_tls_revocation_check_success", "1 if the revocation check by this method got a valid "
    "answer (revoked or not), 0 if it could not tell.", "gauge", ("method",), as_is,
)  # fmt: skip
OCSP_STAPLED = MetricSpec(
    "mail_tls_ocsp_stapled", "1 if the server stapled an OCSP response to a TLS 1.2 handshake "
    "asking for one, 0 if it stapled none.", "gauge", (),
    lambda result: None if result.revocation is None else result.revocation.stapled,
)  # fmt: skip

# The configured mailboxes of an IMAP module (imap.mailboxes, probes/imap_mailboxes.py): one
# row per mailbox the server answered for, a value absent where the server cannot say.
# Labels: the configured name (at most MAX_MAILBOXES per module) and its kind ("" if unset).
MAILBOX_LABELS = ("mailbox", "kind")
MAILBOX_MESSAGES = MetricSpec(
    "mail_mailbox_messages", "Messages in the mailbox (STATUS MESSAGES).", "gauge",
    MAILBOX_LABELS, attribute("messages"),
)  # fmt: skip
MAILBOX_UNSEEN = MetricSpec(
    "mail_mailbox_unseen_messages", "Messages not yet seen (STATUS UNSEEN).", "gauge",
    MAILBOX_LABELS, attribute("unseen"),
)  # fmt: skip
MAILBOX_SIZE = MetricSpec(
    "mail_mailbox_size_bytes", "Size of the mailbox (STATUS SIZE); absent without STATUS=SIZE.",
    "gauge", MAILBOX_LABELS, attribute("size_bytes"),
)  # fmt: skip
MAILBOX_OLDEST = MetricSpec(
    "mail_mailbox_oldest_message_timestamp_seconds", "INTERNALDATE of the mailbox's first "
    "message by UID; absent when it is empty.", "gauge", MAILBOX_LABELS, attribute("oldest"),
)  # fmt: skip
MAILBOX_NEWEST = MetricSpec(
    "mail_mailbox_newest_message_timestamp_seconds", "INTERNALDATE of the mailbox's last "
    "message by UID (its latest arrival); absent when it is empty.", "gauge", MAILBOX_LABELS,
    attribute("newest"),
)  # fmt: skip
MAILBOX_NEWEST_MAX_AGE = MetricSpec(
    "mail_mailbox_newest_max_age_seconds", "The configured newest_max_age: how recent the "
    "mailbox's newest message should be.", "gauge", MAILBOX_LABELS, attribute("newest_max_age"),
)  # fmt: skip
MAILBOX_QUOTA_USAGE = MetricSpec(
    "mail_mailbox_quota_usage", "Quota used by the mailbox's quota root (GETQUOTAROOT), in the "
    "resource's unit: storage_bytes in bytes, messages in messages.", "gauge",
    (*MAILBOX_LABELS, "resource"), as_is,
)  # fmt: skip
MAILBOX_QUOTA_LIMIT = MetricSpec(
    "mail_mailbox_quota_limit", "Quota limit of the mailbox's quota root, in the resource's "
    "unit: storage_bytes in bytes, messages in messages.", "gauge",
    (*MAILBOX_LABELS, "resource"), as_is,
)  # fmt: skip
MAILBOX_METRICS = (
    MAILBOX_MESSAGES,
    MAILBOX_UNSEEN,
    MAILBOX_SIZE,
    MAILBOX_OLDEST,
    MAILBOX_NEWEST,
    MAILBOX_NEWEST_MAX_AGE,
)


# The TLS scan (a module's tls_scan): the latest one kept, which a probe may have reused.
def _scan(read: Callable[[TLSScan], float | bool]) -> Callable[[ProbeResult], Reading]:
    """Reads a fact of a result's TLS scan; none without one."""
    return lambda result: None if result.tls_scan is None else read(result.tls_scan)


TLS_VERSION_ACCEPTED = MetricSpec(
    "mail_tls_version_accepted", "1 if the server completed a handshake pinned to this TLS "
    "version in the last TLS scan, 0 if it refused one.", "gauge", ("version",), as_is,
)  # fmt: skip
TLS_WEAK_CIPHER_ACCEPTED = MetricSpec(
    "mail_tls_weak_cipher_accepted", "1 if the server completed a handshake offering only this "
    "class of weak cipher suites in the last TLS scan, 0 if it refused one.", "gauge", ("class",),
    as_is,
)  # fmt: skip
TLS_SCAN_SUCCESS = MetricSpec(
    "mail_tls_scan_success", "1 if every handshake of the last TLS scan was answered, accepted or "
    "refused.", "gauge", (), _scan(lambda scan: scan.success),
)  # fmt: skip
TLS_SCAN_TIMESTAMP = MetricSpec(
    "mail_tls_scan_timestamp_seconds", "When the last TLS scan began.", "gauge", (),
    _scan(lambda scan: scan.started),
)  # fmt: skip
TLS_SCAN_DURATION = MetricSpec(
    "mail_tls_scan_duration_seconds", "Wall time of the last TLS scan.", "gauge", (),
    _scan(lambda scan: scan.duration_seconds),
)  # fmt: skip
TLS_SCAN_METRICS = (
    TLS_VERSION_ACCEPTED,
    TLS_WEAK_CIPHER_ACCEPTED,
    TLS_SCAN_SUCCESS,
    TLS_SCAN_TIMESTAMP,
    TLS_SCAN_DURATION,
)

PROBE_METRICS = (
    SUCCESS,
    DURATION,
    PHASE_DURATION,
    FAILURE_INFO,
    LAST_SUCCESS,
    STARTTLS_OFFERED,
    PLAINTEXT_AUTH_OFFERED,
    AUTH_MECHANISM,
    CERT_EXPIRY,
    CERT_NOT_BEFORE,
    CERT_VERIFIED,
    TLS_VERSION,
    TLS_CIPHER,
    CERT_INFO,
    CERT_KEY_SIZE,
    CERT_SAN_ENTRIES,
    CERT_NAME_COVERED,
    CHAIN_CERT_EXPIRY,
    CHAIN_LENGTH,
    FAILURES,
    OPEN_RELAY,
    AUTH_RELAY_ALLOWED,
    USER_ENUMERATION,
    CERT_REVOKED,
    REVOCATION_CHECK_SUCCESS,
    OCSP_STAPLED,
    *TLS_SCAN_METRICS,
    *MAILBOX_METRICS,
    MAILBOX_QUOTA_USAGE,
    MAILBOX_QUOTA_LIMIT,
)


def probe_families(
    names: tuple[str, ...],
    labels: Sequence[str],
    result: ProbeResult,
    failures: Mapping[str, float],
    last_success: float | None,
    zero_failures: bool = True,
) -> list[Family]:
    """Every probe family (those without samples too) of one target's latest result, its
    failure counts (every reason, or with ``zero_failures`` false only those counted) and
    its last success time, under the label names ``names``."""
    rows, one = _probe_rows(labels, result, failures, last_success, zero_failures)
    return [spec.family(rows.get(spec.name, one)) for spec in _probe_metrics(names)]


def probe_text(
    names: tuple[str, ...],
    labels: Sequence[str],
    result: ProbeResult,
    failures: Mapping[str, float],
    last_success: float | None,
) -> str:
    """The families of :func:`probe_families` that have samples, as
    ``prometheus_client.generate_latest`` writes them (/probe's answer), written straight
    from the rows (:func:`~.exposition.spec_text`)."""
    rows, one = _probe_rows(labels, result, failures, last_success, zero_failures=True)
    return "".join(spec_text(spec, rows.get(spec.name, one)) for spec in _probe_metrics(names))


def _probe_rows(
    labels: Sequence[str],
    result: ProbeResult,
    failures: Mapping[str, float],
    last_success: float | None,
    zero_failures: bool,
) -> tuple[dict[str, Iterable[Row]], list[Row]]:
    """The rows of each probe family, by name, and the rows of the others (the target's
    one row, the result)."""
    target = tuple(labels)
    tls, failure, posture = result.tls, result.failure, result.smtp_posture
    chain = tls.chain if tls else ()
    one: list[Row] = [(target, result)]
    rows: dict[str, Iterable[Row]] = {  # by name: a spec's hash costs more than the rest
        PHASE_DURATION.name: [((*target, p.value), s) for p, s in result.phases.items()],
        FAILURE_INFO.name: (
            [((*target, failure.phase.value, failure.reason.value), 1.0)] if failure else []
        ),
        LAST_SUCCESS.name: [(target, last_success)],
        AUTH_MECHANISM.name: (
            [((*target, result.auth_mechanism), 1.0)] if result.auth_mechanism else []
        ),
        TLS_VERSION.name: [((*target, tls_version_label(tls.version)), 1.0)] if tls else [],
        TLS_CIPHER.name: [((*target, tls.cipher), 1.0)] if tls else [],
        CERT_INFO.name: [((*target, *_info_labels(chain[0])), 1.0)] if chain else [],
        CHAIN_CERT_EXPIRY.name: [
            ((*target, str(position), c.subject_cn), c.not_after)
            for position, c in enumerate(chain)
        ],
        FAILURES.name: [
            ((*target, reason), failures.get(reason, 0.0))
            for reason in FAILURE_REASONS
            if zero_failures or reason in failures
        ],
        USER_ENUMERATION.name: (
            [((*target, verb), found) for verb, found in posture.enumeration.items()]
            if posture is not None
            else []
        ),
        REVOCATION_CHECK_SUCCESS.name: [
            ((*target, answer.method.value), answer.revoked is not None)
            for answer in (result.revocation.answers if result.revocation else ())
        ],
    }
    scan = result.tls_scan
    rows[TLS_VERSION_ACCEPTED.name] = (
        [((*target, v), ok) for v, ok in scan.versions.items()] if scan else []
    )
    rows[TLS_WEAK_CIPHER_ACCEPTED.name] = (
        [((*target, c), ok) for c, ok in scan.weak_ciphers.items()] if scan else []
    )
    boxes = [((*target, box.name, box.kind or ""), box) for box in result.mailboxes]
    for spec in MAILBOX_METRICS:
        rows[spec.name] = boxes
    for spec, which in ((MAILBOX_QUOTA_USAGE, 0), (MAILBOX_QUOTA_LIMIT, 1)):
        rows[spec.name] = [
            ((*labels, resource), figures[which])
            for labels, box in boxes
            for resource, figures in box.quota.items()
        ]
    return rows, one


def _info_labels(leaf: CertificateIdentity) -> tuple[str, ...]:
    return (
        leaf.subject_cn,
        leaf.issuer_cn,
        leaf.serial,
        leaf.sha256_fingerprint,
        leaf.key_type,
        leaf.signature_algorithm,
    )


@cache
def _probe_metrics(names: tuple[str, ...]) -> tuple[MetricSpec, ...]:
    """PROBE_METRICS with the label names of one schema (scheduled, or /probe) first."""
    return tuple(spec.after(names) for spec in PROBE_METRICS)
