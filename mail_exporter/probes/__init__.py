"""Probes: one file per protocol, one shape, and the runner that owns their common steps.

``run_probe`` resolves, connects, does implicit TLS, enforces the deadline and
turns whatever happened into a :class:`ProbeResult`; it never raises.  Each
protocol module only speaks its protocol over the :class:`Session`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from mail_exporter.config import ModuleConfig
from mail_exporter.probes.imap import probe_imap
from mail_exporter.probes.pop3 import probe_pop3
from mail_exporter.probes.result import FailureReason, Phase, ProbeResult
from mail_exporter.probes.session import ProbeFailure, Session, fail_result
from mail_exporter.probes.smtp import probe_smtp
from mail_exporter.targets import Address

logger = logging.getLogger(__name__)

ProtocolProbe = Callable[[Session], Awaitable[None]]

PROTOCOL_PROBES: dict[str, ProtocolProbe] = {
    "smtp": probe_smtp,
    "imap": probe_imap,
    "pop3": probe_pop3,
}


async def _converse(session: Session) -> None:
    await session.connect()
    if session.module.tls == "implicit":
        await session.start_tls()
    await PROTOCOL_PROBES[session.module.protocol](session)


async def run_probe(address: Address, module: ModuleConfig, budget_seconds: float) -> ProbeResult:
    """Probe ``address`` with ``module`` within ``budget_seconds``; never raises."""
    result = ProbeResult(protocol=module.protocol)
    session = Session(address, module, result)
    started = time.monotonic()
    try:
        async with asyncio.timeout(budget_seconds):
            await _converse(session)
    except ProbeFailure as failure:
        fail_result(result, session.phase, failure.reason, failure.detail)
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
        await session.close()
        result.duration_seconds = time.monotonic() - started
    result.success = result.failure is None
    if result.failure is not None:
        stop = result.failure
        session.log(f"probe failed in {stop.phase}: {stop.reason}: {stop.detail}")
    else:
        session.log("probe succeeded")
    return result


__all__ = ["FailureReason", "Phase", "ProbeResult", "run_probe"]
