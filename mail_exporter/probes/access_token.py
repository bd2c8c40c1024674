"""The access token a module's OAuth2 login sends, from the exporter's token broker.

A probe asks for it where it would send a password; a token that cannot be had stops
the probe with ``reason="token"`` before the server is asked anything about it (the
token source failed, not the mail server), within the probe's own deadline.

A login waits for its token until :func:`token_deadline`: most of the way to the end of
its step, so that a token source that hangs is reported as what it is (reason ``token``,
or the round trip's ``send_auth``/``receive_auth``) rather than as the step's timeout.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

from mail_exporter.config.probes import AuthConfig
from mail_exporter.oauth2.token import TokenError
from mail_exporter.probes.result import FailureReason
from mail_exporter.probes.session import ProbeFailure, Session

if TYPE_CHECKING:  # the package imports the protocols, which import this module
    from mail_exporter.probes import ProbeMemory

TOKEN_SHARE: Final = 0.9
"""The share of the time left to a step's deadline that its login waits for a token."""


def token_deadline(deadline: float) -> float:
    """When a login stops waiting for its token (the event loop's clock), for a step that
    ends at ``deadline`` (the same clock)."""
    now = asyncio.get_running_loop().time()
    return now + max(0.0, deadline - now) * TOKEN_SHARE


async def access_token_for(auth: AuthConfig, memory: ProbeMemory, deadline: float) -> str:
    """The access token of ``auth.oauth2`` by ``deadline`` (the event loop's clock), or
    ProbeFailure with reason ``token`` and the source's detail."""
    assert auth.oauth2 is not None, "only a module with oauth2 logs in with a token"
    try:
        token = await memory.tokens.token(auth.oauth2, deadline)
    except TokenError as error:
        raise ProbeFailure(FailureReason.TOKEN, error.detail) from None
    return token.value


async def session_token(session: Session) -> str:
    """The access token of the session's module, by :func:`token_deadline` of the probe's
    deadline; ProbeFailure with reason ``token`` otherwise."""
    auth, memory = session.module.auth, session.memory
    assert auth is not None and memory is not None, "a session that logs in with a token"
    left = session.deadline - time.monotonic()  # the session's clock is time.monotonic()
    deadline = token_deadline(asyncio.get_running_loop().time() + left)
    return await access_token_for(auth, memory, deadline)
