"""/probe is not an open proxy: the target allowlist, its config errors, and refusals counted."""

from __future__ import annotations

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
from mail_exporter.config import ConfigError, parse_config
from mail_exporter.exporter import Exporter
from mail_exporter.web import make_app
from tests.scripted import scripted_server, smtp_script
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
    assert TargetAllowlist.of(PATTERNS).allows(host) is allowed


def test_names_never_match_networks_by_resolution() -> None:
    # "localhost" resolves into 127.0.0.0/8, but a name is only matched against names.
    allowlist = TargetAllowlist.of(["127.0.0.0/8", "*"])
    assert allowlist.allows("localhost")  # by the name pattern "*"
    assert not TargetAllowlist.of(["127.0.0.0/8"]).allows("localhost")
    assert not TargetAllowlist.of(["*"]).allows("127.0.0.1")  # "*" matches names only
    assert allowlist.allows("127.0.0.1")


def test_empty_allowlist_allows_everything() -> None:
    allowlist = TargetAllowlist.of([])
    assert allowlist.allows("anything.example") and allowlist.allows("10.1.2.3")


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
        for reason in ("bad_request", "unknown_module", "target_not_allowed")
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
        }
        allowed = await client.get("/probe", params={"module": "smtp", "target": address})
        assert allowed.status == 200
        assert 'mail_probe_success{protocol="smtp"} 1.0' in await allowed.text()
        for target in ("192.0.2.1:25", "[::1]:25", "localhost:25", "example.com:25"):
            refused = await client.get("/probe", params={"module": "smtp", "target": target})
            assert refused.status == 403
            assert await refused.text() == (
                f"target {target!r} is not allowed: /probe only probes targets matching "
                "probe.allowed_targets in the config\n"
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
            allowlist.allows(name)
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
    assert TargetAllowlist.of([pattern]).allows(name) is expected
