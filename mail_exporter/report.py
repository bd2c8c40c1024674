"""A probe result as text for people: the CLI's ``probe`` command and ``/probe?debug=true``."""

from __future__ import annotations

import time

from mail_exporter.probes.result import Phase, ProbeResult
from mail_exporter.probes.revocation import Revocation, verdict_text
from mail_exporter.tls_facts import tls_version_label


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "unknown"
    days = (timestamp - time.time()) / 86400
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))
    return f"{stamp} ({days:+.1f} days)"


def _yes_no(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "no")


def render_report(target: str, module_name: str, result: ProbeResult) -> str:
    lines = [f"Probe of {target} with module {module_name} ({result.protocol})", ""]
    lines.append("Phases:")
    for phase in Phase:
        if phase in result.phases:
            lines.append(f"  {phase.value:<14} {result.phases[phase] * 1000:9.1f} ms")
    lines.append(f"  {'total':<14} {result.duration_seconds * 1000:9.1f} ms")
    lines.append("")
    lines.append(f"Connected to:         {result.peer_address or 'nothing'}")
    lines.append(f"STARTTLS offered:     {_yes_no(result.starttls_offered)}")
    lines.append(f"Login before TLS:     {_yes_no(result.plaintext_auth_offered)}")
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
        ]
    if result.revocation is not None:
        lines += ["", "Revocation:", *_revocation_lines(result.revocation)]
    lines += ["", "Session log:", *(f"  {entry}" for entry in result.log), ""]
    if result.failure is None:
        lines.append("Verdict: SUCCESS")
    else:
        failure = result.failure
        lines.append(
            f"Verdict: FAILED in {failure.phase.value} ({failure.reason.value}): {failure.detail}"
        )
    return "\n".join(lines) + "\n"


def _revocation_lines(revocation: Revocation) -> list[str]:
    """One line per method with its reason, then what they say together."""
    lines = [
        f"  {answer.method.value:<20} {verdict_text(answer)} ({answer.seconds * 1000:.1f} ms)"
        for answer in revocation.answers
    ]
    verdict = {True: "REVOKED", False: "not revoked", None: "unknown: no method answered"}
    lines.append(f"  {'verdict':<20} {verdict[revocation.revoked]}")
    return lines
