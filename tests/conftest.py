"""Session fixtures: a test PKI and real Dovecot and Postfix instances on loopback (and a
pair that also takes OAuth2 logins, with their token server); a port that is taken, a
stack of servers to stop after a test; podman and the project's image, built once; uvloop
(the ``fast`` extra) installed once into a directory of its own, and ``served_loop``,
which runs a test's exporter process on asyncio's loop and on uvloop's.

The servers start once per session, on first use, and are stopped at its end. A missing
server binary fails the tests that need it: integration tests are never skipped silently.
Set MAIL_EXPORTER_SKIP_REAL_SERVERS=1 to skip them on purpose.
"""

import os
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar, overload

import pytest

from tests.podman import Podman, PodmanUnavailable
from tests.realservers.dovecot import Dovecot
from tests.realservers.exim import EximUnavailable
from tests.realservers.oauth import TokenServer
from tests.realservers.pki import PKI, create_pki
from tests.realservers.postfix import Postfix
from tests.served import EventLoop

SKIP_REAL_SERVERS_VARIABLE = "MAIL_EXPORTER_SKIP_REAL_SERVERS"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
INSTALL_HINT = "apt-get install postfix dovecot-imapd dovecot-pop3d dovecot-lmtpd"

P = TypeVar("P", bound=Postfix)
E = TypeVar("E")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: runs against real Postfix and Dovecot servers on loopback"
    )


def real_exim_or_fail(make: Callable[[], E]) -> E:
    """A real Exim from ``make``; the test fails with the reason when it cannot run here
    (skipped only with the skip variable set, as every real-server test is)."""
    try:
        return make()
    except EximUnavailable as error:
        if os.environ.get(SKIP_REAL_SERVERS_VARIABLE) == "1":
            pytest.skip(f"{error} ({SKIP_REAL_SERVERS_VARIABLE}=1 is set)")
        pytest.fail(f"a real Exim is needed: {error}", pytrace=False)


def _require_binary(name: str) -> None:
    if shutil.which(name) is not None:
        return
    if os.environ.get(SKIP_REAL_SERVERS_VARIABLE) == "1":
        pytest.skip(f"{name} is not installed and {SKIP_REAL_SERVERS_VARIABLE}=1 is set")
    pytest.fail(
        f"{name} is not installed, so the real-server tests cannot run: {INSTALL_HINT} "
        f"(or set {SKIP_REAL_SERVERS_VARIABLE}=1 to skip them)",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def podman() -> Podman:
    """Podman with the tests' private settings; fails (never skips silently) without it."""
    try:
        return Podman()
    except PodmanUnavailable as error:
        if os.environ.get(SKIP_REAL_SERVERS_VARIABLE) == "1":
            pytest.skip(f"{error} ({SKIP_REAL_SERVERS_VARIABLE}=1 is set)")
        pytest.fail(f"podman is needed for the container tests: {error}", pytrace=False)


@pytest.fixture(scope="session")
def exporter_image(podman: Podman) -> str:
    """The project's Dockerfile built with podman, once per session (cached layers make
    a rebuild of unchanged sources take seconds)."""
    return podman.exporter_image()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return create_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Dovecot]:
    _require_binary("dovecot")
    server = Dovecot(tmp_path_factory.mktemp("dovecot"), pki.server_cert, pki.server_key)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def quota_dovecot(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Dovecot]:
    """A Dovecot of its own with the quota and imap_quota plugins (count driver)."""
    _require_binary("dovecot")
    server = Dovecot(
        tmp_path_factory.mktemp("dovecot-quota"), pki.server_cert, pki.server_key, quota=True
    )
    server.start()
    yield server
    server.stop()


@overload
def new_postfix(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, dovecot: Dovecot, *, name: str = ...
) -> Postfix: ...


@overload
def new_postfix(
    tmp_path_factory: pytest.TempPathFactory,
    pki: PKI,
    dovecot: Dovecot,
    kind: type[P],
    name: str = ...,
) -> P: ...


def new_postfix(
    tmp_path_factory: pytest.TempPathFactory,
    pki: PKI,
    dovecot: Dovecot,
    kind: type[Postfix] = Postfix,
    name: str = "postfix",
) -> Postfix:
    """A private Postfix of ``kind`` (not started), with the server certificate and key of
    ``pki``, that logs in through and delivers to ``dovecot``; its files in a fresh
    directory ``name``."""
    return kind(
        tmp_path_factory.mktemp(name),
        pki.server_cert,
        pki.server_key,
        dovecot_auth_port=dovecot.auth_port,
        dovecot_lmtp_port=dovecot.lmtp_port,
    )


@pytest.fixture(scope="session")
def postfix(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, dovecot: Dovecot
) -> Iterator[Postfix]:
    _require_binary("postfix")
    server = new_postfix(tmp_path_factory, pki, dovecot)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_server() -> Iterator[TokenServer]:
    """The token server :func:`token_dovecot` asks about tokens (tests register clients)."""
    with TokenServer() as server:
        yield server


@pytest.fixture(scope="session")
def token_dovecot(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, token_server: TokenServer
) -> Iterator[Dovecot]:
    """A Dovecot that also takes XOAUTH2 and OAUTHBEARER logins with tokens of
    :func:`token_server`."""
    _require_binary("dovecot")
    server = Dovecot(
        tmp_path_factory.mktemp("token-dovecot"),
        pki.server_cert,
        pki.server_key,
        token_server.introspection_url,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_postfix(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, token_dovecot: Dovecot
) -> Iterator[Postfix]:
    """A Postfix whose submission logs in through, and delivers to, :func:`token_dovecot`."""
    _require_binary("postfix")
    server = new_postfix(tmp_path_factory, pki, token_dovecot, name="token-postfix")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_postfix(
    tmp_path_factory: pytest.TempPathFactory, pki: PKI, dovecot: Dovecot
) -> Iterator[Postfix]:
    """A Postfix of the test's own, to reconfigure (where it delivers, what it offers)."""
    server = new_postfix(tmp_path_factory, pki, dovecot)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def exit_stack() -> Iterator[ExitStack]:
    """Context managers (servers) a test enters here are left after it, newest first."""
    with ExitStack() as stack:
        yield stack


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port someone else listens on (TCP, 127.0.0.1), as if taken after free_port().

    Also the port for a process that must exit before it listens: nothing else can take
    it meanwhile, and the process could not serve on it by mistake."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.fixture(scope="session")
def uvloop_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``fast`` extra's requirements (uvloop, as pyproject.toml names it) installed
    into a directory of their own, for PYTHONPATH: the venv keeps asyncio's loop."""
    fast = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["fast"]
    target = tmp_path_factory.mktemp("uvloop")
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--target", str(target), *fast]  # fmt: skip
    subprocess.run(install, check=True, timeout=600)
    return target


@pytest.fixture(params=["asyncio", "uvloop"])
def served_loop(request: pytest.FixtureRequest) -> EventLoop:
    """Each event loop the exporter serves on: pass it to ``served_exporter(loop=...)``."""
    if request.param == "uvloop":
        return EventLoop("uvloop", request.getfixturevalue("uvloop_directory"))
    return EventLoop("asyncio")
