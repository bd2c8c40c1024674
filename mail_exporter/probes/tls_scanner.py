"""The TLS scan: one short handshake per TLS version and per weak cipher class.

Each handshake has a connection of its own and gets to TLS as the probe does, through the
protocol's own code: connect, and with STARTTLS the greeting, EHLO/CAPABILITY/CAPA and
STARTTLS/STLS. A :class:`Session` whose handshake is the scan's then offers exactly what
is asked:

- a version (:data:`VERSIONS`): the context is pinned to it (minimum = maximum) and
  offers every cipher at OpenSSL security level 0, so that TLS 1.0 and 1.1 are really
  offered (from level 1 OpenSSL 3 leaves them out);
- a weak cipher class (:data:`WEAK_CIPHER_CLASSES`): TLS 1.2 and below, that class's
  suites only.

The session ends right after the handshake with the protocol's goodbye where there is
one (STARTTLS: ``QUIT``/``LOGOUT``), so nothing else is said over the scan's TLS. No
credentials are ever sent (the module's login is dropped), and STARTTLS is required
whatever the module says, so a server that does not offer it fails the scan at once.

A handshake the server refuses, with an alert, a reset, a close or an answer in another
version, is "not accepted". Anything else ends the scan as failed, with the reason: a
timeout, a refused STARTTLS, a connection that could not be made. The handshakes run
one after the other (a server sees one connection at a time), the modern versions
first, within the probe's deadline: the time its own session left.

The same way to a handshake (:class:`HandshakeSession`, :func:`until_handshake`) serves the
OCSP stapling check (:mod:`.stapling`), whose handshake is one it makes by hand.

What this host's OpenSSL cannot offer (3DES and RC4 are not built into Debian's OpenSSL
3; some builds drop TLS 1.0 and 1.1) is found once, by building a ClientHello in
memory, logged once, noted in every scan, and left out: no series, rather than a "not
accepted" the server never had the chance to answer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from mail_exporter.config.probes import ModuleConfig
from mail_exporter.probes.result import ProbeResult
from mail_exporter.probes.session import ProbeFailure, Session
from mail_exporter.probes.tls_scan import TLSScan, TLSScans, scan_key
from mail_exporter.targets import Address

logger = logging.getLogger(__name__)

VERSIONS: Final[Mapping[str, ssl.TLSVersion]] = {
    "TLS 1.3": ssl.TLSVersion.TLSv1_3,
    "TLS 1.2": ssl.TLSVersion.TLSv1_2,
    "TLS 1.1": ssl.TLSVersion.TLSv1_1,
    "TLS 1.0": ssl.TLSVersion.TLSv1,
}
"""The ``version`` label values of ``mail_tls_version_accepted``, in the order tried: the
old ones last, so a server that hangs on them still has its modern versions reported."""

WEAK_CIPHER_CLASSES: Final[Mapping[str, str]] = {
    "rsa_key_exchange": "kRSA:!eNULL",  # static RSA key exchange: no forward secrecy
    "cbc_sha1": "SHA1:!RC4:!eNULL",  # CBC with HMAC-SHA1 (Lucky Thirteen; BEAST in TLS 1.0)
    "3des": "3DES",  # 64-bit blocks (Sweet32)
    "rc4": "RC4",  # prohibited by RFC 7465
}
"""The ``class`` label values of ``mail_tls_weak_cipher_accepted`` and the OpenSSL cipher
string of each (unencrypted suites left out: they are no class of these)."""

PARTING_SECONDS: Final = 0.25
"""Longest wait for the answer to the goodbye after an accepted handshake, and for the
close that follows: a server answers at once, and a scan has up to eight of them."""

Converse = Callable[[Session], Awaitable[None]]
"""A probe's conversation on a session (the runner's): connect, implicit TLS, the protocol."""


@dataclass(frozen=True)
class _Offer:
    label: str
    context: ssl.SSLContext


@dataclass(frozen=True)
class _Plan:
    """The handshakes this host can offer, and a note on those it cannot."""

    versions: tuple[_Offer, ...]
    weak_ciphers: tuple[_Offer, ...]
    note: str | None


def _context(
    minimum: ssl.TLSVersion, maximum: ssl.TLSVersion, ciphers: str
) -> ssl.SSLContext | None:
    """A client context offering exactly this, or None when the local OpenSSL cannot."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # what a server accepts, not whom it proves to be
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0 and 1.1, on purpose
            context.minimum_version = minimum
            context.maximum_version = maximum
        context.set_ciphers(f"{ciphers}:@SECLEVEL=0")
    except (ssl.SSLError, ValueError):  # "No cipher can be selected", or no such version
        return None
    return context if _builds_client_hello(context) else None


