"""The security findings of one probe result, worst first, in words: the status page's
posture badges and the summary of ``mail-exporter probe``.

A finding is something an auditor would write down about the server: its certificate is
revoked, it relays for strangers, it accepts TLS 1.0 or 1.1 or a weak cipher class, it
tells which users exist, it offers a login before TLS, a certificate of its chain is about
to expire or its name is not in the certificate. Each has a severity (``critical`` for a
revoked certificate and for what lets strangers abuse the server, ``warning`` for the
rest), the same as its alert's. What a check could not tell is no finding: a check without an answer
shows in the session log, never as "all clear" or as a fault. Only the checks a module
runs can find anything, so an empty list means "nothing found by what was checked".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from mail_exporter.probes.result import ProbeResult

OLD_TLS_VERSIONS: Final = ("TLS 1.0", "TLS 1.1")
"""Versions a scan may find accepted that are a finding (RFC 8996 deprecates both)."""
CHAIN_WARNING_DAYS: Final = 20.0
"""A certificate of the chain closer to expiry than this is a finding (the status page's
threshold for the leaf's days left too)."""


@dataclass(frozen=True)
class Finding:
    severity: Literal["critical", "warning"]
    text: str


def findings(result: ProbeResult, now: float) -> list[Finding]:
    """What ``result`` shows is wrong with the server's security, critical first."""
    critical: list[str] = []
    warning: list[str] = []
    if result.revocation is not None and result.revocation.revoked:
        critical.append("certificate revoked")
    posture = result.smtp_posture
    if posture is not None:
        relay = posture.relay  # relaying after a login is what submission is for
        if relay is not None and relay.allowed and not relay.after_login:
            critical.append("open relay")
        warning += [f"{verb} tells users apart" for verb, found in posture.enumeration.items()
                    if found]  # fmt: skip
    scan = result.tls_scan
    if scan is not None:
        old = [version for version in OLD_TLS_VERSIONS if scan.versions.get(version)]
        weak = [name for name, accepted in scan.weak_ciphers.items() if accepted]
        warning += [f"accepts {version}" for version in old]
        warning += [f"accepts weak ciphers: {', '.join(weak)}"] if weak else []
    if result.plaintext_auth_offered:
        warning.append("login offered before TLS")
    facts = result.tls
    if facts is not None:
        if facts.name_covered is False:
            warning.append("name not in certificate")
        for position, certificate in enumerate(facts.chain):
            days = (certificate.not_after - now) / 86400
            if position and days < CHAIN_WARNING_DAYS:
                name = certificate.subject_cn or f"certificate {position}"
                state = f"expires in {days:.0f} d" if days >= 0 else "expired"
                warning.append(f"chain: {name} {state}")
    return [Finding("critical", text) for text in critical] + [
        Finding("warning", text) for text in warning
    ]
