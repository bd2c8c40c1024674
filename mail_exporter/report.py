"""A probe result as text for people: the CLI's ``probe`` command and ``/probe?debug=true``.

The chain is shown as the server presented it, one block per certificate (at most
:data:`~mail_exporter.tls_facts.CHAIN_LIMIT`, then how many more), each with its expiry in
days: an intermediate about to expire is found here before it breaks every client.
"""

from __future__ import annotations

import time

from mail_exporter.probes.findings import findings
from mail_exporter.probes.result import MailboxStats, ProbeResult
from mail_exporter.probes.revocation import Revocation, verdict_text
from mail_exporter.probes.smtp_posture import SMTPPosture
from mail_exporter.probes.tls_scan import TLSScan
from mail_exporter.tls_facts import CertificateIdentity, TLSFacts, tls_version_label


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "unknown"
    # Rounded first, then + 0.0: a moment just past reads +0.0, never -0.0.
    days = round((timestamp - time.time()) / 86400, 1) + 0.0
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))
    return f"{stamp} ({days:+.1f} days)"


def _yes_no(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "no")


def _verdict(value: bool | None) -> str:
    return "unknown (see the session log)" if value is None else ("yes" if value else "no")


def _posture_lines(posture: SMTPPosture | None) -> list[str]:
    """The verdicts of the SMTP security checks the module asked for."""
    if posture is None:
        return []
    lines = []
    if posture.relay is not None:
        name = "Relay after login:" if posture.relay.after_login else "Open relay:"
        lines.append(f"{name:<22}{_verdict(posture.relay.allowed)}")
    for verb, found in posture.enumeration.items():
        lines.append(f"{f'{verb} enumerates:':<22}{_verdict(found)}")
    return lines


def _certificate(position: int, certificate: CertificateIdentity) -> list[str]:
    bits = f" {certificate.key_bits} bits" if certificate.key_bits is not None else ""
    return [
        f"  {position:<2} {certificate.subject_cn or '(no common name)'}",
        f"     issuer            {certificate.issuer_cn or '(no common name)'}",
        f"     expires           {_when(certificate.not_after)}",
        f"     key               {certificate.key_type}{bits}",
        f"     signature         {certificate.signature_algorithm}",
        f"     serial            {certificate.serial}",
    ]


def _chain(facts: TLSFacts) -> list[str]:
    if facts.chain_length is None:
        return []
    lines = [
        "",
        f"Chain ({facts.chain_length} presented, leaf first; name covered: "
        f"{_yes_no(facts.name_covered)}):",
    ]
    for position, certificate in enumerate(facts.chain):
        lines += _certificate(position, certificate)
    if facts.chain_length > len(facts.chain):
        lines.append(f"  … {facts.chain_length - len(facts.chain)} more not shown")
    return lines


