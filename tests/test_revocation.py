"""Revocation checks of the leaf: CRL and OCSP against a real Postfix presenting each leaf,
a loopback CRL server and OpenSSL's OCSP responder; hostile answers; the exporter's /metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mail_exporter.cli import main
from mail_exporter.config.probes import ModuleConfig
from mail_exporter.metrics import probe_families
from mail_exporter.probes import ProbeMemory, ProbeResult, RevocationCache, run_probe
from mail_exporter.probes.revocation import (
    MAX_BODY_BYTES,
    MAX_URL_CHARACTERS,
    MethodAnswer,
    Revocation,
    RevocationMethod,
    _Answers,
    _Kept,
    http_url,
)
from mail_exporter.probes.revocation_answers import RevocationError
from mail_exporter.targets import parse_address
from tests.conftest import _require_binary
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import RevocableLeaf, RevocationPKI, create_revocation_pki
from tests.realservers.revocation import (
    ChainPostfix,
    Document,
    Endless,
    Hang,
    Redirect,
    Responder,
    RevocationHTTPServer,
)
from tests.realservers.runtime import free_port
from tests.served import get, metrics_with, served_exporter

pytestmark = pytest.mark.integration

CRL, OCSP = RevocationMethod.CRL, RevocationMethod.OCSP
PROBE_SECONDS = 10.0
"""Module timeout of the probes here: a hang guard (every check answers in milliseconds)."""


@dataclass(frozen=True)
class World:
    http: RevocationHTTPServer
    pki: RevocationPKI
    postfix: ChainPostfix
    refused_port: int

    def port(self, leaf: str) -> int:
        return self.postfix.chain_ports[leaf]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, dovecot: Dovecot) -> Iterator[World]:
    _require_binary("postfix")
    directory = tmp_path_factory.mktemp("revocation")
    http = RevocationHTTPServer(directory)
    refused = free_port()  # never bound: connections are refused
    both = (http.url("/ca.crl"), http.url("/ocsp"))
    leaves = {
        "good": RevocableLeaf(*both),
        "revoked": RevocableLeaf(*both, revoked=True),
        "unreachable": RevocableLeaf(
            f"http://127.0.0.1:{refused}/ca.crl", f"http://127.0.0.1:{refused}/ocsp"
        ),
        "wrong_key": RevocableLeaf(http.url("/wrong-key.crl"), http.url("/rogue-ocsp")),
        "oversize": RevocableLeaf(http.url("/endless.crl"), http.url("/huge-ocsp")),
        "hanging": RevocableLeaf(http.url("/hang.crl"), http.url("/hang-ocsp")),
        "redirect": RevocableLeaf(http.url("/redirect.crl"), "ldap://127.0.0.1/cn=ocsp"),
        "bare": RevocableLeaf(None, None),
        "garbage": RevocableLeaf(http.url("/garbage"), http.url("/garbage")),
        "stale": RevocableLeaf(http.url("/stale.crl"), http.url("/ocsp"), listed=False),
        "issuer_signed": RevocableLeaf(None, http.url("/ocsp-by-issuer"), revoked=True),
    }
    pki = create_revocation_pki(directory / "pki", leaves)
    responder = Responder(pki.index, pki.intermediate, pki.responder_cert, pki.responder_key)
    rogue = Responder(
        pki.index, pki.intermediate, pki.rogue_responder_cert, pki.rogue_responder_key
    )
    http.routes = {
        "/ca.crl": Document(pki.crl.read_bytes()),
        "/ocsp": responder,
        "/wrong-key.crl": Document(pki.wrong_key_crl.read_bytes()),
        "/rogue-ocsp": rogue,
        "/endless.crl": Endless(MAX_BODY_BYTES, announce_length=False),
        "/huge-ocsp": Endless(MAX_BODY_BYTES, announce_length=True),
        "/hang.crl": Hang(),
        "/hang-ocsp": Hang(),
        "/redirect.crl": Redirect(http.url("/ca.crl").replace("http:", "https:")),
        "/garbage": Document(b"<html>not found</html>", "text/html"),
        "/stale.crl": Document(pki.stale_crl.read_bytes()),
        "/ocsp-by-issuer": Responder(
            pki.index, pki.intermediate, pki.intermediate, pki.intermediate_key
        ),
    }
    http.start()
    chains = {name: (files.key, files.chain) for name, files in pki.leaves.items()}
    chains["no_issuer"] = (pki.leaves["good"].key, pki.leaves["good"].cert)
    not_its_issuer = directory / "not-its-issuer.pem"
    not_its_issuer.write_bytes(
        pki.leaves["good"].cert.read_bytes() + pki.rogue_responder_cert.read_bytes()
    )
    chains["not_its_issuer"] = (pki.leaves["good"].key, not_its_issuer)
    postfix = ChainPostfix(directory / "postfix", chains, dovecot.auth_port, dovecot.lmtp_port)
    postfix.start()
    try:
        yield World(http, pki, postfix, refused)
    finally:
        postfix.stop()
        http.stop()


def module(world: World, timeout: float = PROBE_SECONDS, **revocation: bool) -> ModuleConfig:
    return ModuleConfig.model_validate(
        {
            "protocol": "smtp",
            "tls": "starttls",
            "timeout": f"{round(timeout * 1000)}ms",
            "tls_config": {"ca_file": str(world.pki.root)},
            "revocation": revocation or {"crl": True, "ocsp": True},
        }
    )


async def probe(
    world: World, leaf: str, cache: RevocationCache | None = None, **settings: Any
) -> ProbeResult:
    chosen = module(world, **settings)
    address = parse_address(f"127.0.0.1:{world.port(leaf)}")
    return await run_probe(
        address, chosen, chosen.timeout_seconds, ProbeMemory(revocation=cache or RevocationCache())
    )


def answers(result: ProbeResult) -> dict[RevocationMethod, tuple[bool | None, str]]:
    assert result.revocation is not None, "\n".join(result.log)
    return {a.method: (a.revoked, a.detail) for a in result.revocation.answers}


def samples(result: ProbeResult) -> dict[str, dict[tuple[str, ...], float]]:
    """The revocation families of /probe's exposition: name -> label values -> value."""
    found: dict[str, dict[tuple[str, ...], float]] = {}
    for family in probe_families(("protocol",), ["smtp"], result, {}, None):
        if family.name.startswith(("mail_tls_cert_revoked", "mail_tls_revocation")):
            found[family.name] = {tuple(s.labels.values())[1:]: s.value for s in family.samples}
    return found


