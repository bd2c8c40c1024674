"""Is the leaf certificate revoked? Its CRL, its OCSP responder and the server's OCSP staple,
asked after the conversation.

A module with ``revocation: {crl: true, ocsp: true, stapling: true}`` checks the leaf the
server presented against the issuer the server presented with it: the second certificate
of the chain, which must have signed the leaf (it is not looked up anywhere else, so a
server that sends the leaf alone gets an error, not an answer).

- **CRL**: the first ``http://`` URL of the leaf's CRL distribution points is fetched.
  The CRL must be signed by the issuer (name and signature, and ``cRLSign`` when the
  issuer has a key usage), be current (thisUpdate not in the future, nextUpdate not
  past) and cover every certificate of the issuer: a delta CRL or one limited by its
  issuing distribution point (CA certificates only, some reasons only, indirect) is
  refused, never read as "not listed".
- **OCSP**: a request for leaf and issuer (SHA-1 CertID, which RFC 5019 responders
  expect; no nonce, which most of them ignore) is POSTed to the first ``http://`` OCSP
  URL of the leaf's Authority Information Access. The answer must be about that
  certificate, current, and signed by the issuer or by a responder certificate the issuer
  signed with the OCSP-signing extended key usage and valid now. A SingleResponse is
  matched to the leaf by its CertID in its own hash algorithm.
- **Stapling**: the server's own OCSP answer, stapled to a TLS 1.2 handshake that asks for
  it (RFC 6066 8), on a connection of its own (:mod:`.stapling`), verified exactly as a
  responder's answer is. A server that staples nothing, or does not promise to, is
  ``mail_tls_ocsp_stapled 0`` and an error of the method ("no stapled response"): never
  good, never revoked. A server stapling a "revoked" answer is revoked.

Anything else is an error of that method: no URL, a fetch that fails or is refused, no
issuer, a bad signature, a stale answer, an OCSP ``unknown``. An error is
``mail_tls_revocation_check_success{method} 0`` with its reason in the probe log and
report; it never counts as revoked and never as good, so ``mail_tls_cert_revoked`` is
only there when at least one method answered (1 when any says revoked).

Time: the checks run once the conversation is over and the connection closed (so they
neither hold the server's connection nor slow the phases being measured), until the
probe's deadline and never later. They change neither the probe's verdict nor its
duration (a slow responder is not a slow mail server). A crash here costs the check,
never the probe.

Answers are kept until their nextUpdate, at most :data:`LONGEST_KEEP_SECONDS` (and
:data:`UNDATED_KEEP_SECONDS` for one without a nextUpdate), in a :class:`RevocationCache`
the exporter owns and hands to every probe; it is bounded in entries and bytes, and
probes that need the same answer at once share one request. Failures are not kept: a
responder that is back is seen at the next probe. A large CRL is parsed, verified and
searched in a worker thread, off the event loop.

What a server stapled is kept per server (its :class:`StapleSource` key) and leaf for
:data:`STAPLE_KEEP_SECONDS`, or until the staple's nextUpdate when that comes sooner, and
verified again by every probe against the chain it was presented: a 30 s probe opens the
stapling connection once an hour, not twice a minute. Unlike a responder's failure, the
server's is kept too (no staple, a timeout, garbage), as the TLS scan keeps its failures: a
server that hangs on the stapling handshake costs one timeout an hour, not one per probe.

The URLs come from a certificate any server can present, so a request is held to what a
revocation check needs:

- ``http://`` only: ``https`` (which would need a revocation check of its own, RFC 5280
  4.2.1.13), ``ldap``, ``file`` and the rest are skipped; on the port the URL names; no
  user or password in it; at most :data:`MAX_URL_CHARACTERS`;
- no redirect is followed (a 3xx is an error), no proxy or ``.netrc`` is taken from the
  environment, no cookie is kept, no credential sent, no compression asked for
  (:mod:`mail_exporter.quiet_http`);
- the body is read up to :data:`MAX_BODY_BYTES` and no further, and reasons quote the
  URL and the status, never the body.

Where a URL points is not restricted: the CRL and responder of a private CA are often
on the internal network, and the module is the admin's. A server probed with such a
module can make the exporter send one plain GET or POST, without credentials, to an
address of its choosing, and learn at most the reason shown for it. Scheduled targets
are the admin's, and ``/probe`` runs a module that checks revocation only on those and
on targets matching ``probe.allowed_targets`` (``ModuleConfig.active_checks``), never on
a server whoever asks chooses.

Sample lines of the report (``mail-exporter probe``, ``/probe?debug=true``)::

    Revocation:
      crl                  good: not on the CRL of http://crl.example.net/r1.crl (next up...
      ocsp                 error: http://ocsp.example.net/ did not answer in time (2000.3 ms)
      stapling             error: no stapled response: the server did not promise one (no...
      verdict              not revoked
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Generic, TypeVar

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID
from yarl import URL

from mail_exporter.config.probes import RevocationConfig
from mail_exporter.printable import printable
from mail_exporter.probes.revocation_answers import (
    STAPLED,
    AnswerSource,
    OCSPAnswer,
    RevocationError,
    VerifiedCRL,
    crl_verdict,
    read_ocsp,
    shown_name,
    single_about,
    verified_crl,
)
from mail_exporter.quiet_http import TooLarge, bounded_body, quiet_session

logger = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 10 * 1024 * 1024
"""Largest CRL or OCSP answer read; the largest public CRLs are a few MiB."""
MAX_URL_CHARACTERS: Final = 2048
"""Longest URL taken from a certificate."""
UNDATED_KEEP_SECONDS: Final = 3600.0
"""How long an answer without a nextUpdate is kept."""
LONGEST_KEEP_SECONDS: Final = 86400.0
"""Longest an answer is kept, whatever its nextUpdate says."""
CRL_ENTRIES: Final = 64
CRL_BYTES: Final = 64 * 1024 * 1024
"""Bounds of the CRLs kept, by count and by their total size."""
OCSP_ENTRIES: Final = 4096
OCSP_BYTES: Final = 16 * 1024 * 1024
"""Bounds of the OCSP answers kept (one per certificate)."""
STAPLE_KEEP_SECONDS: Final = 3600.0
"""Longest what a server stapled (or that it stapled nothing) is kept."""
STAPLE_ENTRIES: Final = 4096
STAPLE_BYTES: Final = 16 * 1024 * 1024
"""Bounds of the staples kept (one per server and leaf)."""
SHOWN_DETAIL_CHARACTERS: Final = 400
"""Longest reason kept (it quotes URLs from the certificate)."""

V = TypeVar("V")
T = TypeVar("T")


class RevocationMethod(StrEnum):
    """The ways to ask (label values of ``mail_tls_revocation_check_success``)."""

    CRL = "crl"
    OCSP = "ocsp"
    STAPLING = "stapling"


@dataclass(frozen=True)
class MethodAnswer:
    """What one method said: revoked (True), not revoked (False) or nothing (None), why,
    and how long it took (a kept answer takes no time)."""

    method: RevocationMethod
    revoked: bool | None
    detail: str
    seconds: float
    stapled: bool | None = None
    """Stapling only: whether the server stapled an answer (None: not known)."""


@dataclass(frozen=True)
class Revocation:
    """The revocation checks of one probe, in the order of :class:`RevocationMethod`."""

    answers: tuple[MethodAnswer, ...]

    @property
    def revoked(self) -> bool | None:
        """True if any method says revoked, False if some answered and none does, else None."""
        said = [answer.revoked for answer in self.answers if answer.revoked is not None]
        return any(said) if said else None

    @property
    def stapled(self) -> bool | None:
        """Whether the server stapled an answer; None without the stapling check, or when
        it could not tell."""
        return next(
            (a.stapled for a in self.answers if a.method is RevocationMethod.STAPLING), None
        )


@dataclass(frozen=True)
class Staple:
    """What a server answered a ClientHello asking it for a staple (:mod:`.stapling`)."""

    response: bytes | None
    """The OCSPResponse it stapled (DER, unchecked); None when it stapled none."""
    detail: str
    """Why there is none, or why it is not known (for the log)."""
    failed: bool = False
    """The attempt failed (a timeout, garbage, a refused STARTTLS): it is not known
    whether the server staples."""


@dataclass(frozen=True)
class StapleSource:
    """How the stapling check asks the server a probe talks to: ``fetch(deadline)`` (the
    event loop's clock) makes the attempt and never raises for what the server does;
    ``key`` names the server among the staples kept."""

    key: Hashable
    fetch: Callable[[float], Coroutine[Any, Any, Staple]]


@dataclass(frozen=True)
class _Kept(Generic[V]):
    value: V
    expires: float  # Unix seconds
    size: int


class _Answers(Generic[V]):
    """Answers by key until they expire, least recently used dropped beyond the bounds;
    one fetch in flight per key, which every probe needing that key meanwhile awaits."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._kept: OrderedDict[Hashable, _Kept[V]] = OrderedDict()
        self._bytes = 0
        self._fetching: dict[Hashable, asyncio.Task[_Kept[V]]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    async def get(
        self,
        key: Hashable,
        fetch: Callable[[], Coroutine[Any, Any, _Kept[V]]],
        wait_until: float | None = None,
    ) -> tuple[V, bool]:
        """The answer for ``key`` and whether it was kept; ``fetch`` it when not kept.

        ``fetch`` must end by itself (its caller's deadline): a later caller waits for it,
        until ``wait_until`` (the event loop's clock; ``TimeoutError``) when given, so
        that the caller who started it gets what it ended with, even at its deadline."""
        kept = self._kept.get(key)
        if kept is not None:
            if kept.expires > time.time():
                self._kept.move_to_end(key)
                return kept.value, True
            self._drop(key)
        task = self._fetching.get(key)
        started = task is None
        if task is None:
            task = asyncio.create_task(fetch())
            self._fetching[key] = task
            task.add_done_callback(functools.partial(self._fetched, key))
        # Shielded: a caller whose own deadline passes must not cancel the others' fetch.
        async with asyncio.timeout_at(None if started else wait_until):
            return (await asyncio.shield(task)).value, False

    def _fetched(self, key: Hashable, task: asyncio.Task[_Kept[V]]) -> None:
        del self._fetching[key]
        if task.cancelled() or task.exception() is not None:  # failures are not kept
            return
        kept = task.result()
        if kept.size > self._max_bytes or kept.expires <= time.time():
            return
        self._kept[key] = kept
        self._bytes += kept.size
        while len(self._kept) > self._max_entries or self._bytes > self._max_bytes:
            self._drop(next(iter(self._kept)))

    def _drop(self, key: Hashable) -> None:
        self._bytes -= self._kept.pop(key).size


class RevocationCache:
    """CRLs, OCSP answers and staples of every probe, kept until their nextUpdate (at most
    a day for the first two, an hour for staples; bounded).

    The exporter owns one and hands it to each probe; a probe without one keeps nothing.
    """

    def __init__(self) -> None:
        self.crls: _Answers[VerifiedCRL] = _Answers(CRL_ENTRIES, CRL_BYTES)
        self.ocsp: _Answers[OCSPAnswer] = _Answers(OCSP_ENTRIES, OCSP_BYTES)
        self.staples: _Answers[Staple] = _Answers(STAPLE_ENTRIES, STAPLE_BYTES)


async def check_revocation(
    chain: tuple[bytes, ...],
    settings: RevocationConfig,
    cache: RevocationCache,
    deadline: float,
    log: Callable[[str], None],
    server: StapleSource | None = None,
) -> Revocation:
    """Ask each method ``settings`` enables about the leaf of ``chain`` (DER, leaf first)
    by ``deadline`` (the event loop's clock), the server's staple through ``server``; each
    answer goes to ``log`` too. Never raises."""
    methods = [method for method in RevocationMethod if getattr(settings, method.value)]
    try:
        leaf, issuer = _leaf_and_issuer(chain)
    except RevocationError as error:
        answers = [_answer(method, None, str(error), 0.0) for method in methods]
    else:
        async with quiet_session() as http:  # bounded by the probe's deadline
            asks: dict[RevocationMethod, Callable[[], Awaitable[tuple[bool, str]]]] = {
                RevocationMethod.CRL: lambda: _ask_crl(leaf, issuer, http, cache, deadline),
                RevocationMethod.OCSP: lambda: _ask_ocsp(leaf, issuer, http, cache, deadline),
                RevocationMethod.STAPLING: lambda: _ask_server(
                    leaf, issuer, server, cache, deadline
                ),
            }
            answers = await asyncio.gather(*(_ask(method, asks[method]) for method in methods))
    for answer in answers:
        log(f"revocation by {answer.method.value}: {verdict_text(answer)}")
    return Revocation(tuple(answers))


async def _ask(
    method: RevocationMethod, ask: Callable[[], Awaitable[tuple[bool, str]]]
) -> MethodAnswer:
    started = time.monotonic()
    revoked: bool | None
    stapled = None
    try:
        # Every wait in there is bounded by the deadline (_within), and named by its URL.
        revoked, detail = await ask()
        if method is RevocationMethod.STAPLING:  # an answer by stapling was stapled
            stapled = True
    except RevocationError as error:
        revoked, detail, stapled = None, str(error), error.stapled
    except Exception as error:  # a bug here must cost the check, never the probe
        logger.exception("%s revocation check raised", method.value)
        revoked, detail = None, f"internal error: {error!r}"
    return _answer(method, revoked, detail, time.monotonic() - started, stapled)


def _answer(
    method: RevocationMethod,
    revoked: bool | None,
    detail: str,
    seconds: float,
    stapled: bool | None = None,
) -> MethodAnswer:
    shown = printable(detail, SHOWN_DETAIL_CHARACTERS)
    return MethodAnswer(method, revoked, shown, seconds, stapled)


def verdict_text(answer: MethodAnswer) -> str:
    """``good: ...``, ``REVOKED: ...`` or ``error: ...``, for the log and the report."""
    word = {None: "error", True: "REVOKED", False: "good"}[answer.revoked]
    return f"{word}: {answer.detail}"


def _leaf_and_issuer(chain: tuple[bytes, ...]) -> tuple[x509.Certificate, x509.Certificate]:
    if not chain:
        raise RevocationError("the server presented no certificate")
    if len(chain) < 2:
        raise RevocationError(
            "the server presented the leaf without its issuer, which the check needs"
        )
    try:
        leaf, issuer = (x509.load_der_x509_certificate(der) for der in chain[:2])
    except ValueError as error:
        raise RevocationError(f"unreadable certificate: {error}") from None
    try:
        leaf.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise RevocationError(
            f"the certificate presented after the leaf ({shown_name(issuer.subject)}) "
            "did not issue it"
        ) from None
    return leaf, issuer


def _extension(leaf: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType:
    """The leaf's extension of ``kind``; :class:`RevocationError` when absent or unreadable."""
    try:
        return leaf.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        raise RevocationError(f"the certificate has no {kind.__name__} extension") from None
    except ValueError as error:  # a malformed extension
        raise RevocationError(f"unreadable certificate extension: {error}") from None


def _crl_urls(leaf: x509.Certificate) -> Iterator[str]:
    points = _extension(leaf, x509.CRLDistributionPoints)
    assert isinstance(points, x509.CRLDistributionPoints)
    for point in points:
        if point.crl_issuer is None:  # an indirect CRL's point names another issuer
            for name in point.full_name or ():
                if isinstance(name, x509.UniformResourceIdentifier):
                    yield name.value


def _ocsp_urls(leaf: x509.Certificate) -> Iterator[str]:
    access = _extension(leaf, x509.AuthorityInformationAccess)
    assert isinstance(access, x509.AuthorityInformationAccess)
    for description in access:
        location = description.access_location
        if description.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            location, x509.UniformResourceIdentifier
        ):
            yield location.value


def http_url(candidates: Iterator[str], what: str) -> URL:
    """The first of ``candidates`` that is an ``http://`` URL the check may fetch."""
    skipped = []
    for text in candidates:
        url = _plain_http(text)
        if url is not None:
            return url
        skipped.append(text if len(text) <= 80 else text[:80] + "…")
    if not skipped:
        raise RevocationError(f"the certificate names no {what}")
    raise RevocationError(
        f"the certificate names no http:// {what} (only {', '.join(skipped)}: not fetched)"
    )


def _plain_http(text: str) -> URL | None:
    if len(text) > MAX_URL_CHARACTERS:
        return None
    try:
        url = URL(text)
    except (ValueError, TypeError):
        return None
    if url.scheme != "http" or not url.host or url.user is not None or url.password is not None:
        return None
    return url


async def _fetch(http: aiohttp.ClientSession, url: URL, ocsp_request: bytes | None) -> bytes:
    """GET ``url``, or POST an OCSP request to it; the body of a 200, at most MAX_BODY_BYTES."""
    method, headers = "GET", {}
    if ocsp_request is not None:
        method = "POST"
        headers = {
            "Content-Type": "application/ocsp-request",
            "Accept": "application/ocsp-response",
        }
    try:
        async with http.request(
            method, url, data=ocsp_request, headers=headers, allow_redirects=False
        ) as response:
            if response.status != 200:
                redirect = " (redirects are not followed)" if 300 <= response.status < 400 else ""
                raise RevocationError(f"{url} answered HTTP {response.status}{redirect}")
            return await bounded_body(response, MAX_BODY_BYTES)
    except TooLarge:
        raise RevocationError(f"{url} sent more than {MAX_BODY_BYTES} bytes") from None
    except (aiohttp.ClientError, OSError) as error:
        raise RevocationError(f"cannot fetch {url}: {error or type(error).__name__}") from None


async def _within(deadline: float, url: URL, work: Awaitable[T]) -> T:
    """``work`` until ``deadline``, else an error naming ``url``. Around a fetch, which
    others may share, it is the starter's deadline; around waiting for it, the waiter's."""
    try:
        async with asyncio.timeout_at(deadline):
            return await work
    except TimeoutError:
        raise RevocationError(f"{url} did not answer in time") from None


async def _kept_or_fetched(
    answers: _Answers[V],
    key: Hashable,
    fetch: Callable[[], Coroutine[Any, Any, _Kept[V]]],
    url: URL,
    deadline: float,
) -> tuple[V, bool]:
    """The answer for ``key`` in ``answers`` and whether it was kept, else ``fetch``ed: the
    fetch and the wait for it each bounded by ``deadline`` (see :func:`_within`)."""
    return await _within(deadline, url, answers.get(key, lambda: _within(deadline, url, fetch())))


@contextmanager
def _malformed(sender: URL | str, what: str) -> Iterator[None]:
    """What ``sender`` sent is parsed as it is read: a ``ValueError`` on the way is its fault."""
    try:
        yield
    except ValueError as error:
        raise RevocationError(f"{sender} sent a malformed {what}: {error}") from None


def _keep_until(next_update: datetime | None) -> float:
    now = time.time()
    if next_update is None:
        return now + UNDATED_KEEP_SECONDS
    return min(next_update.timestamp(), now + LONGEST_KEEP_SECONDS)


async def _ask_crl(
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    http: aiohttp.ClientSession,
    cache: RevocationCache,
    deadline: float,
) -> tuple[bool, str]:
    url = http_url(_crl_urls(leaf), "CRL distribution point")
    issuer_key = x509.SubjectKeyIdentifier.from_public_key(issuer.public_key()).digest

    async def fetch() -> _Kept[VerifiedCRL]:
        body = await _fetch(http, url, None)
        with _malformed(url, "CRL"):
            crl = await asyncio.to_thread(verified_crl, body, issuer, str(url))
        return _Kept(crl, _keep_until(crl.next_update), len(body))

    key = (str(url), issuer_key)
    known, kept = await _kept_or_fetched(cache.crls, key, fetch, url, deadline)
    verdict = known.verdicts.get(leaf.serial_number)
    if verdict is None:
        with _malformed(url, "CRL"):
            verdict = await asyncio.to_thread(crl_verdict, known, leaf.serial_number)
    revoked, detail = verdict
    return revoked, detail + (" (kept from an earlier fetch)" if kept else "")


async def _ask_ocsp(
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    http: aiohttp.ClientSession,
    cache: RevocationCache,
    deadline: float,
) -> tuple[bool, str]:
    url = http_url(_ocsp_urls(leaf), "OCSP responder")
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()

    async def fetch() -> _Kept[OCSPAnswer]:
        body = await _fetch(http, url, request.public_bytes(serialization.Encoding.DER))
        with _malformed(url, "OCSP response"):
            answer, next_update = read_ocsp(
                body, leaf, issuer, AnswerSource(f"answer of {url}", str(url))
            )
        return _Kept(answer, _keep_until(next_update), len(body))

    key = (str(url), request.issuer_name_hash, request.issuer_key_hash, request.serial_number)
    answer, kept = await _kept_or_fetched(cache.ocsp, key, fetch, url, deadline)
    return answer.revoked, answer.detail + (" (kept from an earlier answer)" if kept else "")


async def _ask_server(
    leaf: x509.Certificate,
    issuer: x509.Certificate,
    server: StapleSource | None,
    cache: RevocationCache,
    deadline: float,
) -> tuple[bool, str]:
    """The verdict of the server's staple, verified as a responder's answer is."""
    assert server is not None, "the stapling check needs the server to ask"

    async def fetch() -> _Kept[Staple]:
        staple = await server.fetch(deadline)
        size = len(staple.response or b"") + len(staple.detail)
        return _Kept(staple, _staple_keep_until(staple, leaf, issuer), size)

    key = (server.key, leaf.fingerprint(hashes.SHA256()))
    try:
        staple, kept = await cache.staples.get(key, fetch, wait_until=deadline)
    except TimeoutError:  # another probe's stapling connection, still waiting for the server
        raise RevocationError("the server did not answer in time") from None
    suffix = " (kept from an earlier connection)" if kept else ""
    if staple.failed:
        raise RevocationError(staple.detail + suffix)
    if staple.response is None:
        raise RevocationError(f"no stapled response: {staple.detail}{suffix}", stapled=False)
    try:
        with _malformed("the server", "OCSP response"):
            answer, _ = read_ocsp(staple.response, leaf, issuer, STAPLED)
    except RevocationError as error:
        raise RevocationError(f"{error}{suffix}", stapled=True) from None
    return answer.revoked, answer.detail + suffix


def _staple_keep_until(staple: Staple, leaf: x509.Certificate, issuer: x509.Certificate) -> float:
    """An hour, or the staple's nextUpdate when that comes sooner (the server should have
    a new one by then); an hour for one already out of date, which the server staples
    until it fetches another, and for no staple."""
    now = time.time()
    longest = now + STAPLE_KEEP_SECONDS
    if staple.response is None:
        return longest
    try:
        single = single_about(ocsp.load_der_ocsp_response(staple.response), leaf, issuer)
        next_update = single.next_update_utc if single is not None else None
    except ValueError:  # no answer: an error of every probe until it is replaced
        return longest
    if next_update is not None and now < next_update.timestamp() < longest:
        return next_update.timestamp()
    return longest
