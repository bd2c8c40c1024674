"""Exim main and reject log lines: arrivals, deliveries, deferrals, failures, rejects, frozen.

Lines come from Exim's own log files (``format: exim``: ``2024-01-12 10:00:00 ...``,
with or without the ``+millisec``, ``+tz`` and ``+pid`` selectors) or from syslog
(``log_file_path = syslog``: program ``exim``/``exim4``), where Exim keeps its own
timestamp at the start of the message unless ``syslog_timestamp = false``: it is cut
off there too. Message IDs of both forms (``1rOHxx-000abc-Ab`` and the longer one of
Exim 4.97 and later) are recognised. Through syslog Exim sends a reject to both of its
logs, main and reject, as two identical lines (``syslog_duplication = false`` stops
that); nothing in the line tells them apart, so such a reject counts twice.

Exim writes each reject to the main log *and* the reject log; the reject log adds
only the header dumps (recognised and ignored). Follow one of the two for rejects,
normally the main log, which has everything else too. ``service`` is ``smtp`` for
Exim's SMTP input; ``transport`` is the ``T=`` field (``none`` when routing failed).

TLS goes into ``mail_tls_connections_total`` beside Postfix's, the direction told by
the label as there: ``service="smtp"`` for what came in, the transport for what went
out. Exim logs no line for a handshake, only ``X=`` (``TLS1.3:TLS_AES_256_GCM_SHA384:256``;
older OpenSSL builds write ``TLSv1.2:...``, GnuTLS ``TLS1.0`` for TLS 1.0) on the lines
of what the session carried, so:

* inbound counts each ``<=`` with ``X=`` (a session that delivered two messages counts
  twice; one that delivered none, not at all). ``CV=yes`` is a verified client
  certificate, ``trusted`` as Postfix's smtpd calls it. Exim logs ``CV=`` only for a
  client that sent a certificate, but older releases wrote ``CV=no`` for every client,
  so ``CV=no`` counts as ``untrusted`` only beside a ``DN=`` (``log_selector =
  +tls_peerdn``), otherwise as ``anonymous``, like no ``CV=`` at all;
* outbound counts one session per delivery attempt that negotiated TLS, from the
  ``=>`` and ``**`` lines with ``X=`` (a refusal after STARTTLS is a session too).
  The lines of one attempt are the same session: ``->`` lines, deliveries over a
  connection already open (``*`` after the host), and every ``=>``/``**`` line of the
  same message with the same host and ``X=``/``CV=`` fields as the one counted, which
  Exim writes in address order (a ``**`` may come before the ``=>``). So the parser
  remembers, per message, the session it counted last (at most
  :data:`SESSIONS_REMEMBERED` messages, the oldest forgotten first); ``Completed``
  forgets the message, and so does ``==``, since a deferred message is tried again
  later over a new session to the same host. Exim 4.96 writes no ``X=`` on ``==``
  lines, so an attempt that was only deferred is not counted; one whose ``**`` lines
  come both before and after a ``==`` counts twice. ``CV=yes`` and ``CV=dane`` are
  ``verified``, ``CV=no`` is ``untrusted`` (a server always shows a certificate), no
  ``CV=`` (the selector turned off) ``unknown``.

The version label is Postfix's for the same protocol (``TLS 1.3``, ``TLS 1`` for TLS
1.0; :data:`~.labels.TLS_VERSIONS`), any other name ``other``. Arrivals without ``X=``
are not counted as plaintext: Postfix's side counts no such thing either.

``mail_messages_submitted_total`` counts each ``<=`` by its protocol ``P=`` as the
``service`` (``local`` from the command line as Postfix's pickup, ``esmtp``, ``esmtps``
with TLS, ``esmtpa``/``esmtpsa`` authenticated, ``local-esmtp`` for ``-bs``, or what
``received_protocol`` sets; bounded like every service), ``other`` without ``P=``.
A ``<=`` with ``R=`` is a bounce Exim made itself and is not a submission, as
Postfix's bounce daemon queues its notices without smtpd or pickup.

A ``==`` or ``**`` line that quotes the remote server (``SMTP error from remote mail
server after RCPT TO:<...>: 550 5.1.1 ...``) is a refusal, classified by
:mod:`.replies`. Each ``<=`` gives its ``S=`` to ``mail_message_size_bytes`` and, with
``log_selector = +received_recipients``, the length of its ``for`` list to
``mail_message_recipients`` (without it Exim logs no recipient count on that line).
"""

