"""Who sends: messages and recipients per authenticated account, and its client addresses.

An account is the name a client authenticated as: Postfix smtpd's ``sasl_username=`` on
the ``QUEUEID: client=`` line, Exim's ``A=authenticator:id`` on a ``<=`` line, the
``user=<...>`` of a Dovecot ``submission-login: Login:``. Sample output::

    mail_account_messages_total{mta="postfix",account="alice@example.org"} 12.0
    mail_account_recipients_total{mta="postfix",account="alice@example.org"} 30.0
    mail_account_client_addresses{account="alice@example.org"} 3.0

Messages and recipients (:class:`~.domains.TopDomains`, the same promotion as the
domains): the ``top_accounts`` busiest accounts by recent volume (messages plus
recipients) have series of their own, the rest count as ``other``. A name that does not
:func:`~.labels.fit` (longer than ``MAX_ACCOUNT_CHARS``, or with control or invisible
characters) counts as ``other`` at once and is never held. Postfix names the account on
smtpd's line and the recipients on qmgr's first ``from=`` of the same queue ID, so the
account waits for qmgr under its queue ID: at most ``MAX_PENDING`` queue IDs wait (a
message rejected in DATA never reaches qmgr; past the cap the oldest is forgotten). A
message counts when it enters the queue (qmgr's first sight), as
``mail_messages_received_total`` does.

Distinct client addresses per account (:class:`ClientAddresses`): a capped set, not a
HyperLogLog. The alert asks "more than a handful of addresses in an hour", so the
numbers that matter are small, where a set is exact and a HyperLogLog of a few hundred
bytes is off by several percent (its standard error is 1.04/sqrt(m) and it is least
accurate at small counts). Each account keeps at most ``MAX_ADDRESSES`` addresses with
the time each was last seen; an address unseen for ``account_address_window`` drops
out. The count is exact below the cap and reads as the cap (at least that many) above
it. At most ``TRACKED_PER_SLOT * top_accounts`` accounts are tracked, least recently
active forgotten first, so memory is bounded by accounts x ``MAX_ADDRESSES`` x an
address (45 characters at most): about 1.5 MB for the default ``top_accounts`` of 10.
Only the ``top_accounts`` accounts with the most addresses are exposed (a distinct count
cannot be summed into ``other``). Time is the exporter's clock when the line is read:
a log read from its beginning at start puts all of its addresses in the current window.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from mail_exporter.collectors.logs.domains import TopDomains
from mail_exporter.collectors.logs.labels import fit

MAX_ACCOUNT_CHARS = 254
"""The longest mailbox address SMTP carries (RFC 5321's 256-octet path less its brackets)."""
MAX_ADDRESS_CHARS = 45
"""The longest IPv6 address in text form (with an embedded IPv4 address)."""
MAX_ADDRESSES = 64
MAX_PENDING = 10_000
MAX_QUEUE_ID_CHARS = 24
"""As :mod:`.postfix` remembers queue IDs: longer text is no Postfix queue ID."""
TRACKED_PER_SLOT = 20
MESSAGES, RECIPIENTS = "messages", "recipients"


def account_counts(keep: int) -> TopDomains:
    """Counts keyed by (mta, account, ``messages`` or ``recipients``)."""
    return TopDomains(keep, MAX_ACCOUNT_CHARS)


class ClientAddresses:
    """Distinct client addresses per account seen within ``window`` seconds (see above)."""

    def __init__(
        self, keep: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.keep = keep
        self.window = window
        self.clock = clock
        self.max_accounts = TRACKED_PER_SLOT * keep
        self._seen: OrderedDict[str, dict[str, float]] = OrderedDict()

    def add(self, account: str, address: str) -> None:
        if not self.keep or not fit(account, MAX_ACCOUNT_CHARS):
            return
        if not fit(address, MAX_ADDRESS_CHARS):
            return
        now = self.clock()
        seen = self._seen
        addresses = seen.get(account)
        if addresses is None:
            if len(seen) >= self.max_accounts:
                seen.popitem(last=False)
            seen[account] = {address: now}  # a new account: no cap to check
            return
        seen.move_to_end(account)
        if address not in addresses and len(addresses) >= MAX_ADDRESSES:
            self._expire(addresses, now)
            if len(addresses) >= MAX_ADDRESSES:
                return  # at the cap: the count reads "at least MAX_ADDRESSES"
        addresses[address] = now

    def _expire(self, addresses: dict[str, float], now: float) -> None:
        oldest = now - self.window
        for address in [a for a, last in addresses.items() if last < oldest]:
            del addresses[address]

    def snapshot(self) -> dict[tuple[str, ...], int]:
        """``{(account,): distinct addresses}`` for the ``keep`` accounts with the most."""
        now = self.clock()
        for account in list(self._seen):
            addresses = self._seen[account]
            self._expire(addresses, now)
            if not addresses:
                del self._seen[account]
        ranked = sorted(self._seen.items(), key=lambda item: len(item[1]), reverse=True)
        return {(account,): len(addresses) for account, addresses in ranked[: self.keep]}


class PendingAccounts:
    """Postfix: the account of each queue ID between smtpd's line and qmgr's first sight."""

    def __init__(self) -> None:
        self._accounts: OrderedDict[str, str] = OrderedDict()

    def put(self, queue_id: str, account: str) -> None:
        """Held cut short: a name one character too long still counts as ``other``."""
        if len(queue_id) > MAX_QUEUE_ID_CHARS:
            return
        accounts = self._accounts
        accounts[queue_id] = account[: MAX_ACCOUNT_CHARS + 1]
        if len(accounts) > MAX_PENDING:
            accounts.popitem(last=False)

    def take(self, queue_id: str) -> str | None:
        return self._accounts.pop(queue_id, None) if self._accounts else None
