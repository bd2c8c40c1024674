"""Postfix log lines: receptions, deliveries with their delay stages, rejects, logins, TLS.

Lines are routed by syslog tag before any text is looked at: ``postfix/smtpd``,
``postfix/submission/smtpd`` (a master.cf service with its own ``syslog_name``) and
``postfix-NAME/smtpd`` (a multi-instance Postfix) all reach the smtpd handler. The
``service``/``transport`` label is the tag without the default ``postfix/``
(``smtpd``, ``submission/smtpd``, ``relay/smtp``); another instance keeps its name
(``postfix-out/smtpd``), so instances stay apart without a label of their own (the
``instance`` label belongs to Prometheus).

``syslog_name`` replaces the whole prefix of the tag, so a name that does not start
with ``postfix`` (``syslog_name = mta-out`` in an instance's main.cf, ``-o
syslog_name=submission`` in master.cf) gives tags such as ``mta-out/smtpd`` and
``submission/smtpd``. Those are Postfix's only when the config says so (the logs
section's ``postfix_syslog_names``, matched as a prefix followed by ``/``), and keep
their name in the label like another instance does (``mta-out/smtpd``). The label
guard bounds these as it bounds every other service.

Decisions an admin would expect:

* ``mail_messages_received_total`` counts qmgr's ``from=`` line once per queue ID: qmgr
  logs it again each time a deferred message is retried, so IDs stay remembered until
  qmgr logs ``removed`` (a message already queued when the exporter started counts at
  its first retry). At most ``MAX_QUEUED_IDS`` are: past that, the ID seen least
  recently is forgotten (a message deferred that long counts again at its next retry),
  in constant time (an ``OrderedDict``; taking the first key of a plain dict walks
  over every slot its deletions left, which made a full memory 33 times slower). Only
  what can be a Postfix queue ID is remembered: at most ``MAX_QUEUE_ID_CHARS`` ASCII
  letters and digits. The short form is 5 hex digits of microseconds and the inode
  number in hex (up to 21 characters for a 64-bit inode); the long form
  (``enable_long_queue_ids``) 6 or more characters of seconds and 4 of microseconds in
  base 52, ``z``, and the inode number in base 51 (up to 23 characters). A longer or
  stranger "ID" is counted each time it is logged and never held, so the memory holds
  at most 200,000 IDs of 24 characters, 33 MB measured, however long the IDs in the log.
* ``mail_messages_submitted_total`` counts what came in, by the service that took it:
  smtpd's ``QUEUEID: client=`` (logged when the transaction gets its queue file, so a
  message aborted or rejected later in DATA counts here but never reaches qmgr) and
  pickup's ``QUEUEID: uid=N from=<...>`` (sendmail/postdrop). ``NOQUEUE: client=``
  names no queue file and is not counted. A message a content filter hands back
  through another smtpd counts again under that service, as qmgr counts it again.
* ``delays=a/b/c/d`` feed ``mail_delivery_delay_seconds`` one stage each, for final
  statuses only (sent, bounced): a deferral's delays describe an attempt, not a delivery.
* ``status=expired`` comes from qmgr (transport ``qmgr``), and so does
  ``status=force-expired`` (``postsuper -e`` then the next delivery attempt): both are
  the status ``expired``, and neither is a message received, although the line starts
  with ``from=<`` like qmgr's arrival line. ``SOFTBOUNCE`` (soft_bounce=yes) is a
  deferral; address verification probes (``deliverable``/``undeliverable``) are not
  deliveries and are not counted.
* A deferral or bounce that quotes the remote server (``host mx[ip] said: 550 5.7.1
  ...``) counts in ``mail_delivery_refusals_total`` and ``..._refusal_codes_total`` as
  :mod:`.replies` classifies the reply; one without (``connect to ...: Connection
  refused``) is no refusal. qmgr's first ``from=`` of a queue ID gives the message's
  ``size=`` and ``nrcpt=`` to ``mail_message_size_bytes`` and
  ``mail_message_recipients``, and to the account's counts (:mod:`.senders`) when smtpd
  logged a ``sasl_username=`` for that queue ID.
* Rejects are counted at every stage smtpd (and postscreen, and cleanup's header/body
  checks and milters) logs them; ``reject_warning`` (warn_if_reject) is not a reject.
* ``warning:``/``error:``/``fatal:``/``panic:`` lines count by severity, except SASL
  failures, which are ``mail_auth_failures_total``, and again by severity and class
  (``mail_log_problem_classes_total``): the class is the first of
  :data:`PROBLEM_CLASSES` whose text the line contains, ``other`` if none, so the label
  has a fixed set of values whatever the line says. A daemon's ``table hash:... has
  changed -- restarting`` (a lookup table was rebuilt; logged without a severity)
  counts there too, as severity ``info``, class ``table_changed``.

Lines a handler recognises count as parsed even when they carry nothing to count
(``disconnect from``, ``message-id=``); anything else is unsupported, so the coverage
counter shows what this parser misses.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from mail_exporter.collectors.logs.counters import Histogram, LogCounters
from mail_exporter.collectors.logs.labels import OTHER, tls_version
from mail_exporter.collectors.logs.rejects import reject_reason, stage
from mail_exporter.collectors.logs.replies import ReplyReasons
from mail_exporter.collectors.logs.senders import MESSAGES, RECIPIENTS, PendingAccounts

MTA = "postfix"
MTA_KEY = (MTA,)
"""The key of counts by ``mta`` alone, built once rather than on every line."""
MAX_QUEUED_IDS = 200_000
MAX_QUEUE_ID_CHARS = 24
STAGES = ("before_queue_manager", "queue_manager", "connection_setup", "transmission")
FINAL_STATUSES = frozenset(("sent", "bounced"))
STATUS_LABELS = {"sent": "sent", "deferred": "deferred", "bounced": "bounced",
                 "SOFTBOUNCE": "deferred"}  # fmt: skip
VERIFY_STATUSES = frozenset(("deliverable", "undeliverable"))
DELIVERY_AGENTS = frozenset(("smtp", "lmtp", "local", "virtual", "pipe", "error", "retry",
                             "discard"))  # fmt: skip
QUIET_DAEMONS = frozenset(
    ("master", "postfix-script", "anvil", "scache", "tlsmgr", "trivial-rewrite", "proxymap",
     "verify", "postlogd", "postlog", "flush", "showq", "postdrop", "postqueue", "postsuper",
     "sendmail", "spawn", "dnsblog", "tlsproxy", "postmap", "postalias", "postmulti", "oqmgr",
     "qmqpd", "script")
)  # fmt: skip
"""Daemons whose lines carry nothing counted here but warnings (statistics, start, stop)."""
SEVERITIES = ("warning", "error", "fatal", "panic")
PROBLEM_CLASSES = (
    ("main.cf", "config"), ("master.cf", "config"), ("parameter", "config"),
    ("is unavailable", "table_unavailable"), ("lookup error", "table_unavailable"),
    ("open database", "table_unavailable"), ("is older than source file", "table_stale"),
    ("SASL", "sasl"), ("milter", "milter"), ("TLS", "tls"), ("SSL", "tls"),
    ("certificate", "tls"), ("does not resolve to address", "dns"),
    ("address not listed for hostname", "dns"), ("malformed domain name", "dns"),
    ("DNS", "dns"), ("Name service error", "dns"), ("host not found", "dns"),
    ("No space left", "resource"), ("out of memory", "resource"),
    ("Too many open files", "resource"), ("file size limit", "resource"),
    ("not enough free space", "resource"), ("exit status", "process"),
    ("killed by signal", "process"), ("throttling", "process"),
    ("premature end-of-input", "process"), ("connect to ", "service_unreachable"),
    ("queue file", "queue_file"), ("corrupt", "queue_file"),
    ("non-SMTP command", "protocol"), ("Illegal address syntax", "protocol"),
    ("address syntax", "protocol"), ("pipelining", "protocol"),
)  # fmt: skip
"""(substring of a problem line, class): the first match wins; any other line is ``other``."""
TABLE_CHANGED = " has changed -- restarting"
SMTPD_NOISE = (
    "disconnect from ", "improper command pipelining", "too many errors",
    "SSL_accept error", "TLS library problem", "setting up TLS", "NOQUEUE: reject_warning",
    "NOQUEUE: filter:", "NOQUEUE: lost connection", "proxy-accept", "proxy-reject",
    "non-SMTP command", "discarding EHLO keywords", "input transfer",
)  # fmt: skip
DELIVERY_NOISE = (
    "connect to ", "lost connection with", "conversation with", "host ", "enabling PIX",
    "SSL_connect error", "TLS is required", "server certificate", "certificate verification",
    "Server certificate", "tlsa", "Cannot start TLS", "delivery temporarily suspended",
)  # fmt: skip
QUEUE_ACTIONS = ("message-id=", "resent-message-id=", "hold:", "discard:", "redirect:", "filter:",
                 "replace:", "warning: header", "warning: body", "sender=", "info:",
                 "skipped, still being delivered", "removed", "client=")  # fmt: skip
POSTSCREEN_RESULTS = (
    ("CONNECT from", "connect"), ("PASS NEW", "pass_new"), ("PASS OLD", "pass_old"),
    ("DNSBL rank", "dnsbl"), ("PREGREET", "pregreet"), ("HANGUP", "hangup"),
    ("COMMAND PIPELINING", "pipelining"), ("NON-SMTP COMMAND", "non_smtp_command"),
    ("BARE NEWLINE", "bare_newline"), ("WHITELISTED", "allowlisted"),
    ("ALLOWLISTED", "allowlisted"), ("BLACKLISTED", "denylisted"), ("DENYLISTED", "denylisted"),
    ("WHITELIST VETO", "allowlist_veto"), ("ALLOWLIST VETO", "allowlist_veto"),
    ("COMMAND TIME LIMIT", "command_limit"), ("COMMAND COUNT LIMIT", "command_limit"),
    ("COMMAND LENGTH LIMIT", "command_limit"),
)  # fmt: skip
POSTSCREEN_NOISE = ("DISCONNECT", "cache ", "NOQUEUE: reject_warning", "TLS")
BOUNCE_KINDS = (("sender non-delivery", "non_delivery"), ("sender delay", "delay"),
                ("sender delivery status", "delivery_status"),
                ("postmaster non-delivery", "postmaster"))  # fmt: skip
TLS_TRUST = {"Anonymous": "anonymous", "Untrusted": "untrusted", "Trusted": "trusted",
             "Verified": "verified"}  # fmt: skip

Handler = Callable[[str, str], bool]
"""(service or transport label, message text) → whether the line was understood."""


def address_domain(text: str, start: int, end: int | None = None) -> str:
    """The domain of the address in ``<...>`` at ``start`` (lower case); ``none`` for ``<>``.
    ``end``: where its ``>`` is, if the caller found it already."""
    if end is None:
        end = text.find(">", start)
    at = text.rfind("@", start, end)
    return text[at + 1 : end].lower() if at >= 0 else "none"


def problem_class(text: str) -> str:
    """The class of a ``warning:``/``fatal:``/... line (see :data:`PROBLEM_CLASSES`)."""
    for needle, label in PROBLEM_CLASSES:
        if needle in text:
            return label
    return OTHER


class PostfixParser:
    """Handlers for Postfix's daemons, counting into one :class:`LogCounters`."""

    def __init__(
        self,
        counters: LogCounters,
        syslog_names: Iterable[str] = (),
        max_queued_ids: int = MAX_QUEUED_IDS,
        replies: ReplyReasons | None = None,
    ) -> None:
        self.c = counters
        self.replies = replies or ReplyReasons()
        self._named_prefixes = tuple(f"{name}/" for name in syslog_names)
        self.queued: OrderedDict[str, None] = OrderedDict()  # qmgr's, least recently seen first
        self.max_queued_ids = max_queued_ids
        self.pending = PendingAccounts()  # smtpd's sasl_username until qmgr's from=
        self._delays: dict[str, tuple[Histogram, ...]] = {}  # by transport, STAGES in order
        self._shape: tuple[Histogram, Histogram] | None = None  # size, recipients
        self._handlers: dict[str, Handler] = {
            "smtpd": self.smtpd,
            "postscreen": self.postscreen,
            "qmgr": self.qmgr,
            "cleanup": self.queue_lines,
            "pickup": self.pickup,
            "bounce": self.bounce,
            **dict.fromkeys(DELIVERY_AGENTS, self.delivery),
            **dict.fromkeys(QUIET_DAEMONS, self.quiet),
        }

    def route(self, tag: str) -> tuple[Handler, str] | None:
        """The handler and label for a syslog tag, or ``None`` if it is not Postfix's."""
        head, slash, rest = tag.partition("/")
        if not slash or not rest:
            return None
        if head == MTA:
            label = rest
        elif head.startswith("postfix-") or self._configured_name(tag):
            label = tag
        else:
            return None
        daemon = rest.rpartition("/")[2]
        return self._handlers.get(daemon, self.unknown_daemon), self.c.services(label)

    def _configured_name(self, tag: str) -> bool:
        """Whether ``tag`` is ``NAME/daemon`` for one of the configured syslog names."""
        return any(
            tag.startswith(prefix) and len(tag) > len(prefix) for prefix in self._named_prefixes
        )

    # --- shared ------------------------------------------------------------------------

    def problem(self, service: str, text: str) -> bool:
        """A ``warning:``/``error:``/... line: counted by severity and class; a changed
        lookup table's restart by class. False for anything else."""
        severity = text[: text.find(":")]
        if severity not in SEVERITIES:
            if text.startswith("table ") and text.endswith(TABLE_CHANGED):
                self.c.problem_classes[(MTA, "info", "table_changed")] += 1
                return True
            return False
        self.c.problems[(MTA, service, severity)] += 1
        self.c.problem_classes[(MTA, severity, problem_class(text))] += 1
        return True

    def quiet(self, service: str, text: str) -> bool:
        self.problem(service, text)
        return True

    def unknown_daemon(self, service: str, text: str) -> bool:
        return self.problem(service, text)

    def tls(self, service: str, text: str) -> bool:
        """``Verified TLS connection established to/from HOST: TLSv1.3 with cipher ...``."""
        trust = TLS_TRUST.get(text[: text.find(" ")])
        start = text.find(": TLS")
        if trust is None or start < 0:
            return False
        version = text[start + 2 : text.find(" ", start + 2)]
        self.c.tls_connections[(MTA, service, tls_version(version), trust)] += 1
        return True

    def reject(self, service: str, text: str, start: int, milter: bool) -> bool:
        """``reject: RCPT from CLIENT: 554 5.7.1 <x>: Relay access denied; from=<...> ...``."""
        word_end = text.find(" ", start)
        where = stage(text[start:word_end])
        if where in ("header", "body"):  # cleanup: the reply comes after the envelope
            reply = text[text.rfind(": ") + 2 :]
        else:
            reply_start = text.find(": ", word_end) + 2
            reply_end = text.find("; from=<", reply_start)
            reply = text[reply_start:] if reply_end < 0 else text[reply_start:reply_end]
        self.c.rejects[(MTA, service, reject_reason(reply, milter))] += 1
        self.c.reject_stages[(MTA, service, where)] += 1
        return True

    def queue_action(self, service: str, text: str) -> bool:
        """What follows ``QUEUEID: `` or ``NOQUEUE: ``: rejects, or known actions."""
        start = text.find(": ") + 2
        if start < 2:
            return False
        if text.startswith("reject: ", start):
            return self.reject(service, text, start + 8, milter=False)
        if text.startswith("milter-reject: ", start):
            return self.reject(service, text, start + 15, milter=True)
        return text.startswith(QUEUE_ACTIONS, start)

    # --- daemons -----------------------------------------------------------------------

    def smtpd(self, service: str, text: str) -> bool:
        c = self.c
        if text.startswith("connect from "):
            c.connections[(MTA, service)] += 1
            return True
        if text.startswith(SMTPD_NOISE):
            return True
        if text.startswith("warning: "):
            if "authentication failed" in text:
                c.auth_failures[(MTA, service)] += 1
                return True
            return self.problem(service, text)
        if text.startswith(("lost connection after ", "timeout after ")):
            lost = text[0] == "l"
            start = 22 if lost else 14  # len("lost connection after "), len("timeout after ")
            after = stage(text[start : text.find(" ", start)])
            (c.lost_connections if lost else c.timeouts)[(MTA, service, after)] += 1
            return True
        client = text.find(": client=")
        if client >= 0:
            queue_id = text[:client]
            if queue_id != "NOQUEUE":
                c.submitted[(MTA, service)] += 1
            method = text.find(", sasl_method=")
            if method >= 0:
                end = text.find(",", method + 14)
                mechanism = text[method + 14 : end if end >= 0 else len(text)]
                c.logins[(MTA, service, c.mechanisms(mechanism))] += 1
                self.sender(text, client, end, queue_id)
            return True
        if "TLS connection established" in text:
            return self.tls(service, text)
        return self.queue_lines(service, text)

    def sender(self, text: str, client: int, start: int, queue_id: str) -> None:
        """``QUEUEID: client=host[192.0.2.1], sasl_method=PLAIN, sasl_username=alice``: the
        account's client address now, its message when qmgr first sees the queue ID."""
        if start < 0 or not text.startswith(", sasl_username=", start):
            return
        end = text.find(", ", start + 16)
        account = text[start + 16 : end if end >= 0 else len(text)]
        opening = text.find("[", client)
        closing = text.find("]", opening)
        if 0 <= opening < closing < start:
            self.c.account_addresses.add(account, text[opening + 1 : closing])
        if queue_id != "NOQUEUE":
            self.pending.put(queue_id, account)

    def pickup(self, service: str, text: str) -> bool:
        """``QUEUEID: uid=1000 from=<alice>``: a message from sendmail/postdrop is queued."""
        colon = text.find(": ")
        if colon > 0 and text.startswith("uid=", colon + 2):
            self.c.submitted[(MTA, service)] += 1
            return True
        return self.queue_lines(service, text)

    def postscreen(self, service: str, text: str) -> bool:
        for prefix, result in POSTSCREEN_RESULTS:
            if text.startswith(prefix):
                self.c.postscreen[(MTA, result)] += 1
                return True
        if text.startswith("NOQUEUE: reject: "):
            return self.reject(service, text, 17, milter=False)
        return text.startswith(POSTSCREEN_NOISE) or self.problem(service, text)

    def qmgr(self, service: str, text: str) -> bool:
        colon = text.find(": ")
        if text.startswith("from=<", colon + 2):
            queue_id = text[:colon]
            # The sender's end is looked for once: status, domain and shape follow it.
            sender_end = text.find(">", colon + 8)
            if text.startswith(", status=", sender_end + 1):
                # expired or force-expired: the message leaves the queue, none arrives
                self.c.deliveries[(MTA, service, "expired")] += 1
            elif self._first_sight(queue_id):
                c = self.c
                c.received[MTA_KEY] += 1
                c.sender_domains.add(MTA, address_domain(text, colon + 8, sender_end))
                self.observe_shape(text, sender_end + 1, self.pending.take(queue_id))
            return True
        if text.startswith("removed", colon + 2):
            self.queued.pop(text[:colon], None)
            return True
        return self.queue_lines(service, text)

    def observe_shape(self, text: str, start: int, account: str | None) -> None:
        """``from=<a@b>, size=1234, nrcpt=2 (queue active)``, read from ``start`` (the
        sender's end): size and recipient count, also for the authenticated ``account``
        that sent it, if one did."""
        size = text.find(", size=", start)
        if size < 0:
            return
        # partition() cuts both numbers out in two calls, where find() and slices took six.
        size_text, found, rest = text[size + 7 :].partition(", nrcpt=")
        if not found:
            return
        nrcpt_text = rest.partition(" ")[0]
        if size_text.isdigit() and nrcpt_text.isdigit():
            # float(), not int(): it parses faster and bisects float bounds faster.
            recipients = float(nrcpt_text)
            sizes, recipient_counts = self._shape or self._shape_histograms()
            sizes.observe(float(size_text))
            recipient_counts.observe(recipients)
            if account is not None:
                accounts = self.c.accounts
                accounts.add(MTA, account, MESSAGES)
                accounts.add(MTA, account, RECIPIENTS, amount=int(recipients))

    def _shape_histograms(self) -> tuple[Histogram, Histogram]:
        """The two histograms of message shape, held so that each arrival finds them
        without two keyed lookups; made at the first arrival, so that a log without one
        shows no empty histogram."""
        c = self.c
        found = self._shape = (c.message_sizes[MTA_KEY], c.message_recipients[MTA_KEY])
        return found

    def _first_sight(self, queue_id: str) -> bool:
        """Whether qmgr's ``from=`` is new for ``queue_id``; remember it (see the docstring)."""
        queued = self.queued
        if queue_id in queued:
            queued.move_to_end(queue_id)
            return False
        if len(queue_id) <= MAX_QUEUE_ID_CHARS and queue_id.isascii() and queue_id.isalnum():
            queued[queue_id] = None
            if len(queued) > self.max_queued_ids:
                queued.popitem(last=False)
        return True

    def delivery(self, transport: str, text: str) -> bool:
        """``QID: to=<a@b>, relay=..., delay=1.2, delays=a/b/c/d, dsn=2.0.0, status=sent (...)``."""
        at = text.find(", status=")
        if at < 0:
            return self.delivery_noise(transport, text)
        end = text.find(" ", at + 9)
        word = text[at + 9 : end] if end >= 0 else text[at + 9 :]
        status = STATUS_LABELS.get(word)
        if status is None:
            return word in VERIFY_STATUSES
        c = self.c
        c.deliveries[(MTA, transport, status)] += 1
        dsn = text.rfind(", dsn=", 0, at)
        if dsn >= 0:
            dsn_class = text[dsn + 6]
            c.dsn_classes[(MTA, transport, dsn_class if dsn_class in "245" else OTHER)] += 1
        to = text.find("to=<")
        domain = address_domain(text, to + 4) if to >= 0 else "none"
        if to >= 0:
            c.recipient_domains.add(MTA, domain, status)
        if status in FINAL_STATUSES:
            self.observe_delays(transport, text, at)
        if status != "sent":
            self.refusal(domain, status, text, at)
        return True

    def refusal(self, domain: str, status: str, text: str, start: int) -> None:
        """``status=bounced (host mx[ip] said: 550 5.1.1 text (in reply to RCPT TO command))``
        or ``(host mx[ip] refused to talk to me: 554 5.7.1 text)`` (the greeting): the
        remote reply's classes (see :mod:`.replies`); a deferral without a reply (the
        connection failed) is not a refusal."""
        said = text.find(" said: ", start)
        if said >= 0:
            said += 7
        else:
            said = text.find(" refused to talk to me: ", start)
            if said < 0:
                return
            said += 24
        end = text.rfind(" (in reply to ")
        reply = text[said:end] if end > said else text[said:-1]
        code_class, code, reason = self.replies.classify(reply)
        self.c.refusal_codes[(MTA, code_class, code)] += 1
        self.c.refusals.add(MTA, domain, status, reason)

    def observe_delays(self, transport: str, text: str, before: int) -> None:
        start = text.rfind(", delays=", 0, before)
        if start < 0:
            return
        parts = text[start + 9 : text.find(",", start + 9)].split("/")
        if len(parts) != 4:
            return
        histograms = self._delays.get(transport) or self._stage_histograms(transport)
        for histogram, part in zip(histograms, parts, strict=True):
            try:
                value = float(part)
            except ValueError:
                continue
            histogram.observe(value)

    def _stage_histograms(self, transport: str) -> tuple[Histogram, ...]:
        """The histograms of ``transport``'s four stages, held so that each delivery
        finds them in one lookup rather than building and looking up four keys. The
        stages of a transport appear together, at its first delivery with ``delays=``;
        transports are as many as the service label's guard lets through."""
        found = self._delays[transport] = tuple(
            self.c.histogram((MTA, transport, stage_name)) for stage_name in STAGES
        )
        return found

    def delivery_noise(self, transport: str, text: str) -> bool:
        if "TLS connection established" in text:
            return self.tls(transport, text)
        colon = text.find(": ")
        rest = colon + 2 if colon >= 0 and " " not in text[:colon] else 0
        return text.startswith(DELIVERY_NOISE, rest) or self.problem(transport, text)

    def queue_lines(self, service: str, text: str) -> bool:
        """cleanup and pickup: rejects of content checks and milters, known queue actions."""
        return self.queue_action(service, text) or self.problem(service, text)

    def bounce(self, service: str, text: str) -> bool:
        start = text.find(": ") + 2
        for prefix, kind in BOUNCE_KINDS:
            if text.startswith(prefix, start):
                self.c.bounces[(MTA, kind)] += 1
                return True
        return self.problem(service, text)