async def test_good_leaf_reads_good_by_both_methods(world: World) -> None:
    result = await probe(world, "good")
    assert result.success, "\n".join(result.log)
    said = answers(result)
    assert said[CRL][0] is False and "not on the CRL of http://127.0.0.1" in said[CRL][1]
    assert said[OCSP][0] is False and said[OCSP][1].startswith("good per http://127.0.0.1")
    assert samples(result) == {
        "mail_tls_cert_revoked": {(): 0.0},
        "mail_tls_revocation_check_success": {("crl",): 1.0, ("ocsp",): 1.0},
    }
    assert any("revocation by ocsp: good" in line for line in result.log)


async def test_revoked_leaf_reads_revoked_by_both_methods(world: World) -> None:
    result = await probe(world, "revoked")
    assert result.success, "revocation never changes the probe's verdict"
    said = answers(result)
    for method in (CRL, OCSP):
        revoked, detail = said[method]
        assert revoked is True, detail
        assert "(keyCompromise)" in detail
    assert samples(result) == {
        "mail_tls_cert_revoked": {(): 1.0},
        "mail_tls_revocation_check_success": {("crl",): 1.0, ("ocsp",): 1.0},
    }


@pytest.mark.parametrize(("method", "setting"), [(CRL, "crl"), (OCSP, "ocsp")])
async def test_each_method_alone(world: World, method: RevocationMethod, setting: str) -> None:
    result = await probe(world, "revoked", **{setting: True})
    assert list(answers(result)) == [method]
    assert answers(result)[method][0] is True


