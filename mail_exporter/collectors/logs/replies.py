"""Why a receiving server refused our mail: its reply's code class, enhanced code and reason.

A deferred or bounced delivery whose log line carries the remote server's reply
(Postfix: ``status=deferred (host mx[ip] said: 421 4.7.28 ... (in reply to ...))``;
Exim: ``== ... SMTP error from remote mail server after RCPT TO:<...>: 550 5.1.1 ...``)
is classified three ways, each a bounded label:

* ``code_class``: the first digit of the three-digit reply code, ``4`` or ``5``
  (anything else, ``other``);
* ``enhanced_code``: the RFC 3463 status code after it (``5.7.1``), if its class is 4 or
  5 and its subject.detail is one of the IANA registry's (:data:`SUBJECT_DETAILS`);
  ``other`` otherwise, so receivers' private codes (Microsoft's ``4.7.650``) and any
  text a server makes up cost one value. At most 3 * (2 * 79 + 1) values per MTA;
* ``reason``: one of :data:`REASONS`, from the reply text: the first
  :class:`ReplyReasons` entry whose pattern the text contains (case-insensitive
  substrings, so a config cannot bring a regular expression that backtracks for ever);
  config entries come before :data:`DEFAULT_PATTERNS`. A reply no pattern matches
  takes the reason its enhanced code implies (:data:`CODE_REASONS`; any other X.7.X,
  "security or policy status", is ``policy``), else ``other``.

The defaults hold the key phrases and codes the big receivers document for their
refusals (Gmail's ``4.7.28`` unsolicited-rate limit, ``4.2.1`` receiving too fast,
``5.7.26`` unauthenticated sender, low-reputation blocks; Microsoft's ``S3150`` block
list, ``banned sending IP``, ``rate limited due to IP reputation``; Yahoo's ``[TSS04]``
deferrals for volume or complaints, ``[TSS09]`` permanent deferral, ``[BL21]``-style
blocklist refusals), checked in this order: TLS, rate limit, reputation, unknown user,
full mailbox, policy. So Microsoft's "rate limited due to IP reputation" is
``rate_limited`` (a 4xx throttle that clears) and a blocklist reply that also says
"policy" is ``reputation``.

Unlike :mod:`.rejects`, classes are not cached by reply text: receivers put message
IDs, times and server names in their replies (Microsoft's ``[MxId=...]``), so a cache
would mostly hold text that never comes again, and refusals are few beside the lines
that carry none.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import get_args

from mail_exporter.collectors.logs.config import RefusalReason as Reason
from mail_exporter.collectors.logs.labels import OTHER

REASONS: tuple[Reason, ...] = get_args(Reason)
CODE_CLASSES = frozenset("45")
SUBJECT_DETAILS = frozenset(
    f"{subject}.{detail}"
    for subject, details in (
        (0, range(1)), (1, (*range(9), 10)), (2, range(5)), (3, range(6)), (4, range(8)),
        (5, range(7)), (6, range(11)), (7, range(31)),
    )
    for detail in details
)  # fmt: skip
"""IANA's SMTP Enhanced Status Codes registry (RFC 3463 and its additions: RFC 4954,
5248, 6531, 6710, 7293, 7372, 7505, 8617, 8689): subject.detail of every known code."""
DEFAULT_PATTERNS: tuple[tuple[str, Reason], ...] = (
    ("must issue a starttls", "tls_required"), ("tls required", "tls_required"),
    ("requires tls", "tls_required"), ("tls is required", "tls_required"),
    ("encryption required", "tls_required"), ("wasn't sent over a tls", "tls_required"),
    ("rate limit", "rate_limited"), ("rate-limit", "rate_limited"),
    ("ratelimit", "rate_limited"), ("[tss04]", "rate_limited"),
    ("unexpected volume", "rate_limited"), ("receiving mail at a rate", "rate_limited"),
    ("receiving mail too quickly", "rate_limited"), ("too many connections", "rate_limited"),
    ("too many messages", "rate_limited"), ("throttl", "rate_limited"),
    ("server busy", "rate_limited"),
    ("block list", "reputation"), ("blocklist", "reputation"), ("blacklist", "reputation"),
    ("blocked using", "reputation"), ("listed in", "reputation"), ("listed at", "reputation"),
    ("spamhaus", "reputation"), ("spamcop", "reputation"), ("reputation", "reputation"),
    ("banned sending ip", "reputation"), ("not accepted from this ip", "reputation"),
    ("(s3150)", "reputation"), ("(s3140)", "reputation"), ("[bl2", "reputation"),
    ("[tss09]", "reputation"), ("permanently deferred", "reputation"),
    ("unsolicited", "reputation"),
    ("does not exist", "unknown_user"), ("doesn't exist", "unknown_user"),
    ("user unknown", "unknown_user"), ("unknown user", "unknown_user"),
    ("no such user", "unknown_user"), ("recipient not found", "unknown_user"),
    ("recipientnotfound", "unknown_user"), ("mailbox unavailable", "unknown_user"),
    ("mailbox not found", "unknown_user"), ("mailbox is disabled", "unknown_user"),
    ("invalid recipient", "unknown_user"), ("doesn't have a yahoo", "unknown_user"),
    ("over quota", "mailbox_full"), ("quota exceeded", "mailbox_full"),
    ("quotaexceeded", "mailbox_full"), ("mailbox full", "mailbox_full"),
    ("mailbox is full", "mailbox_full"), ("out of storage", "mailbox_full"),
    ("insufficient storage", "mailbox_full"),
    ("policy", "policy"), ("unauthenticated", "policy"), ("authentication", "policy"),
    ("spf", "policy"), ("dkim", "policy"), ("dmarc", "policy"), ("not authorized", "policy"),
    ("relay access denied", "policy"), ("relaying denied", "policy"),
)  # fmt: skip
"""(lower-case substring of a reply, reason): the first match wins."""
CODE_REASONS: dict[str, Reason] = {
    "1.1": "unknown_user", "1.10": "unknown_user", "2.1": "rate_limited",
    "2.2": "mailbox_full", "4.5": "rate_limited", "7.10": "tls_required",
    "7.11": "tls_required", "7.28": "rate_limited",
}  # fmt: skip
"""subject.detail → reason, for a reply none of the patterns matches."""

ReplyClass = tuple[str, str, Reason]
"""(code_class, enhanced_code, reason)."""


def enhanced_code(reply: str) -> tuple[str, str]:
    """``550 5.7.1 text`` or ``550-5.7.1 text``: the code class, and the enhanced code if
    it is a known one (``""`` if not)."""
    code_class = reply[0] if reply[:1] in CODE_CLASSES and reply[1:3].isdigit() else OTHER
    if reply[3:4] not in (" ", "-"):
        return code_class, ""
    end = reply.find(" ", 4)
    code = reply[4:end] if end >= 0 else reply[4:]
    dsn_class, dot, subject_detail = code.partition(".")
    if dot and dsn_class in CODE_CLASSES and subject_detail in SUBJECT_DETAILS:
        return code_class, code
    return code_class, ""


class ReplyReasons:
    """Classifies remote replies: config patterns first, then :data:`DEFAULT_PATTERNS`."""

    def __init__(self, patterns: Iterable[tuple[str, Reason]] = ()) -> None:
        self.patterns = tuple((pattern.lower(), reason) for pattern, reason in patterns)
        self.patterns += DEFAULT_PATTERNS

    def classify(self, reply: str) -> ReplyClass:
        """The classes of a reply that starts at its three-digit code."""
        code_class, code = enhanced_code(reply)
        return code_class, code or OTHER, self._reason(reply.lower(), code)

    def _reason(self, text: str, code: str) -> Reason:
        for pattern, reason in self.patterns:
            if pattern in text:
                return reason
        subject_detail = code[2:]
        if subject_detail in CODE_REASONS:
            return CODE_REASONS[subject_detail]
        return "policy" if subject_detail.startswith("7.") else "other"