from __future__ import annotations

import re

from mail_exporter.collectors.logs.counters import LogCounters
from mail_exporter.collectors.logs.labels import OTHER, tls_version
from mail_exporter.collectors.logs.rejects import reject_reason, stage
from mail_exporter.collectors.logs.replies import ReplyReasons
from mail_exporter.collectors.logs.senders import MESSAGES, RECIPIENTS

MTA = "exim"
SERVICE = "smtp"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?: [-+]\d{4})?(?: \[\d+\])? ")
MESSAGE_ID = re.compile(r"[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4} ")
FLAGS = {"=>": "sent", "->": "sent", "==": "deferred", "**": "bounced"}
REJECT_STAGES = {"RCPT": "RCPT", "MAIL": "MAIL", "after": "DATA", "EHLO": "EHLO",
                 "HELO": "HELO", "connection": "CONNECT", "VRFY": "VRFY",
                 "AUTH": "AUTH"}  # fmt: skip
NOISE = ("*>", "SMTP error from", "Unfrozen", "Message is frozen", "removed by",
         "cancelled by", "Spool file", "no immediate delivery", "Start queue run",
         "End queue run", "exim ", "daemon", "no host name found", "no IP address found",
         "Envelope-from:", "Envelope-to:", "sender verify", "H=", "Warning:", "SMTP call",
         "SMTP protocol", "SMTP command timeout", "SMTP syntax error", "TLS error",
         "unexpected disconnection", "ident connection", "Connection from", "SIGHUP",
         "recipient verify", "no MAIL in SMTP connection")  # fmt: skip
TLS_VERSIONS = {
    name: tls_version(openssl)
    for openssl, names in (
        ("TLSv1.3", ("TLS1.3", "TLSv1.3")), ("TLSv1.2", ("TLS1.2", "TLSv1.2")),
        ("TLSv1.1", ("TLS1.1", "TLSv1.1")), ("TLSv1", ("TLS1", "TLS1.0", "TLSv1")),
        ("SSLv3", ("SSL3", "SSL3.0", "SSLv3")),
    )
    for name in names
}  # fmt: skip
"""Exim's protocol names (GnuTLS's, OpenSSL's without the ``v``, older builds' OpenSSL
ones) → the label of OpenSSL's name, which Postfix logs, so both MTAs share the values."""
REMOTE_ERROR = "SMTP error from remote mail server after "
INBOUND_TRUST = {"yes": "trusted", "no": "untrusted"}
OUTBOUND_TRUST = {"yes": "verified", "dane": "verified", "no": "untrusted"}
SESSIONS_REMEMBERED = 4096
"""Messages whose last outbound TLS session is remembered: more than a server delivers
at once, so only a message whose lines are that far apart can count a session twice."""


def address_domain(address: str) -> str:
    at = address.rfind("@")
    return address[at + 1 :].rstrip(">,:").lower() if at >= 0 else "none"


def field(text: str, name: str) -> str | None:
    """The value of `` NAME=value`` up to the next space (or a trailing colon)."""
    start = text.find(f" {name}=")
    if start < 0:
        return None
    start += len(name) + 2
    end = text.find(" ", start)
    return (text[start:end] if end >= 0 else text[start:]).rstrip(":")


def tls_session(text: str, end: int) -> tuple[str, dict[str, str]] | None:
    """`` X=VERSION:CIPHER:BITS CV=yes DN="..."`` before ``end``: the version label and
    which of ``CV``/``DN`` were logged, with their values; ``None`` without ``X=``."""
    start = text.find(" X=", 0, end)
    if start < 0:
        return None
    fields = text[start:end]
    colon = fields.find(":")
    version = TLS_VERSIONS.get(fields[3:colon], OTHER) if colon >= 0 else OTHER
    return version, {name: value for name in ("CV", "DN") if (value := field(fields, name))}