def render_report(target: str, module_name: str, result: ProbeResult) -> str:
    lines = [f"Probe of {target} with module {module_name} ({result.protocol})", ""]
    lines.append("Phases:")
    # In the order they happened (STARTTLS before its handshake), as the session recorded
    # them; a phase that came back (capabilities after STARTTLS) is summed at its first place.
    for phase, seconds in result.phases.items():
        lines.append(f"  {phase.value:<14} {seconds * 1000:9.1f} ms")
    lines.append(f"  {'total':<14} {result.duration_seconds * 1000:9.1f} ms")
    lines.append("")
    lines.append(f"Connected to:         {result.peer_address or 'nothing'}")
    lines.append(f"STARTTLS offered:     {_yes_no(result.starttls_offered)}")
    lines.append(f"Login before TLS:     {_yes_no(result.plaintext_auth_offered)}")
    lines.append(f"Logged in with:       {result.auth_mechanism or 'no login'}")
    lines += _posture_lines(result.smtp_posture)
    facts = result.tls
    if facts is not None:
        lines += [
            "",
            "TLS:",
            f"  version              {tls_version_label(facts.version)}",
            f"  cipher               {facts.cipher}",
            f"  certificate          {facts.leaf_subject or 'unknown'}",
            f"  issuer               {facts.leaf_issuer or 'unknown'}",
            f"  not before           {_when(facts.leaf_not_before)}",
            f"  earliest expiry      {_when(facts.earliest_not_after)}",
            f"  verified             {'yes' if facts.verified else f'no: {facts.verify_error}'}",
            *_chain(facts),
        ]
    if result.mailboxes:
        lines += ["", "Mailboxes:", *_mailbox_lines(result.mailboxes)]
    if result.revocation is not None:
        lines += ["", "Revocation:", *_revocation_lines(result.revocation)]
    if result.tls_scan is not None:
        lines += ["", "TLS scan:", *_scan_lines(result.tls_scan)]
    found = findings(result, time.time())
    if found or _checked_posture(result):
        lines += ["", "Security findings:"]
        lines += [f"  {f.severity:<9} {f.text}" for f in found] or ["  none by what was checked"]
    lines += ["", "Session log:", *(f"  {entry}" for entry in result.log), ""]
    if result.failure is None:
        lines.append("Verdict: SUCCESS")
    else:
        failure = result.failure
        lines.append(
            f"Verdict: FAILED in {failure.phase.value} ({failure.reason.value}): {failure.detail}"
        )
    return "\n".join(lines) + "\n"


def _scan_lines(scan: TLSScan) -> list[str]:
    """Each version and weak cipher class tried, and how the scan went."""
    lines = [f"  {version:<20} {_accepted(yes)}" for version, yes in scan.versions.items()]
    lines += [f"  {name:<20} {_accepted(yes)}" for name, yes in scan.weak_ciphers.items()]
    started = _when(scan.started)
    status = "complete" if scan.failure is None else f"stopped: {scan.failure}"
    lines.append(f"  {'scanned':<20} {started}, {scan.duration_seconds * 1000:.0f} ms, {status}")
    return lines


def _accepted(yes: bool) -> str:
    return "accepted" if yes else "refused"


def _checked_posture(result: ProbeResult) -> bool:
    """Whether the module ran a check beyond the probe's own (a scan, revocation, SMTP)."""
    checks = (result.tls_scan, result.revocation, result.smtp_posture)
    return any(check is not None for check in checks)


def _revocation_lines(revocation: Revocation) -> list[str]:
    """One line per method with its reason, then what they say together."""
    lines = [
        f"  {answer.method.value:<20} {verdict_text(answer)} ({answer.seconds * 1000:.1f} ms)"
        for answer in revocation.answers
    ]
    verdict = {True: "REVOKED", False: "not revoked", None: "unknown: no method answered"}
    lines.append(f"  {'verdict':<20} {verdict[revocation.revoked]}")
    return lines


def _known(value: float | None, unit: str = "") -> str:
    return "unknown" if value is None else f"{value:.0f}{unit}"


def quota_percent(stats: MailboxStats, resource: str) -> float | None:
    """How full a mailbox's quota is for ``resource`` in percent; None when not known."""
    figures = stats.quota.get(resource)
    return None if figures is None else 100 * figures[0] / figures[1]


def _mailbox_lines(mailboxes: list[MailboxStats]) -> list[str]:
    """Each mailbox the server answered for: counts, quota, first and last arrival."""
    lines = []
    for box in mailboxes:
        kind = f" ({box.kind})" if box.kind else ""
        lines.append(f"  {box.name}{kind}")
        lines.append(
            f"     messages          {_known(box.messages)}, unseen {_known(box.unseen)}, "
            f"size {_known(box.size_bytes, ' bytes')}"
        )
        for resource, (used, limit) in box.quota.items():
            percent = quota_percent(box, resource)
            lines.append(f"     quota {resource}: {used} of {limit} ({percent:.1f} %)")
        lines.append(f"     oldest            {_when(box.oldest)}")
        lines.append(f"     newest            {_when(box.newest)}")
        if box.newest_max_age is not None:
            lines.append(f"     newest expected   within {box.newest_max_age:.0f} s")
    return lines
