"""SMTP security checks: open relay, relaying after login, user enumeration (VRFY, EXPN).

They run in the probe's own session as its last step before QUIT (after EHLO, after
STARTTLS and the EHLO after it, after the login when the module has one), only when the
module's ``smtp:`` section asks for them, and never decide the probe's verdict:

- **Relay** (``relay_check``): ``MAIL FROM:<mail_from>``, ``RCPT TO:<rcpt_to>``, then
  ``RSET``; never ``DATA``, so no message can be queued. A 2xx to RCPT means the server
  relays (``mail_smtp_open_relay 1`` without a login, ``mail_smtp_auth_relay_allowed 1``
  after it), a 4xx or 5xx that it does not (Postfix refuses with ``454 4.7.1 Relay access
  denied``). A MAIL the server refuses leaves the question open: no series, and the reason
  in the session log.
- **Enumeration** (``enumeration_check``): ``VRFY address`` and ``EXPN address``. A server
  that answers 2xx for the address and something else for an unknown one at the same
  domain (a fresh random local part) tells users apart: ``mail_smtp_user_enumeration 1``.
  One answer alone cannot say it: Postfix answers ``252`` (RFC 5321's "cannot VRFY, but
  will try") for a user it knows and ``550 User unknown`` for one it does not, so its 252
  enumerates, while a server that answers 252 to everything, or 502 (``disable_vrfy_command
  = yes``) or 500 (Postfix's EXPN), does not. A 4xx to either gives no series.

A check may use at most :data:`SHARE_OF_BUDGET` of the time left when the checks start,
so a server that tarpits or hangs mid-check leaves the QUIT its time. One that breaks the
conversation (no answer in time, a dropped connection, a garbled reply) gives no series
for what it did not learn, logs why, and ends the session without QUIT: every step of the
probe came before it, so the verdict stands.

Sample output of a scheduled open-relay check and an enumeration check::

    mail_smtp_open_relay{target="mx1",module="mx_posture",protocol="smtp"} 0.0
    mail_smtp_user_enumeration{target="mx1",...,command="VRFY"} 1.0
    mail_smtp_user_enumeration{target="mx1",...,command="EXPN"} 0.0
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from mail_exporter.config.probes import RelayCheck, SMTPSettings
from mail_exporter.probes.result import Phase
from mail_exporter.probes.session import ProbeFailure, Session

logger = logging.getLogger(__name__)

Ask = Callable[[str], Awaitable[tuple[int, str]]]
"""Sends one SMTP command and returns its reply's code and (escaped) text, whatever the code."""

ENUMERATION_COMMANDS: Final = ("VRFY", "EXPN")
"""The ``command`` label values of ``mail_smtp_user_enumeration``, in the order sent."""

SHARE_OF_BUDGET: Final = 0.5
"""Most of the time left when the checks start that they may take."""


@dataclass
class RelayFinding:
    """What the relay check found: whether it ran after the login, and whether the server
    took the outside recipient (None when it could not tell: see the session log)."""

    after_login: bool
    allowed: bool | None = None


@dataclass
class SMTPPosture:
    """The checks a module asked for and what each found (None: no answer)."""

    relay: RelayFinding | None = None
    enumeration: dict[str, bool | None] = field(default_factory=dict)
    """By command (:data:`ENUMERATION_COMMANDS`); empty without ``enumeration_check``."""


async def check_posture(session: Session, settings: SMTPSettings, ask: Ask) -> bool:
    """Run the checks ``settings`` asks for; False when the conversation broke (no QUIT)."""
    relay, enumeration = settings.relay_check, settings.enumeration_check
    if relay is None and enumeration is None:
        return True
    # Every check asked for is in the result from the start: one the session never reached
    # reads as unanswered, not as not asked.
    finding = None if relay is None else RelayFinding(after_login=relay.authenticated)
    found: dict[str, bool | None] = (
        {} if enumeration is None else dict.fromkeys(ENUMERATION_COMMANDS)
    )
    session.result.smtp_posture = SMTPPosture(finding, found)
    seconds = max(0.0, session.deadline - time.monotonic()) * SHARE_OF_BUDGET
    with session.timed(Phase.POSTURE):
        try:
            async with asyncio.timeout(seconds):
                if relay is not None and finding is not None:
                    finding.allowed = await _relays(session, ask, relay)
                if enumeration is not None:
                    for verb in found:
                        found[verb] = await _enumerates(session, ask, verb, enumeration.address)
        except TimeoutError:
            _broken(session, f"no answer within {seconds:.3g}s")
            return False
        except ProbeFailure as failure:
            _broken(session, failure.detail)
            return False
        except (OSError, EOFError) as error:
            _broken(session, f"connection error: {error}")
            return False
    return True


def _broken(session: Session, reason: str) -> None:
    session.log(f"security checks stopped: {reason}; the session ends without QUIT")
    logger.debug("security checks of %s stopped: %s", session.address, reason)


async def _relays(session: Session, ask: Ask, check: RelayCheck) -> bool | None:
    """Whether the server takes ``check.rcpt_to`` from ``check.mail_from``; None: MAIL refused."""
    code, text = await ask(f"MAIL FROM:<{check.mail_from}>")
    if code // 100 != 2:
        session.log(f"relay check not run: MAIL FROM answered {code} {text}")
        return None
    code, text = await ask(f"RCPT TO:<{check.rcpt_to}>")
    reset, reset_text = await ask("RSET")
    if reset != 250:  # the transaction may stay open; QUIT ends it, and DATA never comes
        session.log(f"RSET answered {reset} {reset_text}")
    if code // 100 not in (2, 4, 5):
        session.log(f"relay check: RCPT TO answered {code}, neither acceptance nor refusal")
        return None
    allowed = code // 100 == 2
    session.log(f"relay check: RCPT TO {'accepted' if allowed else 'refused'} ({code})")
    return allowed


async def _enumerates(session: Session, ask: Ask, verb: str, address: str) -> bool | None:
    """Whether ``verb`` tells ``address`` from an unknown user; None after a 4xx."""
    known, _ = await ask(f"{verb} {address}")
    if known // 100 == 4:
        session.log(f"{verb} check: {known} is temporary, no verdict")
        return None
    if known // 100 != 2:
        session.log(f"{verb} check: {known} for the address, no user confirmed")
        return False
    domain = address.rpartition("@")[2]
    unknown, _ = await ask(f"{verb} no-such-user-{secrets.token_hex(6)}@{domain}")
    if unknown // 100 == 4:
        session.log(f"{verb} check: {unknown} is temporary, no verdict")
        return None
    enumerates = unknown != known
    session.log(
        f"{verb} check: {known} for the address, {unknown} for an unknown user: "
        + ("users can be told apart" if enumerates else "users cannot be told apart")
    )
    return enumerates
