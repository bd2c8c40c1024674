"""The web config: validation, basic auth, and TLS against a real exporter process, on
asyncio's event loop and on uvloop's (the ``served_loop`` fixture)."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import ssl
import subprocess
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from mail_exporter import basic_auth
from mail_exporter.basic_auth import BasicAuth
from mail_exporter.cli import main
from mail_exporter.config.validation import ConfigError
from mail_exporter.exporter import Exporter
from mail_exporter.web import make_app
from mail_exporter.web_limits import WebLimits
from mail_exporter.webconfig import WebConfig, load_web_config, parse_web_config
from tests.realservers.pki import PKI, create_client_cert, create_pki
from tests.served import (
    EventLoop,
    basic,
    client_context,
    exporter_command,
    get,
    served_exporter,
)
from tests.test_cli import billion_laughs, run_bounded

EXAMPLE = Path(__file__).parent.parent / "examples" / "web-config.yml"
PASSWORD = "right horse battery"
# Cost 4, bcrypt's lowest, keeps the tests fast; the exporter takes any cost.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def tls_section(pki: PKI, **extra: str) -> str:
    lines = [f"  cert_file: {pki.server_cert}", f"  key_file: {pki.server_key}"]
    lines += [f"  {key}: {value}" for key, value in extra.items()]
    return "tls_server_config:\n" + "\n".join(lines) + "\n"


def problems_of(text: str, directory: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_web_config(textwrap.dedent(text), "web.yml", directory)
    return caught.value.problems


# --- validation ----------------------------------------------------------------------------


def test_full_web_config(pki: PKI) -> None:
    web_config = parse_web_config(
        tls_section(
            pki,
            client_auth_type="RequireAndVerifyClientCert",
            client_ca_file=str(pki.ca_file),
            client_allowed_sans="[prometheus.test, 192.0.2.7]",
            min_version="TLS13",
        )
        + "http_server_config:\n"
        "  http2: false\n"
        "  headers: {X-Frame-Options: deny, Strict-Transport-Security: max-age=300}\n"
        f"basic_auth_users:\n  prometheus: {HASH}\n",
        "web.yml",
    )
    context = web_config.tls_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert web_config.basic_auth is not None
    assert web_config.security() == (
        20,
        "with TLS (TLS13, client certificates: RequireAndVerifyClientCert) "
        "and basic auth for 1 user",
    )


def test_empty_file_is_plain_http() -> None:
    web_config = parse_web_config("", "web.yml")
    assert web_config.tls_context is None and web_config.basic_auth is None
    level, text = web_config.security()
    assert level == 30 and text.startswith("without TLS or authentication")


def test_relative_paths_are_relative_to_the_web_config(tmp_path: Path) -> None:
    create_pki(tmp_path / "pki")
    web_config = load_web_config(
        write(
            tmp_path / "web.yml",
            "tls_server_config: {cert_file: pki/server.pem, key_file: pki/server.key}\n",
        )
    )
    assert web_config.tls_server_config is not None
    assert web_config.tls_server_config.cert_file == tmp_path / "pki" / "server.pem"


def test_example_web_config_is_valid(tmp_path: Path, pki: PKI) -> None:
    # The example names Debian paths; point them at the test PKI for the check.
    text = EXAMPLE.read_text()
    for path, replacement in (
        ("/etc/mail-exporter/tls/server.crt", pki.server_cert),
        ("/etc/mail-exporter/tls/server.key", pki.server_key),
        ("/etc/mail-exporter/tls/prometheus-ca.crt", pki.ca_file),
    ):
        assert path in text
        text = text.replace(path, str(replacement))
    result = CliRunner().invoke(main, ["check-web-config", str(write(tmp_path / "w.yml", text))])
    assert result.exit_code == 0, result.output
    assert "OK (serves with TLS" in result.output


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "tls_config: {}\n",
            ["tls_config (line 1): unknown key"],
        ),
        (
            "tls_server_config:\n  cert_file: /nonexistent/server.pem\n",
            [
                "tls_server_config.cert_file (line 2): cannot read '/nonexistent/server.pem': "
                "No such file or directory",
                "tls_server_config.key_file (line 1): required key is missing",
            ],
        ),
        (
            "{tls}  client_auth_type: RequireClientCertificate\n",
            [
                "tls_server_config.client_auth_type (line 4): Input should be 'NoClientCert', "
                "'RequestClientCert', 'RequireAnyClientCert', 'VerifyClientCertIfGiven' or "
                "'RequireAndVerifyClientCert'"
            ],
        ),
        (
            "{tls}  client_auth_type: RequireAnyClientCert\n",
            [
                "tls_server_config (line 1): client_auth_type RequireAnyClientCert (any "
                "certificate, unchecked) is not supported: use RequireAndVerifyClientCert "
                "with client_ca_file"
            ],
        ),
        (
            "{tls}  client_auth_type: RequireAndVerifyClientCert\n",
            [
                "tls_server_config (line 1): client_auth_type RequireAndVerifyClientCert "
                "needs client_ca_file"
            ],
        ),
        (
            "{tls}  client_ca_file: {ca}\n",
            [
                "tls_server_config (line 1): client_ca_file is set but client_auth_type is "
                "NoClientCert"
            ],
        ),
        (
            "{tls}  client_allowed_sans: [a.test]\n",
            [
                "tls_server_config (line 1): client_allowed_sans needs client_auth_type "
                "RequireAndVerifyClientCert"
            ],
        ),
        (
            "{tls}  min_version: TLS10\n",
            ["tls_server_config.min_version (line 4): Input should be 'TLS12' or 'TLS13'"],
        ),
        (
            "{tls}  min_version: TLS13\n  max_version: TLS12\n",
            ["tls_server_config (line 1): min_version TLS13 is above max_version"],
        ),
        (
            "tls_server_config:\n  cert_file: {cert}\n  key_file: {wrong_key}\n",
            [
                "tls_server_config (line 1): cert_file and key_file are not a PEM certificate "
                "and its key: [X509: KEY_VALUES_MISMATCH]"
            ],
        ),
        (
            "{tls}  cipher_suites: [TLS_AES_128_GCM_SHA256]\n  key: inline\n",
            [
                "tls_server_config.cipher_suites (line 4): not supported: OpenSSL's defaults "
                "for the TLS versions apply (choose those with min_version)",
                "tls_server_config.key (line 5): inline keys are not supported: keep the key "
                "in a file and give key_file",
            ],
        ),
        (
            "rate_limit: {interval: 1s, burst: 5}\n",
            ["rate_limit (line 1): not supported: limit request rates in a reverse proxy"],
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n    Server: me\n",
            [
                "http_server_config.headers.Server.[key] (line 4): Input should be "
                "'Strict-Transport-Security', 'X-Content-Type-Options', 'X-Frame-Options', "
                "'X-XSS-Protection' or 'Content-Security-Policy'",
            ],
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            ["http_server_config (line 1): X-Frame-Options must be deny or sameorigin"],
        ),
        (
            "basic_auth_users:\n  'a:b': {hash}\n",
            [
                "basic_auth_users.a:b.[key] (line 2): a user name must be non-empty, "
                "without ':' or control characters"
            ],
        ),
        (
            "basic_auth_users: [prometheus]\n",
            ["basic_auth_users (line 1): Input should be a valid dictionary"],
        ),
        (
            "basic_auth_users: {a: {hash}}\n"
            "mail_exporter:\n  unauthenticated_endpoints: [/metrics, /-/reload, /-/healthy, /x]\n",
            [
                "mail_exporter.unauthenticated_endpoints[1] (line 3): /-/reload "
                "changes the running config: it always needs a password",
                "mail_exporter.unauthenticated_endpoints[2] (line 3): /-/healthy "
                "is always served without a password",
                "mail_exporter.unauthenticated_endpoints[3] (line 3): not an "
                "endpoint: choose from /, /metrics, /probe, /config, /-/ready",
            ],
        ),
        (
            "mail_exporter: {unauthenticated_endpoints: [/metrics]}\n",
            [
                "(top level) (line 1): mail_exporter.unauthenticated_endpoints needs "
                "basic_auth_users: without them no endpoint asks for a password"
            ],
        ),
        ("mail_exporter: {open: true}\n", ["mail_exporter.open (line 1): unknown key"]),
        ("- a list\n", ["(top level) (line 1): the file must be a mapping of keys"]),
        ("tls_server_config: {\n", ["invalid YAML (line 2)"]),
    ],
)
def test_invalid_web_configs(pki: PKI, body: str, expected: list[str]) -> None:
    values = {
        "{tls}": tls_section(pki),
        "{ca}": str(pki.ca_file),
        "{cert}": str(pki.server_cert),
        "{wrong_key}": str(pki.wronghost_key),
        "{hash}": HASH,
    }
    for token, value in values.items():
        body = body.replace(token, value)
    problems = problems_of(body)
    assert len(problems) == len(expected), problems
    for problem, wanted in zip(problems, expected, strict=True):
        assert problem.startswith(wanted), problem


def test_encrypted_key_is_refused(tmp_path: Path, pki: PKI) -> None:
    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    problems = problems_of(
        f"tls_server_config: {{cert_file: {pki.server_cert}, key_file: {encrypted}}}"
    )
    assert problems == [
        "tls_server_config (line 1): key_file is encrypted: give the key without a passphrase"
    ]


def test_every_problem_is_listed_and_no_password_is_quoted() -> None:
    problems = problems_of(
        """\
        tls_server_config:
          cert_file: /nonexistent/cert.pem
          key_file: /nonexistent/key.pem
          min_version: TLS11
        basic_auth_users:
          prometheus: my-plain-password
        extra: 1
        """
    )
    assert problems == [
        "tls_server_config.cert_file (line 2): cannot read '/nonexistent/cert.pem': "
        "No such file or directory",
        "tls_server_config.key_file (line 3): cannot read '/nonexistent/key.pem': "
        "No such file or directory",
        "tls_server_config.min_version (line 4): Input should be 'TLS12' or 'TLS13'",
        "basic_auth_users.prometheus (line 6): not a bcrypt hash ($2y$10$ and 53 more "
        "characters): make one with `mail-exporter hash-password`",
        "extra (line 7): unknown key",
    ]
    assert not any("my-plain-password" in problem for problem in problems)


def test_check_web_config_command(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yml", "basic_auth_users: {a: x}\nother: 1\n")
    result = CliRunner().invoke(main, ["check-web-config", str(bad)])
    assert result.exit_code == 1
    assert "2 problem(s)" in result.output
    good = write(tmp_path / "good.yml", f"basic_auth_users: {{a: '{HASH}'}}\n")
    result = CliRunner().invoke(main, ["check-web-config", str(good)])
    assert result.exit_code == 0
    assert "OK (serves with basic auth for 1 user but without TLS" in result.output


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("cert_file", "fifo"),
        ("key_file", "device"),
        ("client_ca_file", "sparse"),
        ("client_ca_file", "directory"),
    ],
)
def test_files_that_would_hang_or_flood_are_refused_promptly(
    tmp_path: Path, pki: PKI, key: str, kind: str
) -> None:
    """ssl reads these by path, so they are checked first: a FIFO would block every reload."""
    hostile = tmp_path / "hostile"
    if kind == "fifo":
        os.mkfifo(hostile)
    elif kind == "sparse":
        with hostile.open("wb") as file:
            file.truncate(100 * 1024 * 1024)
    elif kind == "directory":
        hostile.mkdir()
    else:
        hostile = Path("/dev/zero")
    reasons = {
        "fifo": "not a regular file (a FIFO)",
        "device": "not a regular file (a character device)",
        "sparse": "larger than 4 MiB",
        "directory": "not a regular file (a directory)",
    }
    files = {
        "cert_file": str(pki.server_cert),
        "key_file": str(pki.server_key),
        "client_auth_type": "RequireAndVerifyClientCert",
        "client_ca_file": str(pki.ca_file),
        key: str(hostile),
    }
    lines = "".join(f"  {name}: {value}\n" for name, value in files.items())
    web = write(tmp_path / "web.yml", "tls_server_config:\n" + lines)
    result = run_bounded("check-web-config", str(web))
    assert result.returncode == 1, result.stderr
    line = list(files).index(key) + 2
    assert result.stderr.splitlines() == [
        f"{web}: 1 problem(s)",
        f"  tls_server_config.{key} (line {line}): cannot read '{hostile}': {reasons[kind]}",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "basic_auth_users: &u {a: *u}\n",
            "basic_auth_users.a (line 1): alias *u is inside the node it names: a cycle",
        ),
        (billion_laughs(), "f[0] (line 6): more than 100000 values (aliases counted as copies)"),
        (
            "tls_server_config: " + "[" * 5000 + "]" * 5000,
            "tls_server_config[0][0][0][0][0][0][0]... (line 1): nested deeper than 100 levels",
        ),
    ],
    ids=["alias cycle", "billion laughs", "5000-deep nesting"],
)
def test_web_config_yaml_is_bounded_like_the_config(
    tmp_path: Path, text: str, problem: str
) -> None:
    web = write(tmp_path / "web.yml", text)
    result = run_bounded("check-web-config", str(web))
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [f"{web}: 1 problem(s)", f"  {problem}"]


def test_hash_password_command() -> None:
    result = CliRunner().invoke(
        main, ["hash-password", "--cost", "4"], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    hashed = result.output.strip().splitlines()[-1]
    assert hashed.startswith("$2b$04$")
    assert bcrypt.checkpw(PASSWORD.encode(), hashed.encode())
    assert parse_web_config(f"basic_auth_users: {{a: '{hashed}'}}\n", "w").basic_auth


# --- basic auth ----------------------------------------------------------------------------


def header(user: str, password: str) -> str:
    return basic(user, password)["Authorization"]


async def test_basic_auth_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    checkpw = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return checkpw(password, hashed)

    monkeypatch.setattr(basic_auth.bcrypt, "checkpw", counting)
    auth = BasicAuth({"prometheus": HASH, "other": HASH})
    assert await auth.allows(header("prometheus", PASSWORD))
    assert await auth.allows(header("prometheus", PASSWORD))
    assert len(calls) == 1  # the second scrape was remembered
    assert not await auth.allows(header("prometheus", "wrong"))
    assert not await auth.allows(header("Prometheus", PASSWORD))  # unknown user: a decoy
    assert calls[-1] != HASH.encode()
    assert not await auth.allows(header("prometheus", PASSWORD + "x" * 80))  # over 72 bytes
    assert len(calls) == 4  # each new failure is checked
    assert not await auth.allows(header("prometheus", "wrong"))
    assert len(calls) == 4  # and remembered
    no_colon = "Basic cHJvbWV0aGV1cw=="  # "prometheus"
    for malformed in (None, "", "Bearer abc", "Basic !!!", no_colon, "Basic"):
        assert not await auth.allows(malformed)
    assert await auth.allows("basic " + header("other", PASSWORD).split(" ")[1])


@pytest.fixture
async def app_client(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    clients: list[TestClient[object, object]] = []

    async def build(web_body: str) -> TestClient[object, object]:
        config = write(tmp_path / "config.yml", "modules:\n  smtp: {protocol: smtp}\n")
        exporter = Exporter(config, {}, write(tmp_path / "web.yml", web_body))
        client: TestClient[object, object] = TestClient(TestServer(make_app(exporter)))
        await client.start_server()
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.close()


async def test_basic_auth_guards_every_endpoint_but_health(app_client) -> None:
    client = await app_client(
        f"basic_auth_users: {{prometheus: '{HASH}'}}\n"
        "http_server_config: {headers: {X-Content-Type-Options: nosniff}}\n"
    )
    right = {"Authorization": header("prometheus", PASSWORD)}
    wrong = {"Authorization": header("prometheus", "guess")}
    for method, path in (
        ("GET", "/"),
        ("GET", "/metrics"),
        ("GET", "/config"),
        ("GET", "/probe?module=smtp&target=192.0.2.1:25"),
        ("GET", "/-/ready"),
        ("POST", "/-/reload"),
        ("GET", "/no-such-page"),
    ):
        for headers in ({}, wrong):
            response = await client.request(method, path, headers=headers)
            assert response.status == 401, (method, path)
            assert response.headers["WWW-Authenticate"].startswith("Basic ")
            assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert (await client.get("/metrics", headers=right)).status == 200
    assert (await client.post("/-/reload", headers=right)).status == 200
    assert (await client.get("/no-such-page", headers=right)).status == 404
    health = await client.get("/-/healthy")
    assert health.status == 200 and health.headers["X-Content-Type-Options"] == "nosniff"


class CountingBcrypt:
    """Wraps ``bcrypt.checkpw`` as the web config calls it: counts the computations, by
    hash, and the most ever in flight at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.hashes: list[bytes] = []

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.hashes.append(hashed)
        try:
            return CHECKPW(password, hashed)
        finally:
            with self.lock:
                self.in_flight -= 1

    def count(self, hashed: str) -> int:
        return self.hashes.count(hashed.encode())


