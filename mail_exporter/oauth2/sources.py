"""How each kind of token source gets an access token: :func:`fetch_token`.

A fetch runs until it has a token or a :class:`~mail_exporter.oauth2.token.TokenError`;
the broker (:mod:`.broker`) bounds it in time, caches what it gives and shares it. What
a source keeps between its fetches is in its :class:`SourceState`.

- ``client_credentials``: one POST to the token endpoint (:mod:`.endpoint`) with the
  client secret, or with a client assertion signed afresh for each fetch (a new ``jti``;
  :mod:`.jwt`).
- ``refresh_token``: the refresh token is read from its file at each fetch, so one that
  somebody put there (after a new consent) is used without a reload. When the server
  answers with a new refresh token (Microsoft rotates them, and a rotating server refuses
  the old one from then on), the new one is written back to the file atomically: a
  temporary file in the same directory (the target of a symbolic link, which stays), its
  mode and, where allowed, owner copied from the old file, written and ``fsync``-ed,
  renamed over the old one, and the directory ``fsync``-ed. A reader sees the old token or
  the new, never a mix, and a crash loses neither. Should the write fail (a read-only
  mount), the new token is kept in memory and used while the file still holds the token it
  held before, and the failure is logged: the next restart would start from a token the
  server no longer takes.
- ``jwt_bearer``: one POST with an assertion signed afresh.
- ``token_command``: the program is run without a shell, stdin from ``/dev/null``, in a
  session of its own so that it and its children are killed together when the fetch ends
  early; at most :data:`MAX_COMMAND_OUTPUT_BYTES` of stdout are read (more is a failure).
  Its stdout is the token, or a JSON object ``{"access_token": ..., "expires_in": ...}``.
  A bare token is taken to live :data:`~mail_exporter.oauth2.token.DEFAULT_LIFETIME_SECONDS`.
  A failure shows the first line of stderr, never stdout.
- ``token_file``: the file holds the token, as a helper of the site's own keeps it; it is
  read again whenever it changed (:func:`unchanged` compares its inode, size and mtime),
  and its token has no known expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import stat
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from mail_exporter.config.files import MAX_SECRET_BYTES, UnreadableFile, read_bounded
from mail_exporter.config.oauth2 import (
    ClientCredentials,
    JWTBearer,
    OAuth2Config,
    RefreshToken,
)
from mail_exporter.oauth2.endpoint import TokenResponse, request_token
from mail_exporter.oauth2.jwt import ASSERTION_SECONDS
from mail_exporter.oauth2.token import (
    AccessToken,
    TokenError,
    TokenFailure,
    checked_token,
    lifetime,
    shown,
)
from mail_exporter.quiet_http import json_object

logger = logging.getLogger(__name__)

MAX_COMMAND_OUTPUT_BYTES: Final = 64 * 1024
MAX_COMMAND_ERROR_BYTES: Final = 4096
"""How much of a command's stderr is kept for the failure's detail (the rest is drained)."""
JWT_BEARER_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

_COMMAND: Final = TokenFailure.COMMAND
_FILE: Final = TokenFailure.FILE

FileSignature = tuple[int, int, int, int]
"""A file's device, inode, size and mtime (ns): what changes when it is written."""


@dataclass
class SourceState:
    """What one source keeps between its fetches."""

    refresh_token: str | None = field(default=None, repr=False)
    """The refresh token in use (the latest the server gave)."""
    refresh_file_token: str | None = field(default=None, repr=False)
    """What the refresh token's file held when last read or written: another content
    there is somebody else's token and taken over."""
    token_file_signature: FileSignature | None = None

    def secrets(self) -> list[str]:
        return [self.refresh_token] if self.refresh_token else []


async def fetch_token(source: OAuth2Config, state: SourceState) -> AccessToken:
    """A new access token from ``source``; TokenError when there is none."""
    if source.client_credentials is not None:
        return _expiring(await _client_credentials(source.client_credentials))
    if source.refresh_token is not None:
        return await _refreshed(source.refresh_token, state)
    if source.jwt_bearer is not None:
        return _expiring(await _jwt_bearer(source.jwt_bearer))
    if source.token_command is not None:
        return await _from_command(source.token_command)
    assert source.token_file is not None, "validation leaves exactly one source"
    return await _from_file(source.token_file, state)


def unchanged(source: OAuth2Config, state: SourceState) -> bool:
    """Whether a token fetched before still stands: for ``token_file``, while the file is
    as it was read; for the others, always (until it expires)."""
    if source.token_file is None:
        return True
    return _signature(source.token_file) == state.token_file_signature


def _expiring(response: TokenResponse) -> AccessToken:
    return AccessToken(response.access_token, time.time() + response.expires_in)


async def _client_credentials(settings: ClientCredentials) -> TokenResponse:
    form = {"grant_type": "client_credentials", "client_id": settings.client_id,
            "scope": settings.scope}  # fmt: skip
    key = settings.assertion_key
    if key is None:
        assert settings.client_secret is not None, "validation leaves a secret or a key"
        form["client_secret"] = settings.client_secret
    else:
        now = int(time.time())
        claims = {"aud": settings.token_url, "iss": settings.client_id,
                  "sub": settings.client_id, "jti": str(uuid.uuid4()),
                  "iat": now, "nbf": now, "exp": now + ASSERTION_SECONDS}  # fmt: skip
        form["client_assertion_type"] = CLIENT_ASSERTION_TYPE
        form["client_assertion"] = key.sign(claims)
    return await request_token(settings.token_url, form)


