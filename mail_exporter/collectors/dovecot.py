"""The Dovecot mail store: every user's quota, and who is logged in, through ``doveadm``.

Runs ``doveadm -f tab quota get -A`` and ``doveadm -f tab who`` on the section's own
``interval`` (:class:`~mail_exporter.collectors.background.IntervalWork`): ``quota get
-A`` opens every user's mailboxes, which takes time on a large store, so no scrape but
the first waits for it. Decisions:

* A site has tens of thousands of users, so users never become series of their own but
  the ``top_users`` fullest ones: ``mail_dovecot_quota_users{band}`` counts every user
  (exactly) by the highest usage ratio of any resource that has a limit: ``under_80``,
  ``80_95``, ``95_100``, ``over`` (at or past the limit: the next message is refused)
  and ``unlimited`` (no limit on any resource). All five are always there, 0 included.
* A ratio is usage / limit of one resource (STORAGE, in KiB as doveadm prints it and
  exported in bytes; MESSAGE). A limit of ``-`` or 0 is no limit (Dovecot's own reading).
  A user with several quota roots gets, per resource, the root with the highest ratio.
* The top users are ordered by that highest ratio, then by name, so the same users stay
  in from one run to the next when ratios tie. A user name becomes a label only when it
  is printable and at most :data:`MAX_USER_CHARS` long; another is shown as
  ``unprintable:`` and a digest of it, still one series per user.
* The protocol of ``doveadm who`` (imap, pop3, submission, ...) comes from Dovecot's
  own service names; one that is not short and printable counts as ``other``.
* The output is bounded (:data:`MAX_QUOTA_OUTPUT_BYTES`, :data:`MAX_WHO_OUTPUT_BYTES`)
  and each run by the section's ``timeout``: doveadm that hangs, says too much, exits
  with a failure or is missing fails the run, which the collector reports (success 0)
  with doveadm's words, until a later run works. Nothing of a failed run is exported.

Sample output::

    mail_dovecot_quota_users{band="over"} 3.0
    mail_dovecot_quota_users{band="95_100"} 12.0
    mail_dovecot_user_quota_ratio{resource="storage",user="alice@example.org"} 1.02
    mail_dovecot_user_quota_usage_bytes{user="alice@example.org"} 1.0695e+09
    mail_dovecot_users{protocol="imap"} 412.0
    mail_dovecot_sessions{protocol="imap"} 977.0
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import Metric
from pydantic import Field

from mail_exporter.collectors.background import IntervalWork, Runner
from mail_exporter.collectors.base import (
    COMMAND_TIME_SHARE,
    Collector,
    CollectorError,
    register_collector,
)
from mail_exporter.collectors.commands import run_bounded
from mail_exporter.config.collectors import CollectorSection
from mail_exporter.config.fields import Duration
from mail_exporter.metric_spec import MetricSpec, as_is, families

logger = logging.getLogger(__name__)

MAX_QUOTA_OUTPUT_BYTES = 64 << 20
"""``quota get -A`` prints two lines of about 60 bytes per user: room for 50,000 users
with long names and several quota roots."""
MAX_WHO_OUTPUT_BYTES = 16 << 20
MAX_USER_CHARS = 256
MAX_PROTOCOL_CHARS = 32
OTHER = "other"
KIB = 1024

BANDS = ("under_80", "80_95", "95_100", "over", "unlimited")
RESOURCES = {"STORAGE": "storage", "MESSAGE": "messages"}


class DovecotConfig(CollectorSection):
    """Quota and logged-in users from ``doveadm``, on its own interval."""

    doveadm: str = Field(default="doveadm", min_length=1)
    config_file: Path | None = None  # doveadm -c: another instance's dovecot.conf
    top_users: int = Field(default=10, ge=1, le=1000)
    interval: Duration = Field(default="1m", validate_default=True)


@dataclass
class UserQuota:
    """A user's usage and limit per resource (the fullest quota root of each)."""

    name: str
    usage: dict[str, int] = field(default_factory=dict)
    limit: dict[str, int | None] = field(default_factory=dict)

    def ratio(self, resource: str) -> float | None:
        limit = self.limit.get(resource)
        return None if not limit else self.usage[resource] / limit

    @property
    def highest(self) -> float | None:
        ratios = [r for r in map(self.ratio, self.limit) if r is not None]
        return max(ratios) if ratios else None

    @property
    def band(self) -> str:
        highest = self.highest
        if highest is None:
            return "unlimited"
        if highest >= 1:
            return "over"
        return "95_100" if highest >= 0.95 else "80_95" if highest >= 0.8 else "under_80"

    def add(self, resource: str, usage: int, limit: int | None) -> None:
        """Another quota root's figures: kept when the resource has no limit yet, or a
        lower ratio (a limited root counts over an unlimited one)."""
        new = UserQuota(self.name, {resource: usage}, {resource: limit}).ratio(resource)
        old = self.ratio(resource) if resource in self.usage else None
        if resource not in self.usage or (new is not None and (old is None or new > old)):
            self.usage[resource], self.limit[resource] = usage, limit

    def figure(self, resource: str, of: str) -> float | None:
        value = (self.usage if of == "usage" else self.limit).get(resource)
        return None if value is None else value * (KIB if resource == "storage" else 1)