CHECKPW = bcrypt.checkpw


@pytest.fixture
def counting_bcrypt(monkeypatch: pytest.MonkeyPatch) -> CountingBcrypt:
    counter = CountingBcrypt()
    monkeypatch.setattr(basic_auth.bcrypt, "checkpw", counter)
    return counter


@pytest.fixture
async def served_app(tmp_path: Path) -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    """A real aiohttp server on loopback for an exporter with this web config; its URL."""
    servers: list[TestServer] = []

    async def serve(web_body: str) -> str:
        config = write(tmp_path / "config.yml", "modules:\n  smtp: {protocol: smtp}\n")
        exporter = Exporter(config, {}, write(tmp_path / "web.yml", web_body))
        limits = WebLimits(exporter, open_files=4096)
        exporter.registry.register(limits)
        server = TestServer(make_app(exporter, limits), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/"))

    yield serve
    for server in servers:
        await server.close()


async def test_a_new_user_gets_in_while_wrong_passwords_hammer(
    served_app: Callable[[str], Awaitable[str]], counting_bcrypt: CountingBcrypt
) -> None:
    """300 guesses at one user's password, each different, and a user never seen before
    with the right one: the guesses past a short queue get 503 at once, the user gets in
    after a few checks (all one at a time), not after 300 of them."""
    guessed = bcrypt.hashpw(b"unknowable", bcrypt.gensalt(12)).decode()  # 0.1-0.5 s a check
    url = await served_app(f"basic_auth_users: {{prometheus: '{guessed}', grafana: '{HASH}'}}\n")
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def scrape(user: str, password: str) -> tuple[int, str | None, float]:
            started = time.monotonic()
            headers = {"Authorization": header(user, password)}
            async with session.get(url + "metrics", headers=headers) as response:
                await response.read()
                return response.status, response.headers.get("Retry-After"), started

        guesses = [asyncio.create_task(scrape("prometheus", f"guess {i}")) for i in range(300)]
        await asyncio.sleep(0.5)  # every guess is in: answered at once or queued
        status, _, started = await scrape("grafana", PASSWORD)
        waited = time.monotonic() - started
        answers = await asyncio.gather(*guesses)
        headers = {"Authorization": header("grafana", PASSWORD)}
        async with session.get(url + "metrics", headers=headers) as response:
            exposition = await response.text()
    assert status == 200
    assert waited < 10, f"the new user waited {waited:.1f}s"  # a hang guard: 0.3 s here
    assert {code for code, _, _ in answers} == {401, 503}
    assert all(retry == "1" for code, retry, _ in answers if code == 503)
    refused = sum(code == 503 for code, _, _ in answers)
    assert f'mail_exporter_web_rejected_total{{reason="auth_busy"}} {refused}.0' in exposition
    assert counting_bcrypt.count(guessed) < 50  # most were refused before any hashing
    assert counting_bcrypt.most_in_flight <= basic_auth.HASHING_THREADS


async def test_the_same_wrong_password_is_hashed_once(
    served_app: Callable[[str], Awaitable[str]], counting_bcrypt: CountingBcrypt
) -> None:
    """A client with an outdated password retrying costs one bcrypt check, not one each."""
    url = await served_app(f"basic_auth_users: {{prometheus: '{HASH}'}}\n")
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            headers = {"Authorization": header("prometheus", "the old password")}
            async with session.get(url + "metrics", headers=headers) as response:
                assert response.status == 401
    assert counting_bcrypt.count(HASH) == 1


async def test_a_reload_keeps_verified_credentials_of_unchanged_users(
    tmp_path: Path, served_app: Callable[[str], Awaitable[str]], counting_bcrypt: CountingBcrypt
) -> None:
    other = bcrypt.hashpw(b"other password", bcrypt.gensalt(4)).decode()
    url = await served_app(f"basic_auth_users: {{prometheus: '{HASH}', grafana: '{HASH}'}}\n")
    prometheus = {"Authorization": header("prometheus", PASSWORD)}
    grafana = {"Authorization": header("grafana", PASSWORD)}
    async with aiohttp.ClientSession() as session:

        async def status(method: str, path: str, headers: dict[str, str]) -> int:
            async with session.request(method, url + path, headers=headers) as response:
                return response.status

        assert await status("GET", "metrics", prometheus) == 200
        assert await status("GET", "metrics", grafana) == 200
        assert counting_bcrypt.count(HASH) == 2
        # grafana's hash changes, prometheus's stays; a user is added
        write(
            tmp_path / "web.yml",
            f"basic_auth_users: {{prometheus: '{HASH}', grafana: '{other}', loki: '{other}'}}\n",
        )
        assert await status("POST", "-/reload", prometheus) == 200
        assert await status("GET", "metrics", prometheus) == 200
        assert counting_bcrypt.count(HASH) == 2  # remembered across the reload
        assert await status("GET", "metrics", grafana) == 401  # the old password is gone
        assert counting_bcrypt.count(other) == 1


# --- TLS against the real process ----------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write(tmp_path / "config.yml", "modules:\n  smtp: {protocol: smtp}\n")


def test_tls_and_basic_auth(
    tmp_path: Path, pki: PKI, config_file: Path, served_loop: EventLoop
) -> None:
    web = write(
        tmp_path / "web.yml",
        tls_section(pki)
        + f"basic_auth_users:\n  prometheus: {HASH}\n"
        + "http_server_config:\n  headers: {Strict-Transport-Security: max-age=300}\n",
    )
    context = client_context(pki)
    with served_exporter(
        tmp_path, config_file, "--web.config.file", str(web), context=context, loop=served_loop
    ) as served:
        missing = get(served.port, "/metrics", context)
        assert missing.status == 401
        assert missing.headers["WWW-Authenticate"].startswith("Basic")
        assert get(served.port, "/metrics", context, basic("prometheus", "nope")).status == 401
        assert get(served.port, "/metrics", context, basic("nobody", PASSWORD)).status == 401
        right = get(served.port, "/metrics", context, basic("prometheus", PASSWORD))
        assert right.status == 200
        assert "mail_exporter_build_info" in right.body
        assert right.tls_version == "TLSv1.3"
        assert right.headers["Strict-Transport-Security"] == "max-age=300"
        assert get(served.port, "/-/healthy", context).status == 200
        with pytest.raises((OSError, http.client.HTTPException)):
            get(served.port, "/metrics", None, basic("prometheus", PASSWORD))  # plain HTTP
    assert (
        f"listening on 127.0.0.1:{served.port} with TLS (TLS12-TLS13, client certificates: "
        "NoClientCert) and basic auth for 1 user" in served.stderr()
    )


def test_reads_open_and_reload_behind_a_password(
    tmp_path: Path, config_file: Path, served_loop: EventLoop
) -> None:
    """``mail_exporter.unauthenticated_endpoints`` opens reads; a reload still needs a user."""
    web = write(
        tmp_path / "web.yml",
        f"basic_auth_users: {{admin: '{HASH}'}}\n"
        "mail_exporter: {unauthenticated_endpoints: [/metrics, /probe, /-/ready]}\n",
    )
    admin, guess = basic("admin", PASSWORD), basic("admin", "guess")
    with served_exporter(
        tmp_path, config_file, "--web.config.file", str(web), loop=served_loop
    ) as served:
        assert "mail_exporter_build_info" in get(served.port, "/metrics").body
        assert get(served.port, "/-/ready").status == 200
        assert get(served.port, "/probe?module=smtp&target=localhost").status == 400  # no port
        for path in ("/", "/config", "/no-such-page"):
            assert get(served.port, path).status == 401, path
        for credentials in ({}, guess):
            refused = get(served.port, "/-/reload", headers=credentials, method="POST")
            assert refused.status == 401
            assert refused.headers["WWW-Authenticate"].startswith("Basic ")
        assert get(served.port, "/-/reload", headers=admin, method="POST").status == 200
        assert get(served.port, "/config", headers=admin).status == 200
    assert "configuration reloaded" in served.stderr()
    assert "basic auth for 1 user (not on /metrics, /probe, /-/ready)" in served.stderr()


def test_client_certificates(
    tmp_path: Path, pki: PKI, config_file: Path, served_loop: EventLoop
) -> None:
    allowed = create_client_cert(pki, tmp_path / "clients", "prometheus.test")
    other_name = create_client_cert(pki, tmp_path / "clients", "intruder.test")
    stranger = create_client_cert(
        create_pki(tmp_path / "other-ca"), tmp_path / "x", "prometheus.test"
    )
    web = write(
        tmp_path / "web.yml",
        tls_section(
            pki,
            client_auth_type="RequireAndVerifyClientCert",
            client_ca_file=str(pki.ca_file),
            client_allowed_sans="[prometheus.test]",
        ),
    )
    good = client_context(pki, allowed)
    with served_exporter(
        tmp_path, config_file, "--web.config.file", str(web), context=good, loop=served_loop
    ) as served:
        reply = get(served.port, "/metrics", good)
        assert reply.status == 200 and "mail_exporter_build_info" in reply.body
        for refused in (client_context(pki), client_context(pki, stranger)):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                get(served.port, "/metrics", refused)
        assert get(served.port, "/metrics", client_context(pki, other_name)).status == 403


def test_client_certificate_if_given(
    tmp_path: Path, pki: PKI, config_file: Path, served_loop: EventLoop
) -> None:
    stranger = create_client_cert(create_pki(tmp_path / "other-ca"), tmp_path / "x", "p.test")
    web = write(
        tmp_path / "web.yml",
        tls_section(
            pki, client_auth_type="VerifyClientCertIfGiven", client_ca_file=str(pki.ca_file)
        ),
    )
    anonymous = client_context(pki)
    with served_exporter(
        tmp_path,
        config_file,
        "--web.config.file",
        str(web),
        context=anonymous,
        loop=served_loop,
    ) as served:
        assert get(served.port, "/metrics", anonymous).status == 200
        known = client_context(pki, create_client_cert(pki, tmp_path / "c", "p.test"))
        assert get(served.port, "/metrics", known).status == 200
        with pytest.raises((ssl.SSLError, ConnectionError)):
            get(served.port, "/metrics", client_context(pki, stranger))
    # Anyone without a certificate gets in: the start-up line says so.
    assert "without authentication" in served.stderr()


def test_tls_versions_and_reload_of_them(
    tmp_path: Path, pki: PKI, config_file: Path, served_loop: EventLoop
) -> None:
    web = write(tmp_path / "web.yml", tls_section(pki, min_version="TLS13"))
    modern = client_context(pki)
    old = client_context(pki, maximum=ssl.TLSVersion.TLSv1_2)
    with served_exporter(
        tmp_path, config_file, "--web.config.file", str(web), context=modern, loop=served_loop
    ) as served:
        assert get(served.port, "/metrics", modern).tls_version == "TLSv1.3"
        with pytest.raises(ssl.SSLError):
            get(served.port, "/metrics", old)
        write(web, tls_section(pki, min_version="TLS12", max_version="TLS12"))
        served.process.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert get(served.port, "/metrics", old).tls_version == "TLSv1.2"
        assert get(served.port, "/metrics", modern).tls_version == "TLSv1.2"


def test_bad_web_config_does_not_start(tmp_path: Path, config_file: Path, taken_port: int) -> None:
    web = write(
        tmp_path / "web.yml",
        """\
        tls_server_config:
          cert_file: missing.pem
          key_file: missing.key
          client_auth_type: Sometimes
        basic_auth_users: {prometheus: plain-text-password}
        """,
    )
    result = subprocess.run(
        exporter_command(config_file, taken_port, "--web.config.file", str(web)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert f"{web}: 4 problem(s)" in result.stderr
    for fragment in (
        f"tls_server_config.cert_file (line 2): cannot read '{tmp_path}/missing.pem'",
        f"tls_server_config.key_file (line 3): cannot read '{tmp_path}/missing.key'",
        "tls_server_config.client_auth_type (line 4): Input should be",
        "basic_auth_users.prometheus (line 5): not a bcrypt hash",
    ):
        assert fragment in result.stderr
    assert "plain-text-password" not in result.stderr


def test_reload_keeps_the_running_web_config(
    tmp_path: Path, pki: PKI, config_file: Path, served_loop: EventLoop
) -> None:
    new_password = "a brand new password"
    new_hash = bcrypt.hashpw(new_password.encode(), bcrypt.gensalt(4)).decode()
    web = write(
        tmp_path / "web.yml", tls_section(pki) + f"basic_auth_users: {{prometheus: '{HASH}'}}\n"
    )
    context = client_context(pki, check_hostname=False)
    old = basic("prometheus", PASSWORD)
    new = basic("prometheus", new_password)
    with served_exporter(
        tmp_path, config_file, "--web.config.file", str(web), context=context, loop=served_loop
    ) as served:

        def gauge(credentials: dict[str, str]) -> str:
            metrics = get(served.port, "/metrics", context, credentials).body
            return next(
                line for line in metrics.splitlines()
                if line.startswith("mail_exporter_config_last_reload_successful ")
            )  # fmt: skip

        write(
            web, "tls_server_config: {cert_file: missing.pem}\nbasic_auth_users: {prometheus: x}\n"
        )
        served.process.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert gauge(old).endswith(" 0.0")
        assert "reload failed, keeping the running config" in served.stderr()
        refused = get(served.port, "/-/reload", context, old, method="POST")
        assert refused.status == 500
        assert "tls_server_config.key_file (line 1): required key is missing" in refused.body
        assert "basic_auth_users.prometheus (line 2): not a bcrypt hash" in refused.body
        assert get(served.port, "/metrics", context, old).status == 200  # still the old one

        # A good file: the new password and the new certificate, without a restart.
        rotated = tls_section(pki).replace(str(pki.server_cert), str(pki.wronghost_cert))
        rotated = rotated.replace(str(pki.server_key), str(pki.wronghost_key))
        write(web, rotated + f"basic_auth_users: {{prometheus: '{new_hash}'}}\n")
        assert get(served.port, "/-/reload", context, old, method="POST").status == 200
        assert get(served.port, "/metrics", context, old).status == 401
        reply = get(served.port, "/metrics", context, new)
        assert reply.status == 200 and reply.peer_names == ("other.example.net",)
        assert gauge(new).endswith(" 1.0")

        # TLS cannot be switched off by a reload: the listening socket stays.
        write(web, f"basic_auth_users: {{prometheus: '{new_hash}'}}\n")
        refused = get(served.port, "/-/reload", context, new, method="POST")
        assert refused.status == 500
        assert "tls_server_config: turning TLS on or off takes a restart" in refused.body


def test_without_web_config_says_so(
    tmp_path: Path, config_file: Path, served_loop: EventLoop
) -> None:
    with served_exporter(tmp_path, config_file, "--log.format", "json", loop=served_loop) as served:
        assert get(served.port, "/metrics").status == 200
    line = next(line for line in served.stderr().splitlines() if "listening on" in line)
    assert '"level": "warn"' in line
    assert "without TLS or authentication" in line


def test_web_config_type_is_strict() -> None:
    assert WebConfig.model_config.get("extra") == "forbid"
