"""The exporter's one :class:`TokenBroker`: access tokens cached and shared per source.

Every probe, ``/probe`` request and round trip that logs in with ``auth.oauth2`` asks
the broker the exporter holds (``ProbeMemory.tokens``) with its deadline::

    token = await broker.token(module.auth.oauth2, deadline)   # AccessToken, or TokenError

- A token is kept until :data:`EXPIRY_MARGIN_SECONDS` before it expires (a login that
  starts then still finishes in time), and for ``token_file`` while the file is unchanged;
  one that lives shorter than the margin is used once and not kept.
- Sources are the same when their settings and secrets are (:attr:`OAuth2Config.identity`):
  modules that share one share its tokens.
- Requests for one source while a fetch is running wait for that fetch: N probes at once
  cost one request to the token server.
- A fetch is bounded by ``fetch_seconds`` (:data:`FETCH_SECONDS`) on its own, whoever
  waits for it; each caller waits until its own deadline at most and then gets a
  TokenError, while the fetch goes on for the others (and the next caller) until its
  bound. A hanging token server never holds a probe past its deadline.
- A failure is not kept: the next request fetches again. Each fetch is counted, and each
  failure by its reason.

Its metrics, rendered at scrape (``source`` is the source's name, the module it belongs
to; :meth:`TokenBroker.apply` keeps the sources of the running config, each from the
start, at 0)::

    mail_oauth2_token_fetches_total{source="m365_imap"} 3
    mail_oauth2_token_fetch_failures_total{source="m365_imap",reason="denied"} 1
    mail_oauth2_token_expiry_timestamp_seconds{source="m365_imap"} 1.7e+09

The values it learns (access tokens, rotated refresh tokens) are secrets too:
:meth:`TokenBroker.secrets` lists those in use, for the log redaction.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.core import Metric

from mail_exporter.config.oauth2 import OAuth2Config
from mail_exporter.metric_spec import MetricSpec, as_is
from mail_exporter.oauth2.sources import SourceState, fetch_token, unchanged
from mail_exporter.oauth2.token import AccessToken, TokenError, TokenFailure

logger = logging.getLogger(__name__)

EXPIRY_MARGIN_SECONDS: Final = 60.0
FETCH_SECONDS: Final = 30.0
"""Longest one fetch may take (an HTTP request, a command), whoever waits for it."""

EXPIRY = MetricSpec(
    "mail_oauth2_token_expiry_timestamp_seconds",
    "When the access token of each OAuth2 token source expires (absent when unknown).",
    "gauge", ("source",), as_is,
)  # fmt: skip
FETCHES = MetricSpec(
    "mail_oauth2_token_fetches_total",
    "Access tokens fetched (requests, commands run, files read) per token source.",
    "counter", ("source",), as_is,
)  # fmt: skip
FAILURES = MetricSpec(
    "mail_oauth2_token_fetch_failures_total",
    "Failed token fetches per token source and reason: http, timeout, invalid_response, "
    "denied, command, file.",
    "counter", ("source", "reason"), as_is,
)  # fmt: skip


@dataclass
class _Source:
    """One source's tokens and counts."""

    name: str
    state: SourceState = field(default_factory=SourceState)
    token: AccessToken | None = field(default=None, repr=False)
    fetching: asyncio.Task[AccessToken] | None = None
    fetches: int = 0
    failures: Counter[TokenFailure] = field(default_factory=Counter)

    def kept(self, source: OAuth2Config) -> AccessToken | None:
        token = self.token
        if token is None or token.expires_at - EXPIRY_MARGIN_SECONDS <= time.time():
            return None
        return token if unchanged(source, self.state) else None


class TokenBroker:
    """Access tokens per source, cached until shortly before they expire, one fetch at a
    time per source, never waited for past a caller's deadline."""

    def __init__(self, fetch_seconds: float = FETCH_SECONDS) -> None:
        self.fetch_seconds = fetch_seconds
        self._sources: dict[str, _Source] = {}

    async def token(self, source: OAuth2Config, deadline: float) -> AccessToken:
        """A token of ``source`` by ``deadline`` (the event loop's clock), or TokenError."""
        entry = self._entry(source)
        kept = entry.kept(source)
        if kept is not None:
            return kept
        task = entry.fetching
        if task is None:
            task = asyncio.create_task(self._fetch(entry, source))
            entry.fetching = task
            task.add_done_callback(functools.partial(self._fetched, entry))
        try:
            async with asyncio.timeout_at(deadline):
                # Shielded: a caller out of time leaves the fetch to the others.
                return await asyncio.shield(task)
        except TimeoutError:
            raise TokenError(
                f"no token from token source {entry.name} ({source.kind}) in the time left",
                TokenFailure.TIMEOUT,
            ) from None

    def apply(self, sources: Iterable[OAuth2Config]) -> None:
        """Keep the sources of the running config (each counted from now, if new) and
        forget the others."""
        wanted = {source.identity: source for source in sources}
        for identity in self._sources.keys() - wanted.keys():
            del self._sources[identity]
        for source in wanted.values():
            self._entry(source)

    def secrets(self) -> list[str]:
        """The tokens in use: access tokens kept and refresh tokens learned."""
        found = [entry.token.value for entry in self._sources.values() if entry.token]
        return found + [s for entry in self._sources.values() for s in entry.state.secrets()]

    def collect(self) -> Iterator[Metric]:
        entries = sorted(self._sources.values(), key=lambda entry: entry.name)
        expiry = [((e.name,), e.token.expires_at) for e in entries
                  if e.token is not None and math.isfinite(e.token.expires_at)]  # fmt: skip
        yield EXPIRY.family(expiry)
        yield FETCHES.family([((e.name,), e.fetches) for e in entries])
        yield FAILURES.family(
            ((e.name, reason.value), e.failures[reason]) for e in entries for reason in TokenFailure
        )

    def _entry(self, source: OAuth2Config) -> _Source:
        entry = self._sources.get(source.identity)
        if entry is None:
            entry = self._sources[source.identity] = _Source(source.name)
        entry.name = source.name  # the module that names it may have been renamed
        return entry

    async def _fetch(self, entry: _Source, source: OAuth2Config) -> AccessToken:
        entry.fetches += 1
        try:
            async with asyncio.timeout(self.fetch_seconds):
                token = await fetch_token(source, entry.state)
        except TimeoutError:
            error = TokenError(
                f"{source.kind}: no token within {self.fetch_seconds:g}s", TokenFailure.TIMEOUT
            )
            entry.failures[error.reason] += 1
            raise error from None
        except TokenError as error:
            entry.failures[error.reason] += 1
            raise
        entry.token = token
        return token

    @staticmethod
    def _fetched(entry: _Source, task: asyncio.Task[AccessToken]) -> None:
        entry.fetching = None
        if not task.cancelled() and task.exception() is not None:
            # Retrieved here, since a caller out of time is no longer there to see it.
            logger.debug("token source %s: %s", entry.name, task.exception())