async def test_unreachable_server_is_an_error_and_no_verdict(world: World) -> None:
    result = await probe(world, "unreachable")
    assert result.success
    said = answers(result)
    port = world.refused_port
    assert said[CRL][0] is None and said[OCSP][0] is None
    assert said[CRL][1].startswith(f"cannot fetch http://127.0.0.1:{port}/ca.crl: ")
    assert said[OCSP][1].startswith(f"cannot fetch http://127.0.0.1:{port}/ocsp: ")
    assert samples(result) == {
        "mail_tls_cert_revoked": {},
        "mail_tls_revocation_check_success": {("crl",): 0.0, ("ocsp",): 0.0},
    }


async def test_wrong_signatures_are_errors(world: World) -> None:
    """A CRL signed by another key says nobody is revoked; an OCSP answer signed by a
    responder the issuer never delegated to says good: neither may be believed."""
    said = answers(await probe(world, "wrong_key"))
    assert said[CRL] == (
        None,
        f"the signature of the CRL of {world.http.url('/wrong-key.crl')} does not verify with the issuer",
    )
    assert said[OCSP] == (
        None,
        f"the answer of {world.http.url('/rogue-ocsp')} is signed by "
        "CN=rogue OCSP responder,O=mail_exporter tests, which the issuer did not issue",
    )


async def test_oversize_answers_are_errors_within_the_bound(world: World) -> None:
    started = time.monotonic()
    said = answers(await probe(world, "oversize"))
    assert said[CRL] == (
        None,
        f"{world.http.url('/endless.crl')} sent more than {MAX_BODY_BYTES} bytes",
    )
    assert said[OCSP] == (
        None,
        f"{world.http.url('/huge-ocsp')} sent more than {MAX_BODY_BYTES} bytes",
    )
    assert time.monotonic() - started < PROBE_SECONDS


async def test_hanging_server_ends_at_the_probe_deadline(world: World) -> None:
    timeout = 1.5
    started = time.monotonic()
    result = await probe(world, "hanging", timeout=timeout)
    elapsed = time.monotonic() - started
    assert result.success and result.duration_seconds < timeout
    assert elapsed < timeout + 2.0, "the checks must end by the probe's deadline"
    said = answers(result)
    assert said[CRL][0] is None and said[OCSP][0] is None
    assert "did not answer in time" in said[CRL][1]
    assert samples(result)["mail_tls_cert_revoked"] == {}


async def test_redirects_and_other_schemes_are_not_followed(world: World) -> None:
    said = answers(await probe(world, "redirect"))
    assert said[CRL] == (
        None,
        f"{world.http.url('/redirect.crl')} answered HTTP 302 (redirects are not followed)",
    )
    assert said[OCSP] == (
        None,
        "the certificate names no http:// OCSP responder (only ldap://127.0.0.1/cn=ocsp: not fetched)",
    )


async def test_what_is_not_an_answer_is_an_error(world: World) -> None:
    said = answers(await probe(world, "garbage"))
    url = world.http.url("/garbage")
    assert said[CRL] == (None, f"{url} sent no CRL")
    assert said[OCSP] == (None, f"the answer of {url} is no OCSP response")


async def test_out_of_date_crl_and_unknown_certificate_are_errors(world: World) -> None:
    """Neither a CRL past its nextUpdate nor a responder that does not know the
    certificate may pass for "not revoked"."""
    said = answers(await probe(world, "stale"))
    assert said[CRL][0] is None
    assert said[CRL][1].startswith(
        f"the CRL of {world.http.url('/stale.crl')} is out of date (next update was "
    )
    assert said[OCSP] == (
        None,
        f"the answer of {world.http.url('/ocsp')} says unknown: its responder does not know "
        "the certificate",
    )


async def test_leaf_without_urls_is_an_error(world: World) -> None:
    said = answers(await probe(world, "bare"))
    assert said[CRL] == (None, "the certificate has no CRLDistributionPoints extension")
    assert said[OCSP] == (None, "the certificate has no AuthorityInformationAccess extension")


async def test_server_presenting_no_issuer_is_an_error(world: World) -> None:
    result = await probe(world, "no_issuer")
    reason = "the server presented the leaf without its issuer, which the check needs"
    assert answers(result) == {CRL: (None, reason), OCSP: (None, reason)}
    assert result.tls is not None and not result.tls.verified


