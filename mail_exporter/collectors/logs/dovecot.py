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

A login session ends in one of these wordings, each a disconnect with its reason
(and N auth failures when it says ``auth failed, N attempts``):

* 2.3: ``Disconnected: Connection closed (auth failed, 1 attempts in 2 secs): user=<...>``,
  ``Aborted login (...)``, and the submission-login's ``Client has quit the connection
  (...)`` and ``Remote closed connection (...)``;
* 2.4: ``Login aborted: Connection closed (auth failed, 3 attempts in 16 secs)
  (auth_failed): user=<...>``. The code in the last parentheses names the reason where
  :data:`LOGIN_ABORTED_CODES` knows it (``tls_handshake_not_finished`` is ``tls_error``,
  where 2.3 said only ``no auth attempts``); any other code is read as 2.3's text is.

What the passdbs say about a failed login counts apart, in
``mail_auth_passdb_failures_total{passdb, result}``: the login process's count above
already has every failure, and each passdb consulted logs its own line (two passdbs,
two lines), so adding them up would count a failure more than once. Only the auth
processes' lines count (``auth``, ``auth-worker``), in every wording seen:
``pam(user,ip,<session>): pam_authenticate() failed: ...`` (2.3, behind ``conn
unix:auth-worker (pid=N,uid=N): auth-worker<N>: `` in a worker), ``sql: Password
mismatch`` (2.4, where the word is the passdb's configured name, behind ``request [N]: ``
in a worker), and PAM's own ``pam_unix(dovecot:auth): authentication failure; ...``,
which PAM sends to syslog under the auth process's name (``auth``, ``dovecot-auth``) or
Dovecot's. ``passdb`` is the driver when the line names one of :data:`PASSDB_DRIVERS`
(``pam_unix`` for PAM's own line), else ``other``; ``result`` one of
:data:`PASSDB_RESULTS`' labels.
"""

from __future__ import annotations

from mail_exporter.collectors.logs.counters import LogCounters
from mail_exporter.collectors.logs.labels import OTHER
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
    ("quit the connection", "connection_closed"), ("Remote closed", "connection_closed"),
)  # fmt: skip
"""(substring of the reason, label): the first match wins."""
LOGIN_ABORTED_CODES = {
    "auth_failed": "auth_failed", "no_auth_attempts": "no_auth_attempts",
    "auth_process_not_ready": "auth_not_ready", "auth_aborted_by_client": "auth_aborted",
    "auth_waiting_client": "auth_aborted", "tls_handshake_not_finished": "tls_error",
    "process_full": "connection_limit", "shutting_down": "shutdown",
}  # fmt: skip
"""Dovecot 2.4's reason codes (``Login aborted: ... (auth_failed)``) → the reason label."""
SESSION_ENDS = ("Disconnected", "Aborted login", "Disconnect from", "Login aborted",
                "Client has quit the connection", "Remote closed connection")  # fmt: skip
AUTH_SERVICES = frozenset(("auth", "auth-worker"))
PASSDB_DRIVERS = frozenset(("passwd-file", "pam", "sql", "ldap", "passwd", "shadow",
                            "checkpassword", "static", "lua", "oauth2", "bsdauth", "imap",
                            "pam_unix"))  # fmt: skip
PASSDB_RESULTS = (
    ("assword mismatch", "password_mismatch"), ("nknown user", "unknown_user"),
    ("User not known", "unknown_user"), ("Permission denied", "denied"),
    ("authentication failure", "failed"), ("Authentication failure", "failed"),
)  # fmt: skip
"""(substring of a passdb line, result): the first match wins; a line with none is not a
failure (the passdb said something else) and counts nothing."""
WORKER_PREFIXES = ("conn unix:auth-worker", "request [")
"""What an auth worker puts before the passdb's words: 2.3 its connection, 2.4 the request."""
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
    if reason.endswith(")"):  # 2.4: "... (auth failed, 1 attempts in 2 secs) (auth_failed)"
        code = LOGIN_ABORTED_CODES.get(reason[reason.rfind("(") + 1 : -1])
        if code is not None:
            return code
    for needle, label in DISCONNECT_REASONS:
        if needle in reason:
            return label
    return "other"


def after_worker_prefix(text: str) -> str:
    """An auth worker's message without what it puts in front (see :data:`WORKER_PREFIXES`)."""
    if text.startswith(WORKER_PREFIXES[0]):  # conn unix:auth-worker (pid=..): auth-worker<1>:
        start = text.find(": ", text.find("): ") + 3)
    elif text.startswith(WORKER_PREFIXES[1]):  # request [12]:
        start = text.find(": ")
    else:
        return text
    return text[start + 2 :] if start >= 0 else text


def passdb_failure(text: str) -> tuple[str, str] | None:
    """``pam(user,ip,<s>): pam_authenticate() failed: ...`` → (passdb, result); ``None``
    for a line that is no passdb's failure."""
    head, colon, reason = text.partition(": ")
    if not colon:
        return None
    for needle, result in PASSDB_RESULTS:
        if needle in reason:
            driver = head[: head.find("(")] if "(" in head else head
            return (driver if driver in PASSDB_DRIVERS else OTHER), result
    return None


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

    def auth_syslog(self, service: str, text: str) -> bool:
        """What PAM sends to syslog itself, tagged with the auth process's name (``auth``)."""
        return self.line("auth", text)

    def line(self, process: str, text: str) -> bool:
        """One message of ``process``, with or without a level (``Info: ``) in front."""
        service = self.c.services(service_of(process))
        if service in AUTH_SERVICES:
            text = after_worker_prefix(text)
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
            if service == "submission":
                self.submission_login(text)
            return True
        if text.startswith(SESSION_ENDS):
            if "auth failed, " in text:
                c.auth_failures[(MTA, service)] += failed_attempts(text)
            c.disconnects[(MTA, service, disconnect_reason(text))] += 1
            return True
        if service in AUTH_SERVICES or text.startswith("pam_unix("):
            return self.auth_process(text)
        if "saved mail to " in text or "stored mail into mailbox" in text:
            c.deliveries[(MTA, service, "sent")] += 1
            return True
        return text.startswith(NOISE) or "msgid=" in text or "starting up" in text

    def submission_login(self, text: str) -> None:
        """``Login: user=<alice>, method=PLAIN, rip=192.0.2.1, lip=...``: the account's
        client address (:mod:`.senders`); its messages count where the MTA takes them."""
        start = text.find("user=<")
        end = text.find(">, ", start)
        rip = text.find(", rip=", end)
        if start < 0 or end < 0 or rip < 0:
            return
        rip_end = text.find(",", rip + 6)
        address = text[rip + 6 : rip_end if rip_end >= 0 else len(text)]
        self.c.account_addresses.add(text[start + 6 : end], address)

    def auth_process(self, text: str) -> bool:
        """An auth process's line: a passdb's failure is counted, anything else is noise."""
        failure = passdb_failure(after_worker_prefix(text))
        if failure is not None:
            self.c.passdb_failures[(MTA, *failure)] += 1
        return True