def continued_connection(text: str, tls_field: int) -> bool:
    """Exim marks a delivery over a connection kept open from an earlier one with ``*``
    right after the host fields, just before `` X=`` (`` TFO*`` is TCP Fast Open)."""
    return text[tls_field - 1] == "*" and not text.endswith(" TFO*", 0, tls_field)


class EximParser:
    def __init__(self, counters: LogCounters, replies: ReplyReasons | None = None) -> None:
        self.c = counters
        self.replies = replies or ReplyReasons()
        # message id → host and TLS fields of the outbound session counted last
        self.sessions: dict[str, str] = {}

    def file_line(self, line: str) -> bool:
        """A line of Exim's own log file: timestamp first."""
        stamp = TIMESTAMP.match(line)
        return self.message(line[stamp.end() :] if stamp else line)

    def syslog(self, service: str, text: str) -> bool:
        return self.file_line(text)

    def message(self, text: str) -> bool:
        found = MESSAGE_ID.match(text)
        if found:
            return self.message_event(text[: found.end() - 1], text[found.end() :])
        return self.smtp_event(text)

    def message_event(self, message_id: str, text: str) -> bool:
        c = self.c
        flag = text[:2]
        if flag == "<=":
            c.received[(MTA,)] += 1
            c.sender_domains.add(MTA, address_domain(text[3 : text.find(" ", 3)]))
            self.submitted(text)
            self.tls_received(text)
            recipients = self.observe_shape(text)
            self.sender(text, recipients)
            return True
        status = FLAGS.get(flag)
        if status is not None and text[2:3] == " ":
            transport = c.services(field(text, "T") or "none")
            c.deliveries[(MTA, transport, status)] += 1
            domain = address_domain(text[3 : text.find(" ", 3)])
            c.recipient_domains.add(MTA, domain, status)
            if flag == "==":
                self.sessions.pop(message_id, None)
            elif flag != "->":
                self.tls_delivered(message_id, transport, text)
            if status != "sent":
                self.refusal(domain, status, text)
            return True
        if text.startswith("Completed"):
            self.sessions.pop(message_id, None)
            return True
        if text.startswith("Frozen"):
            c.frozen[(MTA,)] += 1
            return True
        return self.smtp_event(text)

    def submitted(self, text: str) -> None:
        """``<= a@b H=mx [192.0.2.1] P=esmtps S=2048``: by ``P=``; ``R=`` (a bounce) not.

        Only the fields before ``S=`` are looked at: the subject (``T="..."``) comes later.
        """
        end = text.find(" S=")
        fields = text[:end] if end >= 0 else text
        if field(fields, "R") is None:
            self.c.submitted[(MTA, self.c.services(field(fields, "P") or OTHER))] += 1

    def observe_shape(self, text: str) -> int | None:
        """``<= a@b ... S=2048 id=... T="subject" for c@d e@f``: the size, and the number of
        recipients when ``+received_recipients`` logs them (the last `` for `` after the
        subject's closing quote), which is returned."""
        size = field(text, "S")
        if size is None or not size.isdigit():
            return None
        self.c.message_sizes[(MTA,)].observe(float(size))
        recipients = text.rfind(" for ")
        if recipients > text.rfind('"'):
            count = text.count(" ", recipients + 4)
            self.c.message_recipients[(MTA,)].observe(float(count))
            return count
        return None

    def sender(self, text: str, recipients: int | None) -> None:
        """``<= a@b H=client [192.0.2.1]:587 P=esmtpsa A=plain:alice S=2048``: a message of
        the account after ``A=``'s colon, and its client address; recipients when known."""
        end = text.find(" S=")
        fields = text[:end] if end >= 0 else text
        authenticated = field(fields, "A")
        if authenticated is None:
            return
        account = authenticated.partition(":")[2]
        if not account:
            return  # an authenticator that set no id: no account to count
        c = self.c
        c.accounts.add(MTA, account, MESSAGES)
        if recipients is not None:
            c.accounts.add(MTA, account, RECIPIENTS, amount=recipients)
        host = fields.find(" H=")
        opening = fields.find("[", host)
        closing = fields.find("]", opening)
        if 0 <= host < opening < closing:
            c.account_addresses.add(account, fields[opening + 1 : closing])

    def refusal(self, domain: str, status: str, text: str) -> None:
        """``== c@d R=r T=t defer (-44) H=mx [ip]: SMTP error from remote mail server after
        RCPT TO:<c@d>: 451 4.7.1 text``: the reply's classes (see :mod:`.replies`)."""
        start = text.find(REMOTE_ERROR)
        if start < 0:
            return
        reply = text.find(": ", start + len(REMOTE_ERROR))
        if reply < 0:
            return
        code_class, code, reason = self.replies.classify(text[reply + 2 :])
        self.c.refusal_codes[(MTA, code_class, code)] += 1
        self.c.refusals.add(MTA, domain, status, reason)

    def tls_received(self, text: str) -> None:
        """``<= a@b H=mx [192.0.2.1] P=esmtps X=TLS1.3:...:256 CV=no DN="..." S=2048 id=...``.

        Only the fields before ``S=`` are looked at: the subject (``T="..."``) comes later.
        """
        end = text.find(" S=")
        session = tls_session(text, end if end >= 0 else len(text))
        if session is None:
            return
        version, logged = session
        trust = INBOUND_TRUST.get(logged.get("CV", ""), "anonymous")
        if trust == "untrusted" and "DN" not in logged:
            trust = "anonymous"
        self.c.tls_connections[(MTA, SERVICE, version, trust)] += 1

    def tls_delivered(self, message_id: str, transport: str, text: str) -> None:
        """``=> b@c R=dnslookup T=remote_smtp H=mx [192.0.2.1]* X=TLS1.3:...:256 CV=yes C="..."``
        or ``** b@c R=... T=... H=mx [192.0.2.1] X=...:256 CV=yes: SMTP error from ...``.

        Only the fields before the server's reply (``C="..."``, or the ``: `` after them)
        are looked at; counted once per session (see the module docstring).
        """
        end = text.find(' C="' if text[0] == "=" else ": ")
        end = end if end >= 0 else len(text)
        session = tls_session(text, end)
        if session is None or continued_connection(text, text.find(" X=", 0, end)):
            return
        fields = text[text.find(" H=") : end]
        if self.sessions.get(message_id) == fields:
            return
        self.sessions.pop(message_id, None)
        if len(self.sessions) >= SESSIONS_REMEMBERED:
            del self.sessions[next(iter(self.sessions))]
        self.sessions[message_id] = fields
        version, logged = session
        trust = OUTBOUND_TRUST.get(logged.get("CV", ""), "unknown")
        self.c.tls_connections[(MTA, transport, version, trust)] += 1

    def smtp_event(self, text: str) -> bool:
        c = self.c
        if text.startswith("SMTP connection from "):
            if text.endswith("lost") or " lost " in text:
                after = "DATA" if "message data" in text else "other"
                c.lost_connections[(MTA, SERVICE, after)] += 1
            elif "connection count" in text:
                c.connections[(MTA, SERVICE)] += 1
            return True
        if "authenticator failed" in text:
            c.auth_failures[(MTA, SERVICE)] += 1
            return True
        rejected = text.find("rejected ")
        if rejected >= 0 and (rejected == 0 or text[rejected - 1] == " "):
            return self.reject(text, rejected + 9)
        if text.startswith("refused connection") or " refused connection" in text:
            c.rejects[(MTA, SERVICE, reject_reason(text))] += 1
            c.reject_stages[(MTA, SERVICE, "CONNECT")] += 1
            return True
        return text.startswith(NOISE) or text[:1] in (" ", "\t") or text[1:2] == " "

    def reject(self, text: str, start: int) -> bool:
        """``H=(helo) [1.2.3.4] F=<a@b> rejected RCPT <c@d>: relay not permitted``."""
        word = text[start : text.find(" ", start)]
        where = stage(REJECT_STAGES.get(word, "UNKNOWN"))
        reply = text[text.find(": ", start) + 2 :]
        self.c.rejects[(MTA, SERVICE, reject_reason(reply))] += 1
        self.c.reject_stages[(MTA, SERVICE, where)] += 1
        return True