def _builds_client_hello(context: ssl.SSLContext) -> bool:
    """Whether OpenSSL writes a ClientHello with ``context`` (it refuses with "no protocols
    available" or "no ciphers available" when a build lacks what is asked)."""
    outgoing = ssl.MemoryBIO()
    ssl_object = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_side=False)
    try:
        ssl_object.do_handshake()
    except ssl.SSLWantReadError:
        return outgoing.pending > 0
    except ssl.SSLError:
        return False
    return False  # a handshake cannot finish without a server


@functools.cache
def local_plan() -> _Plan:
    """What this host's OpenSSL can offer, found and logged once per process."""
    versions = [(label, _context(v, v, "ALL")) for label, v in VERSIONS.items()]
    weak = [
        (label, _context(ssl.TLSVersion.MINIMUM_SUPPORTED, ssl.TLSVersion.TLSv1_2, ciphers))
        for label, ciphers in WEAK_CIPHER_CLASSES.items()
    ]
    missing = [label for label, context in (*versions, *weak) if context is None]
    note = None
    if missing:
        note = (
            f"not tried, this host's {ssl.OPENSSL_VERSION} cannot offer them: "
            f"{', '.join(missing)}"
        )
        logger.info("TLS scans: %s; they have no series", note)
    return _Plan(
        versions=tuple(_Offer(label, c) for label, c in versions if c is not None),
        weak_ciphers=tuple(_Offer(label, c) for label, c in weak if c is not None),
        note=note,
    )


class HandshakeReached(Exception):
    """Raised by the ``start_tls`` of a :class:`HandshakeSession` to end the conversation
    at its handshake; ``in_step`` when the handshake completed, so that the protocol's
    goodbye may follow it."""

    in_step = False


R = TypeVar("R", bound=HandshakeReached)


class HandshakeStopped(Exception):
    """A session for one handshake ended before it: the message says where and why."""


class HandshakeSession(Session):
    """A session made for one handshake: the protocol's own way there (connect, and with
    STARTTLS its greeting, capabilities and STARTTLS command), never a login (the module's
    is dropped), STARTTLS required whatever the module says, and a ``start_tls`` that
    subclasses replace with theirs, raising :class:`HandshakeReached`."""

    def __init__(self, address: Address, module: ModuleConfig) -> None:
        # STARTTLS required: a server without it ends the session at once rather than
        # letting it go on in plaintext.
        module = module.model_copy(update={"auth": None, "require_tls": None})
        super().__init__(address, module, ProbeResult(module.protocol))


async def until_handshake(
    session: HandshakeSession, converse: Converse, deadline: float, reached: type[R], what: str
) -> R:
    """``session`` through ``converse`` up to its handshake, by ``deadline`` (the event
    loop's clock), then closed: the ``reached`` its ``start_tls`` raised; raises
    :class:`HandshakeStopped` when it ends otherwise. ``what`` names the session in the log
    of an internal error."""
    try:
        async with asyncio.timeout_at(deadline):
            await converse(session)
    except reached as outcome:
        if outcome.in_step:
            left = deadline - asyncio.get_running_loop().time()
            await session.part_after_failure(min(PARTING_SECONDS, left))
        return outcome
    except ProbeFailure as failure:
        step = f"{failure.reason.value} in {session.phase.value}"
        raise HandshakeStopped(f"{step}: {failure.detail}") from None
    except TimeoutError:
        raise HandshakeStopped(
            f"timeout in {session.phase.value}: no answer within the budget"
        ) from None
    except (OSError, EOFError) as error:
        raise HandshakeStopped(f"connection error in {session.phase.value}: {error}") from None
    except Exception as error:  # a bug here must cost this session, never the probe
        logger.exception("%s of %s raised", what, session.address)
        raise HandshakeStopped(f"internal error: {error!r}") from None
    finally:  # a server may never answer TLS's close_notify: nothing waits on it
        left = deadline - asyncio.get_running_loop().time()
        await session.close(max(0.0, min(PARTING_SECONDS, left)))
    raise HandshakeStopped("the session ended before a TLS handshake")


