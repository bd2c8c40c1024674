"""Round-trip routes in the background: a task per route, a task per attempt, and the
bookkeeping of messages still on their way.

Each attempt, on the route's ``interval`` (the first one within a few seconds of start):

1. logs in to the mailbox first, so that a broken receive side sends nothing that could
   not be collected (stage ``receive`` / ``receive_auth``);
2. submits a message with a new token (``send`` / ``send_auth``); the clock starts here;
3. looks for the token until the route's ``timeout`` after the start of sending: seen in
   time in the mailbox is success, in ``junk_mailbox`` the junk outcome, not seen is
   ``timeout``. Seen after the deadline counts as ``timeout`` and as a late arrival.
   The pauses between looks start at 25 ms and double up to ``poll_interval``: local
   delivery takes tens of milliseconds, and Dovecot holds back IDLE notifications for
   half a second, so early looks keep the measured time close to the real one;
4. cleans up in the same session: its own message (and any copy of it), and earlier
   messages of this route whose token this process issued: those declared lost (each
   counted once as a late arrival, never as lost again), and those of attempts cut short
   or whose cleanup failed. A message of an attempt still waiting is left to it.

A leg with ``method: graph`` does the same over Microsoft Graph (:mod:`.graph`): the
mailbox is "opened" with a first request, ``sendMail`` submits, each look is a listing,
and deletion goes by message id under the same ownership rule below. Its token comes from
the exporter's broker, which the runner is given.

Attempts run in their own tasks, so a slow one never delays the next, and every network
wait is bounded (module timeouts, the route's deadline), so attempts cannot pile up
without limit. Each route has its own tasks: one route's trouble never stalls another.

Ownership is the token, not the headers: anyone who can send mail to the mailbox can
write our headers, so a message is the exporter's (counted, deleted) only if this process
issued its token and has not seen it deleted yet; the newest ``ISSUED_MEMORY`` such tokens
per route are remembered. Any other message with the route's headers is left where it
is, and their number is logged when it changes: forgeries, another exporter's messages,
and leftovers of an earlier run of this one. A restart forgets the tokens; telling an
earlier run's messages from forgeries would need a secret kept across runs, whereas the
few probe messages a crash can leave are harmless and easy to delete by hand. A late
arrival whose token was forgotten stays too.

A reload leaves a route whose settings (and modules) are unchanged alone: its schedule
keeps its beat, its attempts in flight finish and are recorded, its totals stay. A new
``site`` alone is no change: it labels only the route's info series, so the route takes
it and runs on, its totals with it (its series, which carry no site, go on as well). A
changed route starts afresh, and its attempts in flight are cancelled (they run with
settings no longer configured); the new runner takes over the route's memory of tokens,
so the messages those attempts leave behind are removed by its next cleanup, not an
interval past the timeout, and a message declared lost before the reload still counts
as late when it arrives. A removed route's attempts are cancelled and their messages
stay in the mailbox (no route is configured to log in there any longer); so do those of
attempts cut short by shutdown, whose tokens the next start does not know.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from email.message import EmailMessage

from prometheus_client.core import Metric

from mail_exporter.config.probes import ModuleConfig
from mail_exporter.config.root import Config
from mail_exporter.config.roundtrip import (
    GraphLeg,
    GraphReceive,
    GraphSend,
    RoundTripReceive,
    RoundTripRoute,
    RoundTripSend,
)
from mail_exporter.printable import printable
from mail_exporter.probes import ProbeMemory
from mail_exporter.roundtrip.families import roundtrip_families
from mail_exporter.roundtrip.graph import GraphMailbox, send_mail
from mail_exporter.roundtrip.imap_mailbox import ImapMailbox, cleanup_folder
from mail_exporter.roundtrip.mailbox import Found, Mailbox
from mail_exporter.roundtrip.message import build_message, hop_delays, new_token
from mail_exporter.roundtrip.outcome import Outcome, RoundTripFailure, RouteStats, Stage
from mail_exporter.roundtrip.pop3_mailbox import HeaderCache, Pop3Mailbox
from mail_exporter.roundtrip.send import submit
from mail_exporter.targets import parse_address

logger = logging.getLogger(__name__)

ISSUED_MEMORY = 5000
"""Most tokens per route remembered after their attempt, while their message may exist."""
FIRST_PAUSE_SECONDS = 0.025
"""The first pause between looks; it doubles up to ``poll_interval``."""
FIRST_RUN_SPREAD_SECONDS = 5.0
"""The first attempt of each route starts at a random moment within this (or the interval)."""


@dataclass
class _Attempt:
    token: str
    stage: Stage = Stage.RECEIVE
    """The step in progress, for counting an unexpected error where it happened."""
    submitted: bool = False
    """Submission has begun: a message with the token may exist from now on."""
    lost: bool = False
    """Not seen within the route's timeout: when it turns up, it is a late arrival."""
    collected: bool = False
    """The message was seen and deleted: nothing of it is left to look for."""


