"""Dovecot log lines: logins by protocol and mechanism, failed logins, disconnect reasons.

Two shapes reach :meth:`DovecotParser.line`: from syslog or the journal the program is
``dovecot`` and the text starts with the process (``imap-login: Login: ...``); in
Dovecot's own ``log_path`` the process stands where syslog puts the program
(``Nov 28 01:51:16 imap-login: Info: Login: ...``). Either way the process names the
``service`` label: ``imap-login`` and ``imap(user)<pid><session>`` are both ``imap``.

Failed logins are counted from the login processes' ``auth failed, N attempts`` (N of
them): that is where IMAP/POP3/submission/managesieve brute force shows. The auth
process's own ``Password mismatch`` lines (auth_verbose) repeat those failures, and
Postfix logs the failures of SASL it asked Dovecot about itself, so neither counts
again here. LMTP/LDA ``saved mail to`` / ``stored mail into`` lines count as deliveries
(transport ``lmtp`` or ``lda``, status ``sent``).
"""

from __future__ import annotations

from mail_exporter.collectors.logs.counters import LogCounters
from mail_exporter.decimal_text import ascii_int

MTA = "dovecot"
LEVELS = {"Info": None, "Debug": None, "Warning": "warning", "Error": "error",
          "Fatal": "fatal", "Panic": "panic"}  # fmt: skip
DISCONNECT_REASONS = (
    ("auth failed", "auth_failed"), ("no auth attempts", "no_auth_attempts"),
    ("before auth was ready", "auth_not_ready"), ("plaintext auth", "plaintext_auth_disallowed"),
    ("didn't finish SASL", "auth_aborted"), ("auth aborted", "auth_aborted"),
    ("Logged out", "logged_out"), ("nactivity", "inactivity"), ("shutting down", "shutdown"),
    ("Maximum number of", "connection_limit"), ("Too many", "too_many_errors"),
    ("TLS", "tls_error"), ("SSL", "tls_error"), ("Connection closed", "connection_closed"),
)  # fmt: skip
"""(substring of the reason, label): the first match wins."""
NOISE = ("Connect from", "Dovecot v", "Received SIGHUP", "Killed with signal",
         "Shutting down logging", "msgid=", "Debug:", "auth-worker", "Preparing to",
         "passwd-file(", "pam(", "sql(", "ldap(", "passwd(", "shadow(", "checkpassword(",
         "static(", "Logged out")  # fmt: skip


def service_of(process: str) -> str:
    """``imap-login`` → ``imap``; ``lmtp(user)<1><s>`` → ``lmtp``; ``auth`` stays."""
    end = len(process)
    for mark in "(<":
        found = process.find(mark)
        if 0 <= found < end:
            end = found
    return process[:end].removesuffix("-login")


def disconnect_reason(text: str) -> str:
    reason = text.split(": user=", 1)[0].split(" in=", 1)[0]
    for needle, label in DISCONNECT_REASONS:
        if needle in reason:
            return label
    return "other"


def failed_attempts(text: str) -> int:
    """N of ``(auth failed, N attempts in S secs)``; at least 1."""
    start = text.find("auth failed, ") + 13
    digits = text[start : text.find(" ", start)]
    return ascii_int(digits) or 1


class DovecotParser:
    def __init__(self, counters: LogCounters) -> None:
        self.c = counters

    def syslog(self, service: str, text: str) -> bool:
        """From syslog or the journal: ``imap-login: Login: ...`` (``service`` is unused)."""
        process, colon, rest = text.partition(": ")
        return bool(colon) and self.line(process, rest)

    def line(self, process: str, text: str) -> bool:
        """One message of ``process``, with or without a level (``Info: ``) in front."""
        service = self.c.services(service_of(process))
        level, colon, rest = text.partition(": ")
        if colon and level in LEVELS:
            severity = LEVELS[level]
            if severity is not None:
                self.c.problems[(MTA, service, severity)] += 1
                return True
            text = rest
        return self.message(service, text)

    def message(self, service: str, text: str) -> bool:
        c = self.c
        if text.startswith("Login: "):
            start = text.find(", method=") + 9
            mechanism = text[start : text.find(",", start)] if start >= 9 else "unknown"
            c.logins[(MTA, service, c.mechanisms(mechanism))] += 1
            return True
        if text.startswith(("Disconnected", "Aborted login", "Disconnect from")):
            if "auth failed, " in text:
                c.auth_failures[(MTA, service)] += failed_attempts(text)
            c.disconnects[(MTA, service, disconnect_reason(text))] += 1
            return True
        if "saved mail to " in text or "stored mail into mailbox" in text:
            c.deliveries[(MTA, service, "sent")] += 1
            return True
        return text.startswith(NOISE) or "msgid=" in text or "starting up" in text