class _Handshaken(HandshakeReached):
    """Ends a scan's session at its handshake: accepted or refused, and how."""

    def __init__(self, accepted: bool, detail: str) -> None:
        super().__init__(detail)
        self.in_step = self.accepted = accepted
        self.detail = detail


class _ScanSession(HandshakeSession):
    """A probe's session whose TLS handshake is the scan's, and its last step."""

    def __init__(self, address: Address, module: ModuleConfig, offer: _Offer) -> None:
        super().__init__(address, module)
        self._context = offer.context

    async def start_tls(self) -> None:
        try:
            ssl_object = await self.handshake(self._context)
        except (ssl.SSLError, ConnectionError, EOFError) as refusal:
            detail = str(refusal) or f"{type(refusal).__name__} during the handshake"
            raise _Handshaken(False, detail) from None
        cipher = ssl_object.cipher()
        raise _Handshaken(True, cipher[0] if cipher else "unknown cipher")


async def scan_tls(
    address: Address, module: ModuleConfig, converse: Converse, seconds: float
) -> TLSScan:
    """Scan the server at ``address`` as ``module`` reaches it, within ``seconds``; never
    raises."""
    plan = local_plan()
    loop = asyncio.get_running_loop()
    started, began = time.time(), loop.time()
    deadline = began + seconds
    answers: dict[str, dict[str, bool]] = {"version": {}, "weak ciphers": {}}
    notes = [plan.note] if plan.note else []
    failure = None
    for kind, offers in (("version", plan.versions), ("weak ciphers", plan.weak_ciphers)):
        for offer in offers:
            session = _ScanSession(address, module, offer)
            try:
                outcome = await until_handshake(
                    session, converse, deadline, _Handshaken, "TLS scan"
                )
            except HandshakeStopped as stopped:
                failure = f"{kind} {offer.label}: {stopped}"
                break
            answers[kind][offer.label] = outcome.accepted
            verdict = "accepted" if outcome.accepted else "not accepted"
            notes.append(f"{kind} {offer.label} {verdict}: {outcome.detail}")
        if failure is not None:
            notes.append(f"scan failed: {failure}")
            break
    return TLSScan(
        started=started,
        duration_seconds=loop.time() - began,
        versions=answers["version"],
        weak_ciphers=answers["weak ciphers"],
        failure=failure,
        notes=tuple(notes),
    )


async def tls_scan_for(
    probe: Session, converse: Converse, scans: TLSScans | None, seconds: float
) -> TLSScan | None:
    """The scan a probe reports: the kept one while it is fresh, else a new one (kept in
    ``scans``) when the probe reached TLS, else none. Logged in the probe's session log."""
    settings = probe.module.tls_scan
    assert settings is not None, "only for a module with tls_scan"
    key = scan_key(probe.address, probe.module)
    kept = scans.fresh(key, float(settings.interval)) if scans is not None else None
    if kept is not None:
        age = time.time() - kept.started
        probe.log(f"kept from {age:.0f}s ago: {kept.summary()}", "tls_scan")
        return kept
    if probe.result.tls is None:
        probe.log("not run: this probe did not reach TLS", "tls_scan")
        return None
    began = time.monotonic()
    scan = await scan_tls(probe.address, probe.module, converse, seconds)
    for note in scan.notes:
        probe.log(note, "tls_scan")
    probe.log(f"{scan.duration_seconds * 1000:.1f}ms: {scan.summary()}", "tls_scan")
    if scans is not None:
        scans.keep(key, began, scan)
    return scan