def _number(text: str) -> int | None:
    """doveadm's figure, or None for ``-`` (no limit)."""
    return None if text == "-" else int(text)


def parse_quota(output: str) -> list[UserQuota]:
    """Every user of ``doveadm -f tab quota get -A``, in the order printed."""
    lines = output.splitlines()
    if not lines:
        return []
    columns = {name.strip().lower(): index for index, name in enumerate(lines[0].split("\t"))}
    try:
        user, kind, value, limit = (columns[c] for c in ("username", "type", "value", "limit"))
    except KeyError:
        raise CollectorError(f"doveadm quota get: unexpected header {lines[0][:200]!r}") from None
    users: dict[str, UserQuota] = {}
    for number, line in enumerate(lines[1:], 2):
        fields = line.split("\t")
        if len(fields) < len(columns):
            raise CollectorError(f"doveadm quota get: line {number} has too few fields")
        resource = RESOURCES.get(fields[kind].upper())
        if resource is None:
            continue
        try:
            usage, cap = _number(fields[value]), _number(fields[limit])
        except ValueError:
            raise CollectorError(f"doveadm quota get: line {number}: not a number") from None
        quota = users.setdefault(fields[user], UserQuota(fields[user]))
        quota.add(resource, usage or 0, cap or None)
    return list(users.values())


def user_label(name: str) -> str:
    if len(name) <= MAX_USER_CHARS and name.isprintable() and name:
        return name
    return "unprintable:" + hashlib.sha256(name.encode(errors="surrogateescape")).hexdigest()[:16]


def parse_who(output: str) -> dict[str, tuple[int, int]]:
    """Users and sessions by protocol, from ``doveadm -f tab who`` (a line per user and
    protocol, its session count in ``#``)."""
    lines = output.splitlines()
    if not lines:
        return {}
    columns = {name.strip().lower(): index for index, name in enumerate(lines[0].split("\t"))}
    try:
        count, protocol = columns["#"], columns["proto"]
    except KeyError:
        raise CollectorError(f"doveadm who: unexpected header {lines[0][:200]!r}") from None
    found: dict[str, tuple[int, int]] = {}
    for number, line in enumerate(lines[1:], 2):
        fields = line.split("\t")
        try:
            sessions = int(fields[count])
            name = fields[protocol]
        except (IndexError, ValueError):
            raise CollectorError(f"doveadm who: line {number} is not understood") from None
        if not (len(name) <= MAX_PROTOCOL_CHARS and name.isprintable() and name):
            name = OTHER
        users, total = found.get(name, (0, 0))
        found[name] = (users + 1, total + sessions)
    return found


BAND_USERS = MetricSpec(
    "mail_dovecot_quota_users", "Users by the highest usage ratio of any limited quota "
    "resource (band: under_80, 80_95, 95_100, over = at or past the limit, unlimited).",
    "gauge", ("band",), as_is,
)  # fmt: skip
USER_RATIO = MetricSpec(
    "mail_dovecot_user_quota_ratio", "Usage / limit of one quota resource (storage, messages), "
    "for the top_users fullest users only.", "gauge", ("user", "resource"), as_is,
)  # fmt: skip
USER = ("user",)
USER_FIGURES = (
    MetricSpec("mail_dovecot_user_quota_usage_bytes", "Mail stored, counted against the quota "
        "(top users only).", "gauge", USER, lambda q: q.figure("storage", "usage")),
    MetricSpec("mail_dovecot_user_quota_limit_bytes", "Storage quota limit (top users only; "
        "absent when unlimited).", "gauge", USER, lambda q: q.figure("storage", "limit")),
    MetricSpec("mail_dovecot_user_quota_messages", "Messages counted against the quota (top "
        "users only).", "gauge", USER, lambda q: q.figure("messages", "usage")),
    MetricSpec("mail_dovecot_user_quota_limit_messages", "Message count quota limit (top users "
        "only; absent when unlimited).", "gauge", USER, lambda q: q.figure("messages", "limit")),
)  # fmt: skip
WHO = (
    MetricSpec("mail_dovecot_users", "Distinct users logged in, by protocol (doveadm who).",
        "gauge", ("protocol",), lambda counts: counts[0]),
    MetricSpec("mail_dovecot_sessions", "Sessions (connections) logged in, by protocol "
        "(doveadm who).", "gauge", ("protocol",), lambda counts: counts[1]),
)  # fmt: skip


