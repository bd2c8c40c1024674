"""/probe is not an open proxy: the target allowlist, its config errors, refusals counted, and
a module's credentials sent only where they are allowed to go."""

from __future__ import annotations

import asyncio
import re
import signal
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from mail_exporter.allowlist import TargetAllowlist
from mail_exporter.config.root import parse_config
from mail_exporter.config.validation import ConfigError
from mail_exporter.exporter import Exporter
from mail_exporter.targets import parse_address
from mail_exporter.web import make_app
from tests.realservers.pki import PKI
from tests.scripted import scripted_server, send, server_context, smtp_script
from tests.test_web import sample

PATTERNS = [
    "mail.example.com",
    "*.example.net",
    "MX*.EXAMPLE.ORG",
    "192.0.2.0/24",
    "198.51.100.7",
    "2001:db8::/32",
]


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("mail.example.com", True),
        ("MAIL.Example.COM.", True),  # case and a trailing dot do not matter
        ("smtp.mail.example.com", False),
        ("mail.example.com.evil.test", False),
        ("mx1.example.net", True),
        ("a.b.example.net", True),  # * spans dots
        ("example.net", False),
        ("evil-example.net", False),
        ("mx7.example.org", True),
        ("mail.example.org", False),
        ("192.0.2.55", True),
        ("192.0.3.1", False),
        ("198.51.100.7", True),
        ("198.51.100.8", False),
        ("2001:db8::25", True),
        ("2001:db9::25", False),
        ("::ffff:192.0.2.1", True),  # IPv4-mapped: matched as the IPv4 address it reaches
        ("::ffff:10.0.0.1", False),
        ("10.0.0.1", False),
        ("localhost", False),
    ],
)
def test_allowlist_matching(host: str, allowed: bool) -> None:
    assert TargetAllowlist.of(PATTERNS).matches(host) is allowed


def test_names_never_match_networks_by_resolution() -> None:
    # "localhost" resolves into 127.0.0.0/8, but a name is only matched against names.
    allowlist = TargetAllowlist.of(["127.0.0.0/8", "*"])
    assert allowlist.matches("localhost")  # by the name pattern "*"
    assert not TargetAllowlist.of(["127.0.0.0/8"]).matches("localhost")
    assert not TargetAllowlist.of(["*"]).matches("127.0.0.1")  # "*" matches names only
    assert allowlist.matches("127.0.0.1")


def test_empty_allowlist_matches_nothing() -> None:
    """/probe treats an empty list as "any target" only for modules without credentials."""
    allowlist = TargetAllowlist.of([])
    assert allowlist.empty and not TargetAllowlist.of(["*"]).empty
    assert not allowlist.matches("anything.example") and not allowlist.matches("10.1.2.3")


def test_invalid_patterns_are_config_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            textwrap.dedent(
                """\
                probe:
                  allowed_targets:
                    - 192.0.2.1/24
                    - "mail example"
                    - 10.0.*
                    - 2001:db8::zz/32
                  allowed: []
                """
            )
        )
    assert caught.value.problems == [
        "probe.allowed_targets[0] (line 3): invalid network '192.0.2.1/24': "
        "192.0.2.1/24 has host bits set",
        "probe.allowed_targets[1] (line 4): invalid allowed target 'mail example': use a host "
        "name pattern such as *.example.com or a network such as 192.0.2.0/24",
        "probe.allowed_targets[2] (line 5): '10.0.*' looks like an address pattern: write "
        "networks in CIDR form, such as 10.0.0.0/16",
        "probe.allowed_targets[3] (line 6): invalid network '2001:db8::zz/32': "
        "'2001:db8::zz/32' does not appear to be an IPv4 or IPv6 network",
        "probe.allowed (line 7): unknown key",
    ]