class RouteRunner:
    """One route: its schedule, its attempts, its totals and its messages on their way."""

    def __init__(
        self,
        route: RoundTripRoute,
        send_module: ModuleConfig | None,
        receive_module: ModuleConfig | None,
        memory: ProbeMemory | None = None,
    ) -> None:
        """``send_module`` and ``receive_module`` are those the legs name (None for a
        Graph leg); ``memory`` is the exporter's (none: one of its own)."""
        self.route = route
        self.send_module = send_module
        self.receive_module = receive_module
        self.memory = memory or ProbeMemory()
        """The exporter's: OAuth2 logins and Graph legs take their tokens from its broker."""
        self.stats = RouteStats()
        self._pending: set[str] = set()
        """Tokens of attempts still running."""
        self._issued: OrderedDict[str, bool] = OrderedDict()
        """Tokens whose attempt is over but whose message may still come or stay: True
        while declared lost (its arrival is late), False once counted or if cut short."""
        self._unknown = 0
        """Messages with this route's headers and a token not issued here, at the last cleanup."""
        self._pop3_headers: HeaderCache = {}
        self._cleanup_folder = (  # Graph deletes each message by its id: it needs none
            "" if isinstance(route.receive, GraphLeg) else cleanup_folder(route.receive)
        )
        self._cleanup_lock = asyncio.Lock()
        """One cleanup at a time: overlapping attempts share the cleanup folder."""
        self._task: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[Outcome]] = set()

    def same_as(
        self,
        route: RoundTripRoute,
        send_module: ModuleConfig | None,
        receive_module: ModuleConfig | None,
    ) -> bool:
        """Whether ``route`` runs as this one does: its ``site`` aside, which only labels
        the route's info series (:meth:`relabel`)."""
        return (_settings(route), send_module, receive_module) == (
            _settings(self.route),
            self.send_module,
            self.receive_module,
        )

    def relabel(self, route: RoundTripRoute) -> None:
        """Take ``route``'s site; every other setting of it is this route's already."""
        self.route = route

    def take_over(self, previous: RouteRunner) -> None:
        """Share ``previous``'s memory of the route's messages (the tokens of its attempts
        in flight and of those over), for a route whose settings changed."""
        self._pending = previous._pending
        self._issued = previous._issued

    def start(self) -> None:
        self._task = asyncio.create_task(self._schedule(), name=f"roundtrip {self.route.name}")

    def stop(self) -> None:
        for task in [self._task, *self._attempts]:
            if task is not None:
                task.cancel()
        self._task = None

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        interval = float(self.route.interval)
        await asyncio.sleep(random.uniform(0, min(interval, FIRST_RUN_SPREAD_SECONDS)))
        beat = loop.time()
        while True:
            attempt = asyncio.create_task(self.run_once(), name=f"attempt {self.route.name}")
            self._attempts.add(attempt)
            attempt.add_done_callback(self._attempts.discard)
            beat += interval
            await asyncio.sleep(max(0.0, beat - loop.time()))

    async def run_once(self) -> Outcome:
        """One attempt, recorded in :attr:`stats`; never raises (but can be cancelled)."""
        attempt = _Attempt(new_token())
        self._pending.add(attempt.token)
        try:
            outcome = await self._attempt(attempt)
        except Exception as error:  # a bug must cost one attempt, never the route
            logger.exception("route %s: attempt failed unexpectedly", self.route.name)
            detail = f"unexpected error: {printable(repr(error))}"
            outcome = Outcome(failure=attempt.stage, detail=detail)
        finally:  # cancelled too (reload, shutdown): its message is still ours to remove
            self._pending.discard(attempt.token)
            if attempt.submitted and not attempt.collected:
                self._remember(attempt.token, attempt.lost)
        self.stats.record(outcome)
        return outcome

    async def _attempt(self, attempt: _Attempt) -> Outcome:
        try:
            mailbox = await self._open_mailbox()
        except RoundTripFailure as failure:
            return self._failed(failure)
        try:
            return await self._send_and_receive(mailbox, attempt)
        finally:
            await mailbox.close()

    async def _open_mailbox(self) -> Mailbox:
        receive, module = self.route.receive, self.receive_module
        if isinstance(receive, GraphReceive):
            budget = float(self.route.timeout)
            return await GraphMailbox.open(
                receive, self.memory.tokens, budget, self.stats.count_throttled
            )
        assert module is not None, "a route reads with its module unless it reads with Graph"
        address = parse_address(receive.address)
        if module.protocol == "pop3":
            return await Pop3Mailbox.open(address, module, self._pop3_headers, self.memory)
        return await ImapMailbox.open(address, module, receive, self._cleanup_folder, self.memory)

    async def _submit(self, message: EmailMessage) -> None:
        send, module = self.route.send, self.send_module
        if isinstance(send, GraphSend):
            budget = float(self.route.timeout)
            await send_mail(send, message, self.memory.tokens, budget, self.stats.count_throttled)
            return
        assert module is not None, "a route sends with its module unless it sends with Graph"
        await submit(parse_address(send.address), module, message, send.from_, send.to, self.memory)

    async def _send_and_receive(self, mailbox: Mailbox, attempt: _Attempt) -> Outcome:
        route, token = self.route, attempt.token
        attempt.stage = Stage.SEND
        attempt.submitted = True
        sent = time.time()
        message = build_message(route.name, route.send.sender, route.send.to, token, sent)
        found: Found | None = None
        started = time.monotonic()  # the clock starts with the connection to the server
        try:
            await self._submit(message)
        except RoundTripFailure as failure:
            outcome = self._failed(failure)
        else:
            attempt.stage = Stage.RECEIVE
            try:
                found = await self._await_arrival(mailbox, token, started + float(route.timeout))
            except RoundTripFailure as failure:  # the session is gone: no cleanup this time
                return self._failed(failure)
            outcome = self._judge(attempt, found, started, sent)
        attempt.stage = Stage.CLEANUP
        return await self._clean_up(mailbox, attempt, found, outcome)

    async def _await_arrival(self, mailbox: Mailbox, token: str, deadline: float) -> Found | None:
        """Look until ``deadline`` (monotonic); each look and wait is bounded on its own."""
        poll = float(self.route.receive.poll_interval)
        pause = FIRST_PAUSE_SECONDS
        while True:
            found = await mailbox.find(token)
            remaining = deadline - time.monotonic()
            if found is not None or remaining <= 0:
                return found
            await mailbox.wait(min(pause, poll, remaining))
            pause *= 2

    def _judge(
        self, attempt: _Attempt, found: Found | None, started: float, sent: float
    ) -> Outcome:
        name, timeout, token = self.route.name, float(self.route.timeout), attempt.token
        if found is None:
            logger.warning("route %s: message %s not seen within %gs", name, token, timeout)
            attempt.lost = True
            return Outcome(failure=Stage.TIMEOUT, detail=f"sent, not seen within {timeout:g}s")
        duration = found.seen - started
        if duration > timeout:
            logger.warning("route %s: message %s seen late, after %.3fs", name, token, duration)
            detail = f"sent, seen only after {duration:.3f}s (timeout {timeout:g}s)"
            return Outcome(failure=Stage.TIMEOUT, detail=detail, late=1)
        hops = hop_delays(sent, found.message.received)
        if found.junk:
            logger.warning("route %s: message %s delivered to junk", name, token)
            return Outcome(junk=True, duration=duration, hops=hops)
        logger.debug("route %s: message %s seen after %.3fs", name, token, duration)
        return Outcome(duration=duration, hops=hops)

    async def _clean_up(
        self, mailbox: Mailbox, attempt: _Attempt, own: Found | None, outcome: Outcome
    ) -> Outcome:
        late = 0
        try:
            async with self._cleanup_lock:
                tagged = await mailbox.tagged(self.route.name)
                doomed, late = self._doomed(attempt.token, own, tagged)
                if doomed:
                    await mailbox.delete(doomed)
        except RoundTripFailure as failure:
            logger.warning("route %s: cleanup failed: %s", self.route.name, failure.detail)
            return replace(outcome, late=outcome.late + late, cleanup_failed=True)
        for item in doomed:
            self._issued.pop(item.message.token, None)
        attempt.collected = own is not None
        return replace(outcome, late=outcome.late + late)

    def _doomed(
        self, token: str, own: Found | None, tagged: list[Found]
    ) -> tuple[list[Found], int]:
        """Which of the route's messages to delete, and how many were late arrivals."""
        doomed = [own] if own is not None else []
        late = unknown = 0
        for item in tagged:
            other = item.message.token
            if other == token:  # ``own``, or a copy of it (delivered twice, or also in junk)
                if own is not None and (item.folder, item.uid) != (own.folder, own.uid):
                    doomed.append(item)
                continue  # not seen in time: left for the next attempt to count late
            if other in self._pending:  # an attempt still waiting for it
                continue
            declared_lost = self._issued.get(other)
            if declared_lost is None:
                unknown += 1
                continue
            if declared_lost:
                late += 1
                self._issued[other] = False
                logger.info("route %s: lost message %s arrived late", self.route.name, other)
            doomed.append(item)
        self._note_unknown(unknown)
        return doomed, late

    def _note_unknown(self, count: int) -> None:
        """Log the messages that are not ours when their number changes, not every time."""
        if count and count != self._unknown:
            logger.warning(
                "route %s: %d messages carry this route's headers but a token this process "
                "did not issue (an earlier run's, another exporter's or forged): left alone",
                self.route.name,
                count,
            )
        self._unknown = count

    def _remember(self, token: str, declared_lost: bool) -> None:
        self._issued[token] = declared_lost
        while len(self._issued) > ISSUED_MEMORY:
            self._issued.popitem(last=False)

    def _failed(self, failure: RoundTripFailure) -> Outcome:
        logger.warning(
            "route %s: %s failed: %s", self.route.name, failure.stage.value, failure.detail
        )
        return Outcome(failure=failure.stage, detail=failure.detail)


