"""Security findings of a probe result: what the status page's badges and the report say."""

from __future__ import annotations

import time
from pathlib import Path

from mail_exporter.exporter import Exporter
from mail_exporter.probes.findings import Finding, findings
from mail_exporter.probes.result import ProbeResult
from mail_exporter.probes.revocation import MethodAnswer, Revocation, RevocationMethod
from mail_exporter.probes.smtp_posture import RelayFinding, SMTPPosture
from mail_exporter.probes.tls_scan import TLSScan
from mail_exporter.scheduler import TargetState
from mail_exporter.status_page import render_status_page
from mail_exporter.tls_facts import CertificateIdentity, TLSFacts

NOW = 1_800_000_000.0
DAY = 86400.0


def certificate(name: str, days_left: float, now: float = NOW) -> CertificateIdentity:
    return CertificateIdentity(
        subject_cn=name, issuer_cn="root", serial="1", sha256_fingerprint="00",
        key_type="ec", key_bits=256, signature_algorithm="ecdsa-with-SHA256", san_count=1,
        not_after=now + days_left * DAY,
    )  # fmt: skip


def tls(chain: tuple[CertificateIdentity, ...], covered: bool | None = True) -> TLSFacts:
    return TLSFacts(
        version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256", earliest_not_after=None,
        leaf_not_before=None, leaf_not_after=None, leaf_subject="", leaf_issuer="",
        verified=True, verify_error=None, chain=chain, chain_length=len(chain),
        name_covered=covered,
    )  # fmt: skip


def test_findings_name_what_is_wrong_critical_first() -> None:
    result = ProbeResult(
        protocol="smtp",
        plaintext_auth_offered=True,
        revocation=Revocation((MethodAnswer(RevocationMethod.OCSP, True, "revoked", 0.01),)),
        tls_scan=TLSScan(
            started=NOW,
            duration_seconds=0.01,
            failure=None,
            notes=(),
            versions={"TLS 1.3": True, "TLS 1.2": True, "TLS 1.1": False, "TLS 1.0": True},
            weak_ciphers={"rsa_key_exchange": True, "cbc_sha1": True},
        ),  # fmt: skip
        smtp_posture=SMTPPosture(RelayFinding(False, True), {"VRFY": True, "EXPN": False}),
        tls=tls(
            (
                certificate("mx.example", 2),
                certificate("intermediate <R3>", 3),
                certificate("root", -1),
            ),
            covered=False,
        ),  # fmt: skip
    )
    assert findings(result, NOW) == [
        Finding("critical", "certificate revoked"),
        Finding("critical", "open relay"),
        Finding("warning", "VRFY tells users apart"),
        Finding("warning", "accepts TLS 1.0"),
        Finding("warning", "accepts weak ciphers: rsa_key_exchange, cbc_sha1"),
        Finding("warning", "login offered before TLS"),
        Finding("warning", "name not in certificate"),
        Finding("warning", "chain: intermediate <R3> expires in 3 d"),
        Finding("warning", "chain: root expired"),
    ]


def test_what_is_expected_or_unknown_is_no_finding() -> None:
    """Relaying after a login is submission's job; an unanswered check is no verdict; a
    leaf close to expiry has its own alert and column."""
    result = ProbeResult(
        protocol="smtp",
        plaintext_auth_offered=False,
        smtp_posture=SMTPPosture(RelayFinding(True, True), {"VRFY": None, "EXPN": None}),
        tls=tls((certificate("mx.example", 2), certificate("intermediate", 90)), covered=None),
    )
    assert findings(result, NOW) == []
    unanswered = ProbeResult(protocol="smtp", smtp_posture=SMTPPosture(RelayFinding(False)))
    assert findings(unanswered, NOW) == []


def test_status_page_shows_findings_as_badges(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        "modules:\n  mx: {protocol: smtp}\n"
        "targets:\n  - {name: mx1, address: 'localhost:25', module: mx}\n"
    )
    exporter, now = Exporter(config, {}), time.time()
    try:
        target = exporter.config.targets[0]
        state = TargetState(target, exporter.config.modules[target.module])
        exporter.scheduler.states = {target.name: state}  # as if scheduled, without probing
        state.record(
            ProbeResult(
                protocol="smtp",
                success=True,
                smtp_posture=SMTPPosture(RelayFinding(False, True), {"VRFY": True}),
                tls=tls((certificate("mx", 50, now), certificate("<b>R3</b>", 1, now))),
            )
        )
        page = render_status_page(exporter, [])
    finally:
        exporter.stop()
    row = next(line for line in page.splitlines() if "<td>mx1</td>" in line)
    badges = (
        '<td><span class="badge down">open relay</span>'
        '<span class="badge warn">VRFY tells users apart</span>'
        '<span class="badge warn">chain: &lt;b&gt;R3&lt;/b&gt; expires in '
    )
    assert badges in row, row
    assert "<th>security findings</th>" in page