@pytest.fixture
async def client_for(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    clients: list[TestClient[object, object]] = []

    async def build(body: str) -> TestClient[object, object]:
        config = tmp_path / "config.yml"
        config.write_text(textwrap.dedent(body))
        client: TestClient[object, object] = TestClient(TestServer(make_app(Exporter(config, {}))))
        await client.start_server()
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.close()


async def refusals(client: TestClient[object, object]) -> dict[str, float]:
    text = await (await client.get("/metrics")).text()
    return {
        reason: sample(text, "mail_exporter_probe_refused_total", reason=reason)
        for reason in (
            "bad_request",
            "unknown_module",
            "target_not_allowed",
            "credentials_not_allowed",
            "active_check_not_allowed",
        )
    }


async def test_allowed_target_is_probed_and_others_refused(client_for) -> None:
    async with scripted_server(smtp_script(["220 hello"])) as address:
        client = await client_for(
            """\
            modules:
              smtp: {protocol: smtp, timeout: 5s}
            probe:
              allowed_targets: [127.0.0.0/8, "*.example.com"]
            """
        )
        assert await refusals(client) == {
            "bad_request": 0.0,
            "unknown_module": 0.0,
            "target_not_allowed": 0.0,
            "credentials_not_allowed": 0.0,
            "active_check_not_allowed": 0.0,
        }
        allowed = await client.get("/probe", params={"module": "smtp", "target": address})
        assert allowed.status == 200
        assert 'mail_probe_success{protocol="smtp"} 1.0' in await allowed.text()
        for target in ("192.0.2.1:25", "[::1]:25", "localhost:25", "example.com:25"):
            refused = await client.get("/probe", params={"module": "smtp", "target": target})
            assert refused.status == 403
            assert await refused.text() == (
                f"target {target!r} is not allowed: /probe only probes targets matching "
                "probe.allowed_targets and the targets scheduled with the module\n"
            )
        assert (
            await client.get("/probe", params={"module": "imap", "target": address})
        ).status == 400
        for params in ({"module": "smtp"}, {"module": "smtp", "target": address, "user": "x"}):
            assert (await client.get("/probe", params=params)).status == 400
        assert await refusals(client) == {
            "bad_request": 2.0,
            "unknown_module": 1.0,
            "target_not_allowed": 4.0,
            "credentials_not_allowed": 0.0,
            "active_check_not_allowed": 0.0,
        }


async def test_without_allowlist_any_target_is_probed(client_for) -> None:
    async with scripted_server(smtp_script(["220 hello"]), host="::1") as address:
        client = await client_for("modules:\n  smtp: {protocol: smtp, timeout: 5s}\n")
        response = await client.get("/probe", params={"module": "smtp", "target": address})
        assert response.status == 200
        assert (await refusals(client))["target_not_allowed"] == 0.0


@contextmanager
def hang_guard(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (re's matching loop checks for signals)."""

    def interrupt(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(
    "pattern",
    ["*a*a*a*a*a*a*a*.example.com", "*-*-*-*-*-*-*-*-*-*-*", "a*a*a*a*a*a*a*a*a*a*a*a*b"],
)
def test_star_patterns_match_in_linear_time(pattern: str) -> None:
    """Several * in one pattern must not backtrack: a crafted 250-character name would
    otherwise hold the event loop for hours."""
    allowlist = TargetAllowlist.of([pattern])
    names = [
        "a" * 237 + ".example.net",
        "a-" * 124 + "a",
        "a" * 250,
        "a." * 125,
    ]
    for name in names:
        with hang_guard(10):
            started = time.perf_counter()
            allowlist.matches(name)
            assert time.perf_counter() - started < 0.5, (pattern, name)


@given(
    pattern=st.text(alphabet="ab.*", min_size=1, max_size=8).filter(
        lambda text: not text.startswith(".") and not text.endswith(".")
    ),
    name=st.text(alphabet="ab.", min_size=1, max_size=12).filter(
        lambda text: not text.endswith(".")  # a trailing dot is no part of a name
    ),
)
def test_star_matching_is_glob_matching(pattern: str, name: str) -> None:
    """* stands for any run of characters, dots included; everything else for itself."""
    expected = re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), name) is not None
    assert TargetAllowlist.of([pattern]).matches(name) is expected


@pytest.mark.parametrize(
    ("scheduled", "requested", "same"),
    [
        ("mail.example.com:25", "MAIL.Example.COM.:25", True),
        ("MAIL.example.com.:25", "mail.example.com:25", True),
        ("mail.example.com:25", "mail.example.com:26", False),
        ("mail.example.com:25", "mail.example.com.evil.test:25", False),
        ("127.0.0.1:25", "[::ffff:127.0.0.1]:25", True),  # the same IPv4 host
        ("[::ffff:127.0.0.1]:25", "127.0.0.1:25", True),
        ("[2001:db8::1]:25", "[2001:DB8:0:0::1]:25", True),
        ("127.0.0.1:25", "[::1]:25", False),
        ("127.0.0.1:25", "[::ffff:127.0.0.2]:25", False),
        ("127.0.0.1:25", "[::127.0.0.1]:25", False),  # IPv4-compatible: another address
        ("127.0.0.1:25", "localhost:25", False),  # a name is never its address
        ("localhost:25", "127.0.0.1:25", False),
        ("127.0.0.1:25", "127.1:25", False),  # resolves there, but is written as a name
        ("127.0.0.1:25", "2130706433:25", False),
    ],
)
def test_scheduled_targets_compare_by_what_they_reach(
    scheduled: str, requested: str, same: bool
) -> None:
    config = parse_config(
        "modules:\n  m: {protocol: smtp}\n"
        f'targets:\n  - {{name: t, address: "{scheduled}", module: m}}\n'
    )
    assert config.schedules("m", parse_address(requested)) is same
    assert not config.schedules("other", parse_address(requested))


class LoginRecorder:
    """A scripted SMTP server (implicit TLS) that offers AUTH PLAIN, accepts any login and
    records every connection and every AUTH line that reaches it."""

    def __init__(self, replies_mention: str = "") -> None:
        self.mention = f" {replies_mention}" if replies_mention else ""
        self.connections = 0
        self.logins: list[str] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await send(writer, f"220 recorder{self.mention} ready")
        while line := await reader.readline():
            text = line.decode().strip()
            verb = text.split(" ")[0].upper()
            if verb == "EHLO":
                await send(writer, f"250-recorder{self.mention}", "250 AUTH PLAIN LOGIN")
            elif verb == "AUTH":
                self.logins.append(text)
                await send(writer, f"235 2.7.0 accepted{self.mention}")
            elif verb == "QUIT":
                await send(writer, "221 bye")
                return
            else:
                await send(writer, "502 not implemented")


def recorder_modules(pki: PKI, password_env: str) -> str:
    """Modules for a :class:`LoginRecorder`: ``login`` and ``other_login`` log in, ``plain``
    does not."""
    tls = f"tls: implicit, tls_config: {{ca_file: {pki.ca_file}, server_name: localhost}}"
    common = f"protocol: smtp, {tls}, timeout: 5s, preferred_ip_protocol: ip4"
    auth = f"auth: {{username: probe, password_env: {password_env}, mechanism: plain}}"
    return (
        "modules:\n"
        f"  login: {{{common}, {auth}}}\n"
        f"  other_login: {{{common}, {auth}}}\n"
        f"  plain: {{{common}}}\n"
    )


async def test_credentials_go_only_to_allowed_targets(
    client_for, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an allowlist, a module that logs in reaches only its own scheduled targets:
    a stranger's server never sees a connection, let alone AUTH with the password."""
    monkeypatch.setenv("ALLOWLIST_TEST_PASSWORD", "allowlist-secret-4471")
    own, stranger = LoginRecorder(), LoginRecorder()
    context = server_context(pki.server_cert, pki.server_key)
    async with (
        scripted_server(own, context) as own_address,
        scripted_server(stranger, context) as stranger_address,
    ):
        own_port, stranger_port = own_address.rsplit(":")[1], stranger_address.rsplit(":")[1]
        client = await client_for(
            recorder_modules(pki, "ALLOWLIST_TEST_PASSWORD")
            + textwrap.dedent(
                f"""\
                targets:
                  - {{name: own, address: "LocalHost.:{own_port}", module: login}}
                  - {{name: own_mapped, address: "[::ffff:127.0.0.1]:{own_port}", module: login}}
                """
            )
        )

        async def probe(module: str, target: str) -> tuple[int, str]:
            response = await client.get("/probe", params={"module": module, "target": target})
            return response.status, await response.text()

        for target in (f"localhost:{own_port}", f"LOCALHOST:{own_port}", own_address):
            status, text = await probe("login", target)
            assert status == 200 and 'mail_probe_success{protocol="smtp"} 1.0' in text, text
        assert len(own.logins) == 3 and own.logins[0].startswith("AUTH PLAIN ")

        refused = [
            ("login", stranger_address),
            ("login", f"localhost:{stranger_port}"),
            ("login", f"[::1]:{own_port}"),
            ("login", f"[::ffff:127.0.0.2]:{own_port}"),
            ("login", f"127.1:{own_port}"),
            ("login", f"2130706433:{own_port}"),
            ("login", f"localhost.localdomain:{own_port}"),
            ("other_login", f"localhost:{own_port}"),  # scheduled, but with another module
        ]
        for module, target in refused:
            status, text = await probe(module, target)
            assert status == 403, (module, target, text)
            assert text == (
                f"module {module!r} logs in, so /probe uses it only on the targets scheduled "
                f"with it and on targets matching probe.allowed_targets; {target!r} is neither "
                "(add it to probe.allowed_targets to allow it)\n"
            )
        assert stranger.connections == 0 and stranger.logins == []
        assert len(own.logins) == 3

        # A module without credentials still probes any target when there is no allowlist.
        status, text = await probe("plain", stranger_address)
        assert status == 200 and 'mail_probe_success{protocol="smtp"} 1.0' in text, text
        assert stranger.connections == 1 and stranger.logins == []
        assert await refusals(client) == {
            "bad_request": 0.0,
            "unknown_module": 0.0,
            "target_not_allowed": 0.0,
            "credentials_not_allowed": float(len(refused)),
            "active_check_not_allowed": 0.0,
        }

        # An allowlist entry allows a module that logs in, and only where it matches.
        client = await client_for(
            recorder_modules(pki, "ALLOWLIST_TEST_PASSWORD")
            + textwrap.dedent(
                f"""\
                targets:
                  - {{name: own, address: "localhost:{own_port}", module: login}}
                  - {{name: own_plain, address: "localhost:{own_port}", module: plain}}
                probe:
                  allowed_targets: ["127.0.0.1/32"]
                """
            )
        )
        status, text = await probe("login", stranger_address)
        assert status == 200 and 'mail_probe_success{protocol="smtp"} 1.0' in text, text
        assert len(stranger.logins) == 1
        # Scheduled targets stay allowed beside the list, for every module.
        for module in ("login", "plain"):
            status, text = await probe(module, f"localhost:{own_port}")
            assert status == 200 and 'mail_probe_success{protocol="smtp"} 1.0' in text, text
        for module in ("login", "plain"):
            status, _ = await probe(module, f"localhost:{stranger_port}")
            assert status == 403
        assert len(stranger.logins) == 1 and len(own.logins) == 4
        assert await refusals(client) == {
            "bad_request": 0.0,
            "unknown_module": 0.0,
            "target_not_allowed": 2.0,
            "credentials_not_allowed": 0.0,
            "active_check_not_allowed": 0.0,
        }


async def test_active_checks_run_only_on_known_targets(client_for, pki: PKI) -> None:
    """An open-relay or enumeration check is a test of a server's defences: without an
    allowlist /probe runs it on the module's own scheduled target only; a stranger's
    server never sees a connection."""
    own, stranger = LoginRecorder(), LoginRecorder()
    context = server_context(pki.server_cert, pki.server_key)
    async with (
        scripted_server(own, context) as own_address,
        scripted_server(stranger, context) as stranger_address,
    ):
        tls = f"tls: implicit, tls_config: {{ca_file: {pki.ca_file}, server_name: localhost}}"
        common = f"protocol: smtp, {tls}, timeout: 5s, preferred_ip_protocol: ip4"
        relay = "relay_check: {mail_from: a@outside.example, rcpt_to: b@elsewhere.example}"
        client = await client_for(
            "modules:\n"
            f"  relay: {{{common}, smtp: {{{relay}}}}}\n"
            f"  vrfy: {{{common}, smtp: {{enumeration_check: {{address: postmaster@x.example}}}}}}\n"
            f'targets:\n  - {{name: own, address: "{own_address}", module: relay}}\n'
        )
        response = await client.get("/probe", params={"module": "relay", "target": own_address})
        assert response.status == 200, await response.text()
        assert own.connections == 1
        for module, check in (("relay", "smtp.relay_check"), ("vrfy", "smtp.enumeration_check")):
            params = {"module": module, "target": stranger_address}
            refused = await client.get("/probe", params=params)
            assert refused.status == 403
            assert await refused.text() == (
                f"module {module!r} runs active checks ({check}), so /probe uses it "
                "only on the targets scheduled with it and on targets matching "
                f"probe.allowed_targets; {stranger_address!r} is neither (add it to "
                "probe.allowed_targets to allow it)\n"
            )
        assert stranger.connections == 0
        assert (await refusals(client))["active_check_not_allowed"] == 2.0


async def test_revocation_checks_run_only_on_known_targets(client_for, pki: PKI) -> None:
    """A revocation check fetches the URLs the server's certificate names: /probe never
    lets whoever asks pick the server (and so the URLs) for such a module."""
    stranger = LoginRecorder()
    context = server_context(pki.server_cert, pki.server_key)
    async with scripted_server(stranger, context) as stranger_address:
        tls = f"tls: implicit, tls_config: {{ca_file: {pki.ca_file}, server_name: localhost}}"
        client = await client_for(
            "modules:\n"
            f"  revoked: {{protocol: smtp, {tls}, timeout: 5s, revocation: {{crl: true}}}}\n"
        )
        params = {"module": "revoked", "target": stranger_address}
        refused = await client.get("/probe", params=params)
        assert refused.status == 403
        assert "runs active checks (revocation)" in await refused.text()
        assert stranger.connections == 0
        assert (await refusals(client))["active_check_not_allowed"] == 1.0