async def test_server_presenting_another_certificate_as_issuer_is_an_error(
    world: World,
) -> None:
    reason = (
        "the certificate presented after the leaf (CN=rogue OCSP responder,"
        "O=mail_exporter tests) did not issue it"
    )
    assert answers(await probe(world, "not_its_issuer")) == {
        CRL: (None, reason),
        OCSP: (None, reason),
    }


async def test_ocsp_answer_signed_by_the_issuer_itself(world: World) -> None:
    said = answers(await probe(world, "issuer_signed", ocsp=True))
    assert said[OCSP][0] is True, said[OCSP][1]


async def test_answers_are_kept_until_next_update(world: World) -> None:
    cache = RevocationCache()
    before = (world.http.hits["/ca.crl"], world.http.hits["/ocsp"])
    first = answers(await probe(world, "good", cache))
    second = answers(await probe(world, "good", cache))
    third = answers(await probe(world, "revoked", cache))  # same CRL, another OCSP answer
    assert (world.http.hits["/ca.crl"], world.http.hits["/ocsp"]) == (before[0] + 1, before[1] + 2)
    assert "kept" not in first[CRL][1] and "kept" not in first[OCSP][1]
    assert second[CRL][1].endswith("(kept from an earlier fetch)")
    assert second[OCSP][1].endswith("(kept from an earlier answer)")
    assert third[CRL][0] is True and third[OCSP][0] is True