@dataclass(frozen=True)
class Reading:
    bands: dict[str, int]
    top: list[UserQuota]
    who: dict[str, tuple[int, int]]


def read_quota(
    users: Sequence[UserQuota], top_users: int
) -> tuple[dict[str, int], list[UserQuota]]:
    """The band counts and the ``top_users`` fullest users (limited ones only)."""
    bands = dict.fromkeys(BANDS, 0)
    for user in users:
        bands[user.band] += 1
    limited = [u for u in users if u.highest is not None]
    limited.sort(key=lambda u: (-(u.highest or 0), u.name))
    return bands, limited[:top_users]


def reading_families(reading: Reading) -> list[Metric]:
    ratios = [
        ((user_label(user.name), resource), user.ratio(resource))
        for user in reading.top
        for resource in sorted(user.limit)
    ]
    return [
        BAND_USERS.family([((band,), count) for band, count in reading.bands.items()]),
        *families([USER_RATIO], ratios),
        *families(USER_FIGURES, [((user_label(u.name),), u) for u in reading.top]),
        *families(WHO, sorted(((protocol,), c) for protocol, c in reading.who.items())),
    ]


class DovecotCollector:
    """Runs doveadm every ``interval``; scrapes get the last run's figures at once."""

    def __init__(
        self,
        settings: DovecotConfig,
        clock: Callable[[], float] = time.monotonic,
        background: Runner | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._runs = IntervalWork(
            "doveadm", float(settings.interval), self._refresh, clock, background
        )
        self._state: Reading | str | None = None

    def collect(self) -> Iterable[Metric]:
        self._runs.tick()
        state = self._state
        assert state is not None  # the first tick ran doveadm in this thread
        if isinstance(state, str):
            raise CollectorError(state)
        return reading_families(state)

    def close(self) -> None:
        self._runs.close()

    def _refresh(self) -> None:
        last = self._state
        try:
            self._state = self._run()
        except CollectorError as error:
            self._state = str(error)
        except Exception as error:  # in a background thread nobody else would see it
            logger.exception("dovecot: reading doveadm's answer failed")
            self._state = f"reading doveadm's answer failed: {error!r}"
        failed, was_failing = isinstance(self._state, str), isinstance(last, str)
        if failed and self._state != last:
            logger.error("dovecot: %s; reporting the collector as failed", self._state)
        elif was_failing and not failed:
            logger.info("dovecot: doveadm works again")

    def _run(self) -> Reading:
        deadline = self.clock() + float(self.settings.timeout) * COMMAND_TIME_SHARE
        quota = self._doveadm(["quota", "get", "-A"], deadline, MAX_QUOTA_OUTPUT_BYTES)
        bands, top = read_quota(parse_quota(quota), self.settings.top_users)
        who = parse_who(self._doveadm(["who"], deadline, MAX_WHO_OUTPUT_BYTES))
        return Reading(bands, top, who)

    def _doveadm(self, arguments: list[str], deadline: float, max_bytes: int) -> str:
        remaining = deadline - self.clock()
        if remaining <= 0:
            raise CollectorError(
                f"no time left for doveadm {' '.join(arguments)} within the "
                f"{float(self.settings.timeout):g}s timeout: raise collectors.dovecot.timeout"
            )
        config = ["-c", str(self.settings.config_file)] if self.settings.config_file else []
        command = [self.settings.doveadm, *config, "-f", "tab", *arguments]
        return run_bounded(command, remaining, max_bytes)


@register_collector(
    "dovecot",
    "Dovecot users' quota and logged-in sessions from doveadm, on its own interval",
    DovecotConfig,
)
def _dovecot(section: DovecotConfig, previous: Collector | None) -> DovecotCollector:
    return DovecotCollector(section)
