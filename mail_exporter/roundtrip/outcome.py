"""What a round trip ends in: the fixed set of failure stages, one run's outcome, a route's totals.

Stages (label ``stage`` of ``mail_roundtrip_failures_total``), all present from the start:

- ``send``: the submission failed: connection, TLS, a refused MAIL/RCPT/DATA, a timeout;
- ``send_auth``: the submission server refused the login (or offers no usable mechanism),
  or no OAuth2 access token could be had for it (what a probe counts as ``token``: the
  stages stay as they were);
- ``receive``: the mailbox could not be read: connection, TLS, a missing mailbox, a
  dropped session, a timeout;
- ``receive_auth``: the mailbox server refused the login, or no access token for it;
- ``timeout``: the message was sent but not seen within the route's ``timeout``;
- ``cleanup``: our messages could not be deleted (the attempt itself may still have passed).

A Graph leg's throttled requests (:mod:`mail_exporter.roundtrip.graph`) are counted on
their own (``mail_roundtrip_throttled_total``): waited out, they cost time, not the attempt;
not, they fail its stage.

A message that lands in ``junk_mailbox`` is no failure of the mail system to carry it, so it
has its own counter (``mail_roundtrip_junk_total``) and sets ``mail_roundtrip_success`` to 0.

A failure carries its detail (``connect: Connection refused``, the server's reply) beside its
stage: the stage is a label, the detail is for the log and the status page, which show what
went wrong and not only where. A server chooses its replies: the page bounds the detail,
escapes what is not printable and then escapes it as HTML.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from mail_exporter.latency import LatencyHistogram

ROUNDTRIP_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                                        300.0, 600.0, 1800.0, 3600.0)  # fmt: skip
"""From sub-second loopback deliveries to the hour after which admins call mail lost."""


class Stage(StrEnum):
    """Where a round trip failed (label values)."""

    SEND = "send"
    SEND_AUTH = "send_auth"
    RECEIVE = "receive"
    RECEIVE_AUTH = "receive_auth"
    TIMEOUT = "timeout"
    CLEANUP = "cleanup"


class RoundTripFailure(Exception):
    """Raised inside a round trip to stop a step, with the stage to count it under."""

    def __init__(self, stage: Stage, detail: str) -> None:
        super().__init__(detail)
        self.stage = stage
        self.detail = detail


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended.

    ``failure`` is ``None`` when the message was seen in time, in the mailbox or (``junk``)
    in the junk mailbox; ``duration`` and ``hops`` are then set. Otherwise ``detail`` says
    what failed at that stage. ``late`` counts earlier messages declared lost that this
    attempt found; ``cleanup_failed`` is counted on top of whatever else happened.
    """

    failure: Stage | None = None
    detail: str = ""
    junk: bool = False
    duration: float | None = None
    hops: Mapping[str, float] = field(default_factory=dict)
    late: int = 0
    cleanup_failed: bool = False

    @property
    def success(self) -> bool:
        return self.failure is None and not self.junk


class RouteStats:
    """A route's running totals, read by the metrics at scrape time (from another thread).

    Dicts are either fixed in their keys or replaced whole, and the histogram updates so
    that a reader never sees it half-done.
    """

    def __init__(self) -> None:
        self.success: bool | None = None
        self.last_failure: str | None = None  # the stage of the last attempt that failed
        self.last_failure_detail = ""
        self.last_attempt: float | None = None
        """When the last attempt ended (wall clock)."""
        self.down_since: float | None = None
        """When the first of the failed attempts since the last success ended."""
        self.duration: float | None = None
        self.last_success: float | None = None
        self.failures: dict[str, float] = {stage.value: 0.0 for stage in Stage}
        self.late = 0.0
        self.junk = 0.0
        self.throttled = 0.0
        self.hops: Mapping[str, float] = {}
        self.delivery = LatencyHistogram(ROUNDTRIP_BUCKETS)

    def count_throttled(self) -> None:
        """One request of a Graph leg answered 429 or 503 (the attempt goes on)."""
        self.throttled += 1.0

    def record(self, outcome: Outcome) -> None:
        now = time.time()
        if outcome.failure is not None:
            self.failures[outcome.failure.value] += 1.0
            self.last_failure, self.last_failure_detail = outcome.failure.value, outcome.detail
        else:
            self.last_failure, self.last_failure_detail = None, ""
        if outcome.cleanup_failed:
            self.failures[Stage.CLEANUP.value] += 1.0
        self.late += outcome.late
        if outcome.duration is not None:
            self.delivery.observe(outcome.duration)
            self.hops = dict(outcome.hops)
        if outcome.junk:
            self.junk += 1.0
        elif outcome.success:
            self.duration = outcome.duration
            self.last_success = now
        self.success = outcome.success
        self.last_attempt = now
        if outcome.success:
            self.down_since = None
        elif self.down_since is None:
            self.down_since = now
