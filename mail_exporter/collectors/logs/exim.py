"""Exim main and reject log lines: arrivals, deliveries, deferrals, failures, rejects, frozen.

Lines come from Exim's own log files (``format: exim``: ``2024-01-12 10:00:00 ...``,
with or without the ``+millisec``, ``+tz`` and ``+pid`` selectors) or from syslog
(``log_file_path = syslog``: program ``exim``/``exim4``). Message IDs of both forms
(``1rOHxx-000abc-Ab`` and the longer one of Exim 4.97 and later) are recognised.

Exim writes each reject to the main log *and* the reject log; the reject log adds
only the header dumps (recognised and ignored). Follow one of the two for rejects,
normally the main log, which has everything else too. ``service`` is ``smtp`` for
Exim's SMTP input; ``transport`` is the ``T=`` field (``none`` when routing failed).
"""

from __future__ import annotations

import re

from mail_exporter.collectors.logs.counters import LogCounters
from mail_exporter.collectors.logs.rejects import reject_reason, stage

MTA = "exim"
SERVICE = "smtp"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?: [-+]\d{4})?(?: \[\d+\])? ")
MESSAGE_ID = re.compile(r"[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4} ")
FLAGS = {"=>": "sent", "->": "sent", "==": "deferred", "**": "bounced"}
REJECT_STAGES = {"RCPT": "RCPT", "MAIL": "MAIL", "after": "DATA", "EHLO": "EHLO",
                 "HELO": "HELO", "connection": "CONNECT", "VRFY": "VRFY",
                 "AUTH": "AUTH"}  # fmt: skip
NOISE = ("Completed", "*>", "SMTP error from", "Unfrozen", "Message is frozen", "removed by",
         "cancelled by", "Spool file", "no immediate delivery", "Start queue run",
         "End queue run", "exim ", "daemon", "no host name found", "no IP address found",
         "Envelope-from:", "Envelope-to:", "sender verify", "H=", "Warning:", "SMTP call",
         "SMTP protocol", "SMTP command timeout", "SMTP syntax error", "TLS error",
         "unexpected disconnection", "ident connection", "Connection from", "SIGHUP",
         "recipient verify")  # fmt: skip


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


class EximParser:
    def __init__(self, counters: LogCounters) -> None:
        self.c = counters

    def file_line(self, line: str) -> bool:
        """A line of Exim's own log file: timestamp first."""
        stamp = TIMESTAMP.match(line)
        return self.message(line[stamp.end() :] if stamp else line)

    def syslog(self, service: str, text: str) -> bool:
        return self.message(text)

    def message(self, text: str) -> bool:
        found = MESSAGE_ID.match(text)
        if found:
            return self.message_event(text[found.end() :])
        return self.smtp_event(text)

    def message_event(self, text: str) -> bool:
        c = self.c
        flag = text[:2]
        if flag == "<=":
            c.received[(MTA,)] += 1
            c.sender_domains.add(MTA, address_domain(text[3 : text.find(" ", 3)]))
            return True
        status = FLAGS.get(flag)
        if status is not None and text[2:3] == " ":
            transport = c.services(field(text, "T") or "none")
            c.deliveries[(MTA, transport, status)] += 1
            c.recipient_domains.add(MTA, address_domain(text[3 : text.find(" ", 3)]), status)
            return True
        if text.startswith("Frozen"):
            c.frozen[(MTA,)] += 1
            return True
        return self.smtp_event(text)

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
