"""Label values taken from log text: few, short and printable, whatever a line says.

Anyone who can write to a log (a client choosing its HELO or address, a local user
calling ``logger``) chooses text the parsers read, so no label value is copied from a
line unchecked. A value is either a member of a fixed set (reject reasons, stages,
statuses, TLS versions here: anything else is ``other``) or a name the first
``limit`` of which get a series of their own (:class:`LabelGuard`: services,
transports, programs, mechanisms; :class:`~.domains.TopDomains`: the busiest domains).
A name must also :func:`fit`: at most ``max_chars`` long and printable, so NUL,
escape sequences, carriage returns and invisible characters (zero-width spaces,
bidirectional overrides that would make a dashboard show another name) never reach
the exposition; a name that does not fit counts as ``other`` and is not remembered.
"""

from __future__ import annotations

from mail_exporter.tls_facts import tls_version_label

OTHER = "other"
MAX_NAME_CHARS = 128
"""Services, transports, programs, mechanisms: a syslog tag is at most 48 characters
(RFC 5424's APP-NAME), a master.cf service name or an Exim transport far less."""
MAX_DOMAIN_CHARS = 253
"""The longest domain name DNS can carry, in text form (RFC 1035)."""

OPENSSL_VERSIONS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
TLS_VERSIONS = {name: tls_version_label(name) for name in OPENSSL_VERSIONS}
"""OpenSSL's protocol names, as Postfix logs them → the probes' labels (``TLS 1.3``)."""


def fit(value: str, max_chars: int) -> bool:
    """Whether ``value`` can be a label value: short, and printable (``str.isprintable``:
    no C0 or C1 control, no DEL, no format or separator character other than the space)."""
    return len(value) <= max_chars and value.isprintable()


def tls_version(name: str) -> str:
    """The label of an OpenSSL protocol name; ``other`` for any other text."""
    return TLS_VERSIONS.get(name, OTHER)


class LabelGuard:
    """The first ``limit`` distinct names that fit pass; any other becomes ``other``.

    Remembers at most ``limit`` names of at most ``max_chars`` characters."""

    def __init__(self, limit: int, max_chars: int = MAX_NAME_CHARS) -> None:
        self.limit = limit
        self.max_chars = max_chars
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit or not fit(value, self.max_chars):
            return OTHER
        self._seen.add(value)
        return value