async def _jwt_bearer(settings: JWTBearer) -> TokenResponse:
    account, now = settings.account, int(time.time())
    claims: dict[str, object] = {"iss": account.client_email, "scope": settings.scope,
                                 "aud": settings.token_url, "iat": now,
                                 "exp": now + ASSERTION_SECONDS}  # fmt: skip
    if settings.subject is not None:
        claims["sub"] = settings.subject
    form = {"grant_type": JWT_BEARER_GRANT, "assertion": account.key.sign(claims)}
    return await request_token(settings.token_url, form)


async def _refreshed(settings: RefreshToken, state: SourceState) -> AccessToken:
    path = settings.refresh_token_file
    on_file: str | None
    try:
        content = await asyncio.to_thread(read_bounded, path, MAX_SECRET_BYTES)
        on_file = content.decode("utf-8").strip()
    except (UnreadableFile, UnicodeDecodeError):
        on_file = None  # the token in memory (or read with the config) goes on
    if on_file and on_file != state.refresh_file_token:
        state.refresh_token = state.refresh_file_token = on_file
    used = state.refresh_token or settings.refresh_token
    form = {"grant_type": "refresh_token", "refresh_token": used, "client_id": settings.client_id}
    if settings.client_secret is not None:
        form["client_secret"] = settings.client_secret
    if settings.scope is not None:
        form["scope"] = settings.scope
    response = await request_token(settings.token_url, form)
    state.refresh_token = used
    if response.refresh_token is not None and response.refresh_token != used:
        state.refresh_token = response.refresh_token
        try:
            await asyncio.to_thread(write_atomically, path, response.refresh_token + "\n")
        except OSError as error:
            logger.error(
                "cannot write the new refresh token to %s (%s): it is kept in memory only, "
                "and a restart would read the old one, which the server no longer takes",
                path, error.strerror or error,
            )  # fmt: skip
        else:
            state.refresh_file_token = response.refresh_token
    return _expiring(response)


def write_atomically(path: Path, text: str) -> None:
    """Replace the file ``path`` (or the file its symbolic link points to) with ``text``,
    keeping its mode and, where allowed, its owner: readers see the old or the new content."""
    target = Path(os.path.realpath(path))
    try:
        before: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        before = None
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            if before is not None:
                os.fchmod(file.fileno(), stat.S_IMODE(before.st_mode))
                # Not ours to give away without privileges: the owner is then this user.
                with contextlib.suppress(PermissionError):
                    os.fchown(file.fileno(), before.st_uid, before.st_gid)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


async def _from_command(argv: list[str]) -> AccessToken:
    program = argv[0]
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, killed whole
        )
    except OSError as error:
        raise TokenError(
            f"token_command {program} cannot run: {error.strerror or error}", TokenFailure.COMMAND
        ) from None
    try:
        assert process.stdout is not None and process.stderr is not None
        output, errors = await asyncio.gather(
            _read_output(process.stdout, program),
            _read_bounded(process.stderr, MAX_COMMAND_ERROR_BYTES),
        )
        status = await process.wait()
    finally:
        if process.returncode is None:  # it ran out of time, or printed too much
            _kill_group(process.pid)
            await process.wait()
    text = output.decode("utf-8", "replace").strip()
    if status != 0:
        first = next(iter(errors.decode("utf-8", "replace").strip().splitlines()), "")
        said = f": {shown(first, [text])}" if first else ""
        raise TokenError(
            f"token_command {program} exited with status {status}{said}", TokenFailure.COMMAND
        )
    return _command_token(text, f"token_command {program}")


def _command_token(text: str, where: str) -> AccessToken:
    if text.startswith("{"):
        data = json_object(text.encode())
        if data is None:
            raise TokenError(f"{where} printed JSON that does not parse", _COMMAND)
        token = data.get("access_token")
        if not isinstance(token, str):
            raise TokenError(f"{where} printed JSON without an access_token", TokenFailure.COMMAND)
        seconds = lifetime(data.get("expires_in"), where, TokenFailure.COMMAND)
    else:
        token, seconds = text, lifetime(None, where)
    return AccessToken(checked_token(token, where, TokenFailure.COMMAND), time.time() + seconds)


async def _read_output(stream: asyncio.StreamReader, program: str) -> bytes:
    output = await _read_bounded(stream, MAX_COMMAND_OUTPUT_BYTES + 1, drain=False)
    if len(output) > MAX_COMMAND_OUTPUT_BYTES:
        raise TokenError(
            f"token_command {program} printed more than {MAX_COMMAND_OUTPUT_BYTES >> 10} KiB",
            TokenFailure.COMMAND,
        )
    return output


async def _read_bounded(stream: asyncio.StreamReader, limit: int, drain: bool = True) -> bytes:
    """Up to ``limit`` bytes of ``stream``; with ``drain`` the rest is read and dropped
    (so that the writer never blocks on a full pipe), without it reading stops there."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        kept += chunk[: limit - len(kept)]
        if len(kept) >= limit and not drain:
            break
    return bytes(kept)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _signature(path: Path) -> FileSignature | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns


async def _from_file(path: Path, state: SourceState) -> AccessToken:
    signature = _signature(path)  # before reading: a write meanwhile is seen next time
    try:
        content = await asyncio.to_thread(read_bounded, path, MAX_SECRET_BYTES)
    except UnreadableFile as error:
        shown_path = str(path)
        raise TokenError(f"token_file {shown_path!r} cannot be read: {error}", _FILE) from None
    token = content.decode("utf-8", "replace").strip()
    checked = checked_token(token, f"token_file {str(path)!r}", TokenFailure.FILE)
    state.token_file_signature = signature
    return AccessToken(checked, math.inf)
