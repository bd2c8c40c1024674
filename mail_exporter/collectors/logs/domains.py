"""Counts by mail domain with a hard cap: the busiest domains by name, the rest as ``other``.

Counters must only go up, so a domain is never folded into ``other`` after the fact:
a domain is *promoted* to a series of its own when a slot is free (the first ``keep``
domains seen take the free slots), and from then on its traffic counts under its name;
traffic of every other domain counts as ``other`` at the moment it happens. Every
``REBALANCE_EVERY`` events the recent volume of each domain (a decaying count, kept
for at most ``CANDIDATES_PER_SLOT * keep`` domains) is compared: a domain with more
than twice the recent volume of the quietest promoted one takes its slot, and the
demoted domain's series ends (it disappears from the output; ``rate()`` over it stays
right). So a flood of random domains costs bounded memory and at most ``keep`` series.
Of promoted domains tied at the lowest volume, the one promoted first is demoted, so the
same log gives the same series in every run.

A domain that does not :func:`~.labels.fit` (longer than DNS allows, or with control
characters) counts as ``other`` at once and is not remembered: at most
``(CANDIDATES_PER_SLOT * keep + REBALANCE_EVERY) * MAX_DOMAIN_CHARS`` characters of
domain names are held, 115,000 for the default ``keep`` of 10.
"""

from __future__ import annotations

from collections import defaultdict

from mail_exporter.collectors.logs.labels import MAX_DOMAIN_CHARS, OTHER, fit

REBALANCE_EVERY = 256
CANDIDATES_PER_SLOT = 20
DECAY = 0.9
"""Recent volume is multiplied by this at each rebalance: a half-life of ~1,700 events."""
MARGIN = 2.0


class TopDomains:
    """Counts keyed by (mta, domain, *more): ``domain`` is a promoted domain or ``other``.

    ``amount`` weighs an event (recipients of a message); names longer than ``max_chars``
    count as ``other`` (:class:`~.senders.Senders` keeps account names the same way)."""

    def __init__(self, keep: int, max_chars: int = MAX_DOMAIN_CHARS) -> None:
        self.keep = keep
        self.max_chars = max_chars
        self.counts: defaultdict[tuple[str, ...], int] = defaultdict(int)
        # In promotion order (a dict, not a set): of promoted domains tied at the lowest
        # volume, the one promoted first gives its slot, in every process. A set's order
        # follows the string hash, which Python seeds anew in each process.
        self._promoted: dict[str, None] = {}
        self._volume: dict[str, float] = {}
        self._events = 0

    def add(self, mta: str, domain: str, *more: str, amount: int = 1) -> None:
        if not self.keep:
            return
        if not fit(domain, self.max_chars):
            self.counts[(mta, OTHER, *more)] += amount
            return
        volume = self._volume
        volume[domain] = volume.get(domain, 0.0) + amount
        # One membership test where most events (a promoted domain, or ``other`` once the
        # slots are full) need no second one.
        promoted = self._promoted
        if domain not in promoted:
            if len(promoted) < self.keep:
                promoted[domain] = None
            else:
                domain = OTHER
        self.counts[(mta, domain, *more)] += amount
        events = self._events = self._events + 1
        if not events % REBALANCE_EVERY:
            self._rebalance()

    def _rebalance(self) -> None:
        # Built anew, the decayed volumes cost half what updating each in place does.
        volume = self._volume = {domain: amount * DECAY for domain, amount in self._volume.items()}
        ranked = sorted(volume, key=volume.__getitem__, reverse=True)
        for domain in ranked[: self.keep]:
            if domain in self._promoted:
                continue
            weakest = min(self._promoted, key=lambda name: volume.get(name, 0.0))
            if volume[domain] <= MARGIN * volume.get(weakest, 0.0):
                break  # ranked in order: no later candidate can pass either
            self._demote(weakest)
            self._promoted[domain] = None
        capacity = CANDIDATES_PER_SLOT * self.keep
        if len(volume) > capacity:
            kept = {domain: volume[domain] for domain in ranked[:capacity]}
            for domain in self._promoted:
                if domain in volume:
                    kept[domain] = volume[domain]
            self._volume = kept

    def _demote(self, domain: str) -> None:
        self._promoted.pop(domain, None)
        for key in [key for key in self.counts if key[1] == domain]:
            del self.counts[key]

    def snapshot(self) -> dict[tuple[str, ...], int]:
        return dict(self.counts)