async def test_callers_at_once_share_one_fetch_and_failures_are_not_kept() -> None:
    answers_kept = RevocationCache().ocsp
    release, calls = asyncio.Event(), []

    async def fetch() -> _Kept[Any]:
        calls.append(1)
        await release.wait()
        return _Kept("answer", time.time() + 60, 10)

    waiting = [asyncio.create_task(answers_kept.get("key", fetch)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == [("answer", False)] * 3
    assert len(calls) == 1
    assert await answers_kept.get("key", fetch) == ("answer", True)

    async def fail() -> _Kept[Any]:
        raise RevocationError("down")

    for _ in range(2):
        with pytest.raises(RevocationError):
            await answers_kept.get("other", fail)
    assert len(answers_kept) == 1


async def test_a_caller_waiting_on_another_fetch_stops_at_its_own_deadline() -> None:
    """The caller who started a fetch gets what it ends with (its reason, at its deadline);
    one waiting on it stops at its own ``wait_until``, and the fetch goes on for the first."""
    answers_kept = RevocationCache().staples
    release = asyncio.Event()

    async def fetch() -> _Kept[Any]:
        await release.wait()
        return _Kept("answer", time.time() + 60, 10)

    loop = asyncio.get_running_loop()
    first = asyncio.create_task(answers_kept.get("key", fetch, wait_until=loop.time()))
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await answers_kept.get("key", fetch, wait_until=loop.time() + 0.05)
    release.set()
    assert await first == ("answer", False)


async def test_kept_answers_are_bounded() -> None:
    answers_kept = _Answers[str](max_entries=3, max_bytes=100)

    def sized(size: int) -> Callable[[], Coroutine[Any, Any, _Kept[str]]]:
        async def fetch() -> _Kept[str]:
            return _Kept(str(size), time.time() + 60, size)

        return fetch

    for key in range(5):
        await answers_kept.get(key, sized(10))
    assert len(answers_kept) == 3
    await answers_kept.get("large", sized(95))  # pushes out all but itself
    assert len(answers_kept) == 1
    await answers_kept.get("too large", sized(101))  # never kept
    assert len(answers_kept) == 1


def test_report_shows_each_method_and_the_verdict(world: World) -> None:
    target = f"127.0.0.1:{world.port('revoked')}"
    outcome = CliRunner().invoke(
        main,
        ["probe", "--protocol", "smtp", "--tls", "starttls", "--ca-file", str(world.pki.root),
         "--revocation", target],
    )  # fmt: skip
    assert outcome.exit_code == 0, outcome.output
    lines = outcome.output.splitlines()
    start = lines.index("Revocation:")
    assert lines[start + 1].startswith("  crl                  REVOKED: revoked on ")
    assert lines[start + 2].startswith("  ocsp                 REVOKED: revoked on ")
    assert lines[start + 3].startswith("  stapling             error: no stapled response: ")
    assert lines[start + 4] == "  verdict              REVOKED"


def test_revocation_flag_needs_tls() -> None:
    outcome = CliRunner().invoke(main, ["probe", "--revocation", "127.0.0.1:25"])
    assert outcome.exit_code == 2
    assert "--tls-scan and --revocation check TLS: add --tls" in outcome.output


def test_exporter_metrics_carry_the_verdicts(world: World, tmp_path: Path) -> None:
    """The real exporter process: scheduled targets on /metrics, and /probe's report."""
    targets = "".join(
        f"  - {{name: {leaf}, address: '127.0.0.1:{world.port(leaf)}', module: checked}}\n"
        for leaf in ("good", "revoked", "unreachable")
    )
    config = tmp_path / "config.yml"
    config.write_text(
        "global: {interval: 1s}\n"
        "modules:\n  checked:\n    protocol: smtp\n    tls: starttls\n    timeout: 10s\n"
        f"    tls_config: {{ca_file: {world.pki.root}}}\n"
        "    revocation: {crl: true, ocsp: true}\n"
        f"targets:\n{targets}"
    )
    expected = {
        'mail_tls_cert_revoked{target="good",module="checked",protocol="smtp"} 0.0',
        'mail_tls_cert_revoked{target="revoked",module="checked",protocol="smtp"} 1.0',
        'mail_tls_revocation_check_success{target="unreachable",module="checked",protocol="smtp",method="crl"} 0.0',
        'mail_tls_revocation_check_success{target="good",module="checked",protocol="smtp",method="ocsp"} 1.0',
    }
    with served_exporter(tmp_path, config) as served:
        lines = metrics_with(served, expected)
        assert not any(
            line.startswith("mail_tls_cert_revoked{") and 'target="unreachable"' in line
            for line in lines
        )
        target = f"127.0.0.1:{world.port('revoked')}"
        report = get(served.port, f"/probe?target={target}&module=checked&debug=true").body
        assert "\nRevocation:\n  crl                  REVOKED: revoked on " in report
        assert "\n  verdict              REVOKED\n" in report
        assert '\nmail_tls_cert_revoked{protocol="smtp"} 1.0\n' in report


@pytest.mark.parametrize(
    ("urls", "reason"),
    [
        ([], "the certificate names no CRL distribution point"),
        (
            ["https://127.0.0.1/ca.crl", "ldap://127.0.0.1/cn=ca", "file:///etc/passwd"],
            "the certificate names no http:// CRL distribution point (only "
            "https://127.0.0.1/ca.crl, ldap://127.0.0.1/cn=ca, file:///etc/passwd: not fetched)",
        ),
        (
            ["http://user:secret@127.0.0.1/ca.crl"],
            "the certificate names no http:// CRL distribution point (only "
            "http://user:secret@127.0.0.1/ca.crl: not fetched)",
        ),
        (
            ["http://127.0.0.1/" + "a" * MAX_URL_CHARACTERS],
            "the certificate names no http:// CRL distribution point (only "
            f"http://127.0.0.1/{'a' * 63}…: not fetched)",
        ),
        (
            ["http:///ca.crl"],
            "the certificate names no http:// CRL distribution point (only http:///ca.crl: not fetched)",
        ),
    ],
    ids=["none", "other-schemes", "credentials", "too-long", "no-host"],
)
def test_only_plain_http_urls_are_fetched(urls: list[str], reason: str) -> None:
    with pytest.raises(RevocationError) as raised:
        http_url(iter(urls), "CRL distribution point")
    assert str(raised.value) == reason


def test_first_plain_http_url_is_taken() -> None:
    url = http_url(iter(["ldap://x/", "HTTP://127.0.0.1:8080/a.crl", "http://b/"]), "x")
    assert (url.scheme, url.host, url.port, url.path) == ("http", "127.0.0.1", 8080, "/a.crl")


def test_verdict_of_several_methods() -> None:
    def of(*said: bool | None) -> bool | None:
        return Revocation(tuple(MethodAnswer(CRL, s, "", 0.0) for s in said)).revoked

    assert of(True, None) is True
    assert of(False, True) is True
    assert of(False, None) is False
    assert of(None, None) is None
