"""Probes: one file per protocol, one shape, and the runner that owns their common steps.

``run_probe`` resolves, connects, does implicit TLS, enforces the deadline and
turns whatever happened into a :class:`ProbeResult`; it never raises.  Each
protocol module only speaks its protocol over the :class:`Session`.

A probe that fails after the greeting, on a conversation still in step, ends it
as a client should (SMTP and POP3 ``QUIT``, IMAP ``LOGOUT``) rather than dropping
the connection: a server answering AUTH with 535 then sees a clean goodbye, not a
lost client.  That holds for the reasons in :data:`IN_STEP_REASONS` only; after a
timeout the server is not answering, after a TLS failure the channel is unusable
or (an unverified certificate) not trusted with another word, and a connection
error or a malformed reply leaves nothing to speak to.  The goodbye waits at
most :data:`FAREWELL_SECONDS` and never past the probe's budget, its errors are
ignored, it never changes the verdict, and its time counts into the probe's
wall time (as closing the connection does) but into no phase.

Revocation checks (``revocation:`` on the module, :mod:`.revocation`) of the chain the
session kept run after the conversation, within the same budget. Their time counts into
no phase and not into the probe's duration, and they never change its verdict. The
stapling check's connection (:mod:`.stapling`) gets to TLS through the same
conversation as the probe, as the TLS scan's do.

With ``tls_scan`` on the module, the TLS scan (:mod:`.tls_scanner`) follows the session,
within what is left of the same budget, and leaves the verdict and the probe's duration
as the session made them: the scan is a fact about the server's TLS, not its availability.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from mail_exporter.config.probes import ModuleConfig, Protocol
from mail_exporter.oauth2.broker import TokenBroker
from mail_exporter.probes.imap import probe_imap
from mail_exporter.probes.pop3 import probe_pop3
from mail_exporter.probes.result import FailureReason, Phase, ProbeResult
from mail_exporter.probes.revocation import RevocationCache, check_revocation
from mail_exporter.probes.session import ProbeFailure, Session, fail_result
from mail_exporter.probes.smtp import probe_smtp
from mail_exporter.probes.stapling import staple_source
from mail_exporter.probes.tls_scan import TLSScans
from mail_exporter.probes.tls_scanner import tls_scan_for
from mail_exporter.targets import Address

logger = logging.getLogger(__name__)

ProtocolProbe = Callable[[Session], Awaitable[None]]

PROTOCOL_PROBES: dict[Protocol, ProtocolProbe] = {  # one for each of PROTOCOLS
    "smtp": probe_smtp,
    "imap": probe_imap,
    "pop3": probe_pop3,
}

FAREWELL_SECONDS: Final = 1.0
"""Longest wait for the answer to a goodbye after a failure (within the budget left)."""

IN_STEP_REASONS: Final = frozenset(
    {
        FailureReason.AUTH,
        FailureReason.REJECTED,
        FailureReason.STARTTLS_UNAVAILABLE,
        FailureReason.BANNER,
        FailureReason.TOKEN,
    }
)
"""Failures that may leave the server waiting for our next command.

The protocols raise these only on a complete, well-formed refusal (535, ``NO``,
``-ERR``, a 5xx to EHLO or STARTTLS) or before sending anything (AUTH or STARTTLS
not offered, no access token for the login); a read that goes wrong is always
``protocol``, ``banner`` or ``timeout``.
A ``banner`` failure has a goodbye only where the protocol set one, which SMTP does for
a 5xx greeting alone (RFC 5321 3.1); a protocol sets none before an accepted greeting
otherwise, so no goodbye follows a garbled or missing one.
"""


async def _converse(session: Session) -> None:
    await session.connect()
    if session.module.tls == "implicit":
        await session.start_tls()
    await PROTOCOL_PROBES[session.module.protocol](session)


@dataclass
class ProbeMemory:
    """What probes keep between runs: the revocation answers and staples (until their
    nextUpdate, bounded), the TLS scans (for their module's interval) and the OAuth2 access
    tokens (until shortly before they expire). The exporter owns one, shared by the
    scheduled probes, /probe and the round trips, and kept across reloads."""

    revocation: RevocationCache = field(default_factory=RevocationCache)
    tls_scans: TLSScans = field(default_factory=TLSScans)
    tokens: TokenBroker = field(default_factory=TokenBroker)


async def run_probe(
    address: Address,
    module: ModuleConfig,
    budget_seconds: float,
    memory: ProbeMemory | None = None,
) -> ProbeResult:
    """Probe ``address`` with ``module`` within ``budget_seconds``; never raises.

    What the module's revocation checks, TLS scan and token source learn is kept in
    ``memory`` (none: kept by nobody, so scanned and fetched every time)."""
    memory = memory or ProbeMemory()
    result = ProbeResult(protocol=module.protocol)
    deadline = asyncio.get_running_loop().time() + budget_seconds
    started = time.monotonic()
    session = Session(address, module, result, started + budget_seconds, memory)
    try:
        async with asyncio.timeout(budget_seconds):
            await _converse(session)
    except ProbeFailure as failure:
        fail_result(result, session.phase, failure.reason, failure.detail)
        if failure.reason in IN_STEP_REASONS:
            left = started + budget_seconds - time.monotonic()
            await session.part_after_failure(min(FAREWELL_SECONDS, left))
    except TimeoutError:
        fail_result(
            result, session.phase, FailureReason.TIMEOUT, f"no answer within {budget_seconds:.3g}s"
        )
    except (OSError, EOFError) as error:
        fail_result(result, session.phase, FailureReason.PROTOCOL, f"connection error: {error}")
    except Exception as error:  # a bug here must cost one probe, never the scheduler
        logger.exception("probe of %s raised", address)
        fail_result(result, session.phase, FailureReason.PROTOCOL, f"internal error: {error!r}")
    finally:
        # The probe ends with the conversation: the server's answer to QUIT/LOGOUT, or the
        # failure. Closing comes after the clock stops, as blackbox_exporter's does: TLS's
        # close_notify exchange measures our teardown, not the server (and is bounded).
        result.duration_seconds = time.monotonic() - started
        await session.close()
    result.success = result.failure is None
    if session.peer_chain is not None:  # ends by the deadline, and cannot change the verdict
        server = staple_source(session, _converse) if module.revocation.stapling else None
        result.revocation = await check_revocation(
            session.peer_chain, module.revocation, memory.revocation, deadline, session.log, server
        )
    if result.failure is not None:
        stop = result.failure
        session.log(f"probe failed in {stop.phase}: {stop.reason}: {stop.detail}")
    else:
        session.log("probe succeeded")
    if module.tls_scan is not None:
        left = started + budget_seconds - time.monotonic()
        result.tls_scan = await tls_scan_for(session, _converse, memory.tls_scans, left)
    return result


__all__ = ["FailureReason", "Phase", "ProbeMemory", "ProbeResult", "RevocationCache", "run_probe"]