def _settings(route: RoundTripRoute) -> RoundTripRoute:
    """The route without its site, for telling a changed route from a relabelled one."""
    return route.model_copy(update={"site": ""})


def _module(
    config: Config, leg: RoundTripSend | GraphLeg | RoundTripReceive
) -> ModuleConfig | None:
    """The module a leg names; None for a Graph leg, which has none."""
    return None if isinstance(leg, GraphLeg) else config.modules[leg.module]


class RoundTripRunner:
    """Every configured route; swap configs with :meth:`apply`. The routes log in with
    tokens from ``memory``'s broker (the exporter's, shared with the probes)."""

    def __init__(self, memory: ProbeMemory | None = None) -> None:
        self.routes: dict[str, RouteRunner] = {}
        self.memory = memory or ProbeMemory()

    def apply(self, config: Config) -> None:
        """Run ``config``'s routes. An unchanged route keeps running with its attempts in
        flight and its totals; a changed one restarts with the memory of its messages."""
        previous, routes = self.routes, {}
        for route in config.roundtrip:
            send, receive = _module(config, route.send), _module(config, route.receive)
            runner = previous.pop(route.name, None)
            if runner is None or not runner.same_as(route, send, receive):
                changed, runner = runner, RouteRunner(route, send, receive, self.memory)
                if changed is not None:
                    changed.stop()
                    runner.take_over(changed)
                runner.start()
            else:
                runner.relabel(route)
            routes[route.name] = runner
        self.routes = routes  # whole, for a scrape reading it from another thread
        for gone in previous.values():
            gone.stop()
        if config.roundtrip:
            logger.info("running %d round-trip routes", len(self.routes))

    def stop(self) -> None:
        for runner in self.routes.values():
            runner.stop()

    def collect(self) -> Iterator[Metric]:
        """The round-trip families (none without routes); safe from a worker thread."""
        routes = self.routes
        stats = {name: runner.stats for name, runner in routes.items()}
        return iter(roundtrip_families(stats, {n: r.route.site for n, r in routes.items()}))
