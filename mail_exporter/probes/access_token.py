"""The access token a module's OAuth2 login sends, from the exporter's token broker.

A probe asks for it where it would send a password; a token that cannot be had stops
the probe with ``reason="token"`` before the server is asked anything about it (the
token source failed, not the mail server), within the probe's own deadline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mail_exporter.config.probes import AuthConfig
from mail_exporter.oauth2.token import TokenError
from mail_exporter.probes.result import FailureReason
from mail_exporter.probes.session import ProbeFailure

if TYPE_CHECKING:  # the package imports the protocols, which import this module
    from mail_exporter.probes import ProbeMemory


async def access_token_for(auth: AuthConfig, memory: ProbeMemory, deadline: float) -> str:
    """The access token of ``auth.oauth2`` by ``deadline`` (the event loop's clock), or
    ProbeFailure with reason ``token`` and the source's detail."""
    assert auth.oauth2 is not None, "only a module with oauth2 logs in with a token"
    try:
        token = await memory.tokens.token(auth.oauth2, deadline)
    except TokenError as error:
        raise ProbeFailure(FailureReason.TOKEN, error.detail) from None
    return token.value
