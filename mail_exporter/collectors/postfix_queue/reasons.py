"""What a deferred recipient is counted as: the class of its delay reason and its domain.

Both label values are bounded: reasons fall into :data:`DEFER_REASONS`, and domains
beyond the largest few are merged into ``other`` by the collector.
"""

from __future__ import annotations

import functools
import re

from mail_exporter.collectors.queues import OTHER

DEFER_REASONS = (
    "connection_refused", "timed_out", "dns", "tls", "remote_4xx", "remote_5xx", "other"
)  # fmt: skip

_REMOTE_REPLY = re.compile(r"\b(?:said|refused to talk to me):? ([45])\d\d\b")
"""Postfix's wording when the remote server answered: ``host X said: 450 ...`` or
``host X refused to talk to me: 421 ...`` (a greeting refused)."""
_REASON_PATTERNS = (
    ("tls", re.compile(r"\bTLS\b|\bSSL\b|\bcertificate\b|\bSTARTTLS\b", re.IGNORECASE)),
    ("connection_refused", re.compile(r"\bconnection refused\b|\bno route to host\b|"
                                      r"\bnetwork is unreachable\b", re.IGNORECASE)),
    ("timed_out", re.compile(r"\btimed out\b|\btimeout\b", re.IGNORECASE)),
    ("dns", re.compile(r"\bhost or domain name not found\b|\bname service error\b|"
                       r"\bno MX host\b|\bMX host .* not found\b|\bDNS\b", re.IGNORECASE)),
)  # fmt: skip


@functools.lru_cache(maxsize=4096)  # a queue holds few distinct reasons, many times over
def classify_reason(reason: str) -> str:
    """One of :data:`DEFER_REASONS` for a delay reason as Postfix records it.

    A reply from the remote server is recognised first: whatever its text mentions
    ("listed in dnsbl", "timeout exceeded", "TLS not available"), the connection was
    made and the remote chose to refuse, so the reply is the reason. A 5xx reply in a
    deferral (``soft_bounce = yes`` turns bounces into deferrals) is ``remote_5xx``,
    apart from ``remote_4xx``: it will not go away by retrying. The
    other classes describe failures before any reply; ``connection_refused`` also takes
    "No route to host" and "Network is unreachable", the other ways a connection is
    refused before it opens.
    """
    reply = _REMOTE_REPLY.search(reason)
    if reply is not None:
        return f"remote_{reply.group(1)}xx"
    for name, pattern in _REASON_PATTERNS:
        if pattern.search(reason):
            return name
    return "other"


def recipient_domain(address: str) -> str:
    """The recipient's domain in lower case; ``other`` (the rest bucket) when it has none.

    A recipient without a domain (``root``, the null address ``<>``) is counted with
    the rest rather than as a domain of its own name;
    :func:`~mail_exporter.collectors.queues.top_with_other` merges a real domain named
    ``other`` there too, so the label value means one thing.
    """
    _, at, domain = address.strip().strip("<>").rpartition("@")
    return domain.lower() if at and domain else OTHER
