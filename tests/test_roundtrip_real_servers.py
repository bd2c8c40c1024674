"""Round trips through real Postfix (submission: STARTTLS + AUTH) into real Dovecot (LMTP),
read back over IMAPS, IMAP with STARTTLS and POP3S, with other mail in the same mailbox.

Each test uses a route name of its own, so the cleanup of one never meets another's mail.
Tests that reconfigure Postfix or need a Dovecot with other capabilities start private
instances; the rest share the session's servers.
"""

from __future__ import annotations

import asyncio
import imaplib
import os
import re
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aioimaplib
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mail_exporter.config.root import Config, parse_config
from mail_exporter.exporter import Exporter
from mail_exporter.roundtrip import runner as runner_module
from mail_exporter.roundtrip.message import ROUTE_HEADER, build_message, new_token
from mail_exporter.roundtrip.outcome import Stage
from mail_exporter.roundtrip.runner import RouteRunner
from tests.conftest import new_postfix
from tests.promtool import check_metrics
from tests.realservers.dovecot import Dovecot
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix
from tests.realservers.runtime import free_port
from tests.scripted import scripted_server, silent

pytestmark = pytest.mark.integration

USER = "probe@test.local"
GOOD = "RT_PASSWORD"
WRONG = "RT_WRONG_PASSWORD"
Snapshot = dict[str, tuple[frozenset[str], bytes]]


@pytest.fixture(autouse=True)
def passwords(monkeypatch: pytest.MonkeyPatch, dovecot: Dovecot) -> None:
    monkeypatch.setenv(GOOD, dovecot.password)
    monkeypatch.setenv(WRONG, "not-the-password")


def module(
    pki: PKI,
    protocol: str,
    tls: str,
    password: str = GOOD,
    mechanism: str = "auto",
    timeout: str = "3s",
    tls_config: str | None = None,
) -> str:
    """A module in YAML flow style, trusting the test CA unless ``tls_config`` says else."""
    tls_config = tls_config or f"{{ca_file: {pki.ca_file}}}"
    auth = f"{{username: {USER}, password_env: {password}, mechanism: {mechanism}}}"
    return (
        f"{{protocol: {protocol}, tls: {tls}, timeout: {timeout}, tls_config: {tls_config}, "
        f"auth: {auth}}}"
    )


def route_config(
    pki: PKI,
    name: str,
    send: str,
    receive: str,
    send_module: str | None = None,
    receive_module: str | None = None,
    timeout: str = "5s",
    **receive_options: str,
) -> Config:
    options = "".join(f", {key}: {value}" for key, value in receive_options.items())
    return parse_config(
        f"""
modules:
  send: {send_module or module(pki, "smtp", "starttls")}
  receive: {receive_module or module(pki, "imap", "implicit")}
roundtrip:
  - name: {name}
    timeout: {timeout}
    send: {{address: "{send}", module: send, from: {USER}, to: {USER}}}
    receive: {{address: "{receive}", module: receive{options}}}
"""
    )


def runner_for(config: Config) -> RouteRunner:
    route = config.roundtrip[0]
    return RouteRunner(route, config.modules["send"], config.modules["receive"])


def submission(postfix: Postfix) -> str:
    return f"127.0.0.1:{postfix.submission_port}"


def imaps(dovecot: Dovecot) -> str:
    return f"127.0.0.1:{dovecot.imaps_port}"


# Looking at the mailbox from the side, with Python's imaplib.


def imap_session(dovecot: Dovecot) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = imaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port, ssl_context=context)
    client.login(dovecot.user, dovecot.password)
    return client


def append(dovecot: Dovecot, mailbox: str, message: bytes, flags: str = "") -> None:
    with imap_session(dovecot) as client:
        client.create(mailbox)  # NO when it exists
        status, _ = client.append(mailbox, flags, None, message)
        assert status == "OK"


def add_other_mail(dovecot: Dovecot, mailbox: str = "INBOX") -> None:
    """Someone else's messages: one plain, one marked \\Deleted, one seen and flagged."""
    for index, flags in enumerate(("", r"(\Deleted)", r"(\Seen \Flagged)")):
        body = f"From: someone@example.org\r\nSubject: other mail {index} {time.time()}\r\n\r\nkeep\r\n"
        append(dovecot, mailbox, body.encode(), flags)


_FETCHED = re.compile(rb"UID (\d+) FLAGS \(([^)]*)\)")


def snapshot(dovecot: Dovecot, mailbox: str = "INBOX") -> Snapshot:
    """Every message's flags (but \\Recent, which depends on who looked first) and bytes."""
    with imap_session(dovecot) as client:
        status, _ = client.select(mailbox, readonly=True)
        assert status == "OK", f"no mailbox {mailbox}"
        _, data = client.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
    messages: Snapshot = {}
    for item in data:
        if isinstance(item, tuple):
            match = _FETCHED.search(item[0])
            assert match is not None, item[0]
            flags = frozenset(match.group(2).decode().split()) - {r"\Recent"}
            messages[match.group(1).decode()] = (flags, item[1])
    return messages


def uid_of(messages: Snapshot, token: str) -> str:
    (uid,) = [uid for uid, (_, raw) in messages.items() if f"Token: {token}\r\n".encode() in raw]
    return uid


def route_messages(dovecot: Dovecot, route: str, mailbox: str = "INBOX") -> list[bytes]:
    with imap_session(dovecot) as client:
        client.select(mailbox, readonly=True)
        _, data = client.uid("SEARCH", "HEADER", ROUTE_HEADER, route)
    return data[0].split() if data and data[0] else []


async def wait_for_route_message(dovecot: Dovecot, route: str) -> None:
    for _ in range(100):
        if await asyncio.to_thread(route_messages, dovecot, route):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no message of route {route} arrived")


# Success, over each way of reading the mailbox.


async def test_imaps_round_trip_leaves_other_mail_alone(
    postfix: Postfix, dovecot: Dovecot, pki: PKI
) -> None:
    add_other_mail(dovecot)
    before = snapshot(dovecot)
    runner = runner_for(route_config(pki, "imaps", submission(postfix), imaps(dovecot)))
    started = time.monotonic()
    outcome = await runner.run_once()
    assert outcome.success, outcome
    assert outcome.duration is not None and 0 < outcome.duration <= time.monotonic() - started
    assert set(outcome.hops) == {"1", "2"}  # Postfix, then Dovecot's LMTP
    assert not outcome.cleanup_failed
    assert snapshot(dovecot) == before  # ours is gone; the rest byte for byte, flags and all
    assert route_messages(dovecot, "imaps") == []


async def test_pop3s_round_trip_leaves_other_mail_alone(
    postfix: Postfix, dovecot: Dovecot, pki: PKI
) -> None:
    add_other_mail(dovecot)
    before = snapshot(dovecot)
    config = route_config(
        pki,
        "pop3s",
        f"localhost:{postfix.submission_port}",  # a name, and ::1 first (ip6 preferred)
        f"127.0.0.1:{dovecot.pop3s_port}",
        receive_module=module(pki, "pop3", "implicit"),
    )
    started = time.monotonic()
    outcome = await runner_for(config).run_once()
    assert outcome.success, outcome
    assert outcome.duration is not None and 0 < outcome.duration <= time.monotonic() - started
    assert not outcome.cleanup_failed
    assert snapshot(dovecot) == before


async def test_imap_starttls_with_authenticate_plain_and_smtps(
    postfix: Postfix, dovecot: Dovecot, pki: PKI
) -> None:
    config = route_config(
        pki,
        "starttls",
        f"127.0.0.1:{postfix.smtps_port}",
        f"127.0.0.1:{dovecot.imap_port}",
        send_module=module(pki, "smtp", "implicit"),
        receive_module=module(pki, "imap", "starttls", mechanism="plain"),
    )
    outcome = await runner_for(config).run_once()
    assert outcome.success, outcome
    assert route_messages(dovecot, "starttls") == []


async def test_junk_delivery_is_its_own_outcome(
    postfix: Postfix, dovecot: Dovecot, pki: PKI
) -> None:
    # Postfix delivers to INBOX; configured as the junk mailbox, INBOX plays the spam folder.
    with imap_session(dovecot) as client:
        client.create("RoundTripMain")
    config = route_config(
        pki,
        "junk",
        submission(postfix),
        imaps(dovecot),
        mailbox="RoundTripMain",
        junk_mailbox="INBOX",
    )
    runner = runner_for(config)
    outcome = await runner.run_once()
    assert outcome.junk and not outcome.success and outcome.failure is None
    assert runner.stats.junk == 1.0 and runner.stats.success is False
    assert runner.stats.last_success is None
    assert route_messages(dovecot, "junk") == []


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
async def test_messages_with_tokens_this_process_did_not_issue_stay(
    postfix: Postfix, dovecot: Dovecot, pki: PKI, protocol: str
) -> None:
    """Our headers with a well-formed token: an earlier run's leftover, another exporter's
    message or a forgery. None of them is deleted or counted, old or young, flagged or not."""
    route = f"not-issued-{protocol}"

    def tagged(route: str, age: float) -> bytes:
        return bytes(build_message(route, USER, USER, new_token(), time.time() - age))

    append(dovecot, "INBOX", tagged(route, age=3600))
    append(dovecot, "INBOX", tagged(route, age=7200), r"(\Deleted)")
    append(dovecot, "INBOX", tagged(route, age=1))
    append(dovecot, "INBOX", tagged(f"{route}-other", age=3600))
    add_other_mail(dovecot)
    before = snapshot(dovecot)
    port = dovecot.imaps_port if protocol == "imap" else dovecot.pop3s_port
    config = route_config(
        pki,
        route,
        submission(postfix),
        f"127.0.0.1:{port}",
        receive_module=module(pki, protocol, "implicit"),
    )
    runner = runner_for(config)
    for _ in range(2):
        outcome = await runner.run_once()
        assert outcome.success and outcome.late == 0 and not outcome.cleanup_failed
    assert runner.stats.late == 0.0
    assert snapshot(dovecot) == before


# Failures, each counted under its own stage.


async def test_wrong_send_password_is_send_auth(
    postfix: Postfix, dovecot: Dovecot, pki: PKI
) -> None:
    config = route_config(
        pki,
        "send-auth",
        submission(postfix),
        imaps(dovecot),
        send_module=module(pki, "smtp", "starttls", password=WRONG),
    )
    runner = runner_for(config)
    outcome = await runner.run_once()
    assert outcome.failure is Stage.SEND_AUTH
    assert runner.stats.failures == {
        "send": 0.0,
        "send_auth": 1.0,
        "receive": 0.0,
        "receive_auth": 0.0,
        "timeout": 0.0,
        "cleanup": 0.0,
    }


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
async def test_wrong_receive_password_is_receive_auth_and_sends_nothing(
    postfix: Postfix, dovecot: Dovecot, pki: PKI, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = dovecot.imaps_port if protocol == "imap" else dovecot.pop3s_port
    config = route_config(
        pki,
        f"receive-auth-{protocol}",
        submission(postfix),
        f"127.0.0.1:{port}",
        receive_module=module(pki, protocol, "implicit", password=WRONG),
    )
    outcome = await runner_for(config).run_once()
    assert outcome.failure is Stage.RECEIVE_AUTH
    await asyncio.sleep(0.2)
    assert route_messages(dovecot, f"receive-auth-{protocol}") == []
    assert "not-the-password" not in caplog.text
    assert "receive_auth failed" in caplog.text


async def test_imap_server_down_is_receive(postfix: Postfix, pki: PKI) -> None:
    config = route_config(pki, "down", submission(postfix), f"127.0.0.1:{free_port()}")
    runner = runner_for(config)
    outcome = await runner.run_once()
    assert outcome.failure is Stage.RECEIVE
    assert runner.stats.success is False


@pytest.mark.parametrize("side", ["send", "receive"])
async def test_an_untrusted_certificate_stops_before_the_login(
    postfix: Postfix, dovecot: Dovecot, pki: PKI, side: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Without a ca_file the system CAs decide, and they do not know the test CA.
    config = route_config(
        pki,
        f"untrusted-{side}",
        submission(postfix),
        imaps(dovecot),
        send_module=module(pki, "smtp", "starttls", tls_config="{}") if side == "send" else None,
        receive_module=(
            module(pki, "imap", "implicit", tls_config="{}") if side == "receive" else None
        ),
    )
    outcome = await runner_for(config).run_once()
    assert outcome.failure is (Stage.SEND if side == "send" else Stage.RECEIVE)
    assert "certificate not verified" in caplog.text


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    async with scripted_server(silent) as address:
        yield address


async def test_a_hanging_mailbox_stalls_only_its_own_route(
    postfix: Postfix, dovecot: Dovecot, pki: PKI, silent_server: str
) -> None:
    stuck = runner_for(
        route_config(
            pki,
            "stuck",
            submission(postfix),
            silent_server,
            receive_module=module(pki, "imap", "starttls", timeout="2s"),
        )
    )
    healthy = runner_for(route_config(pki, "healthy", submission(postfix), imaps(dovecot)))
    started = time.monotonic()
    stuck_attempt = asyncio.create_task(stuck.run_once())
    assert (await healthy.run_once()).success
    assert not stuck_attempt.done()  # done while the other still waits for a greeting
    # The silent server never greets: only the 2 s timeout ends that wait (the cap turns
    # a wait without end into a failure instead of a hung suite).
    assert (await asyncio.wait_for(stuck_attempt, 60)).failure is Stage.RECEIVE
    assert time.monotonic() - started >= 2.0


# A message held in Postfix's queue: lost after the timeout, counted late once it arrives.


def postfix_command(postfix: Postfix, *command: str) -> None:
    subprocess.run([*command[:1], "-c", str(postfix.config_dir), *command[1:]], check=True)


def deliver_to(postfix: Postfix, lmtp_port: int) -> None:
    postfix_command(postfix, "postconf", "-e", f"virtual_transport=lmtp:inet:127.0.0.1:{lmtp_port}")
    # postfix waits about 2.5 s when main.cf is less than a second old
    an_hour_ago = time.time() - 3600
    os.utime(postfix.config_dir / "main.cf", (an_hour_ago, an_hour_ago))
    postfix_command(postfix, "postfix", "reload")


def flush_until_empty(postfix: Postfix, limit: float = 30.0) -> None:
    """Flush the queue until it is empty (a bounded wait). One flush is not enough: right
    after a reload, a flush can reach the old queue manager, or come before the first
    attempt has deferred the message, which then waits out Postfix's back-off."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        postfix_command(postfix, "postqueue", "-f")
        queued = subprocess.run(["postqueue", "-c", str(postfix.config_dir), "-j"],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        if not queued.strip():
            return
        time.sleep(0.5)


async def test_lost_while_lmtp_is_down_then_counted_late(
    private_postfix: Postfix, dovecot: Dovecot, pki: PKI
) -> None:
    config = route_config(
        pki, "lmtp-down", submission(private_postfix), imaps(dovecot), timeout="1s"
    )
    runner = runner_for(config)
    deliver_to(private_postfix, free_port())  # nothing listens: the mail stays deferred
    try:
        lost = await runner.run_once()
        assert lost.failure is Stage.TIMEOUT
    finally:
        deliver_to(private_postfix, dovecot.lmtp_port)
    await asyncio.to_thread(flush_until_empty, private_postfix)
    await wait_for_route_message(dovecot, "lmtp-down")
    found = await runner.run_once()
    assert found.success and found.late == 1
    assert runner.stats.late == 1.0
    assert runner.stats.failures["timeout"] == 1.0  # lost once, not again
    assert route_messages(dovecot, "lmtp-down") == []


async def test_idle_notification_ends_the_wait(
    private_postfix: Postfix, dovecot: Dovecot, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message is delivered only once the runner idles, and no pause ends before the
    route's deadline: only Dovecot's IDLE notification can let it see the message in time."""
    monkeypatch.setattr(runner_module, "FIRST_PAUSE_SECONDS", 3600.0)
    config = route_config(
        pki,
        "idle",
        submission(private_postfix),
        imaps(dovecot),
        timeout="60s",
        poll_interval="3600s",
    )
    deliver_to(private_postfix, free_port())  # held in the queue until released
    idling = aioimaplib.IMAP4ClientProtocol.wait_for_idle_response
    releases: list[asyncio.Task[None]] = []

    async def release_when_idling(self: aioimaplib.IMAP4ClientProtocol) -> None:
        await idling(self)  # the server's "+ idling": from now on it notifies
        if not releases:
            releases.append(asyncio.create_task(asyncio.to_thread(release)))

    def release() -> None:
        deliver_to(private_postfix, dovecot.lmtp_port)
        flush_until_empty(private_postfix)

    monkeypatch.setattr(
        aioimaplib.IMAP4ClientProtocol, "wait_for_idle_response", release_when_idling
    )
    try:
        outcome = await runner_for(config).run_once()
    finally:
        if not releases:
            release()
        await asyncio.gather(*releases)
    assert releases, "the runner never idled"
    assert outcome.success, outcome
    assert route_messages(dovecot, "idle") == []


# Another client of the mailbox that marks mail \Deleted at the worst moment.

FOREIGN = "X-Foreign"


class Meddler:
    """Another client with a message of its own in each of ``mailboxes``, which it marks
    \\Deleted right before each command of the exporter's sessions that removes mail for
    good (EXPUNGE, CLOSE, DELETE): its owner means to expunge it, but not to lose it to
    the exporter's command, which was checked and sent before the flag was set."""

    WHOLESALE = frozenset({"EXPUNGE", "CLOSE", "DELETE"})

    def __init__(self, dovecot: Dovecot, mailboxes: tuple[str, ...]) -> None:
        self.dovecot = dovecot
        self.mailboxes = mailboxes
        self.marked = 0
        for mailbox in mailboxes:
            append(dovecot, mailbox, f"{FOREIGN}: yes\r\nSubject: mine\r\n\r\nmine\r\n".encode())

    def mark(self) -> None:
        self.marked += 1
        with imap_session(self.dovecot) as client:
            for mailbox in self.mailboxes:
                client.select(mailbox)
                _, data = client.uid("SEARCH", "HEADER", FOREIGN, '""')
                for uid in data[0].split():  # none once lost
                    client.uid("STORE", uid.decode(), "+FLAGS", r"(\Deleted)")

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        execute = aioimaplib.IMAP4ClientProtocol.execute

        async def meddled(
            protocol: aioimaplib.IMAP4ClientProtocol, command: aioimaplib.Command, **kwargs: str
        ) -> aioimaplib.Response:
            if command.name in self.WHOLESALE and not command.prefix:  # not UID EXPUNGE
                await asyncio.to_thread(self.mark)
            return await execute(protocol, command, **kwargs)

        monkeypatch.setattr(aioimaplib.IMAP4ClientProtocol, "execute", meddled)

    def check(self) -> None:
        """Its message in each mailbox is still there (marked \\Deleted once it acted)."""
        for mailbox in self.mailboxes:
            mine = [f for f, raw in snapshot(self.dovecot, mailbox).values() if b"X-Foreign" in raw]
            assert mine == [frozenset({r"\Deleted"} if self.marked else ())], mailbox


def folders(dovecot: Dovecot) -> set[str]:
    with imap_session(dovecot) as client:
        _, data = client.list()
    return {bytes(line).rpartition(b" ")[2].strip(b'"').decode() for line in data}


async def test_with_uidplus_only_our_uids_are_expunged(
    postfix: Postfix, dovecot: Dovecot, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_other_mail(dovecot)
    before = snapshot(dovecot)
    meddler = Meddler(dovecot, ("INBOX",))
    meddler.install(monkeypatch)
    outcome = await runner_for(
        route_config(pki, "uidplus", submission(postfix), imaps(dovecot))
    ).run_once()
    assert outcome.success and not outcome.cleanup_failed
    assert meddler.marked == 0  # UID EXPUNGE only: no wholesale command was sent
    after = snapshot(dovecot)
    assert {uid: after[uid] for uid in before} == before
    meddler.check()


# A Dovecot that advertises neither UIDPLUS nor IDLE (and, in one case, no MOVE either).


class RestrictedDovecot(Dovecot):
    """A Dovecot that lists ``capabilities`` (and its AUTH= mechanisms, STARTTLS)."""

    def __init__(
        self,
        work_dir: Path,
        cert: Path,
        key: Path,
        capabilities: str,
        oauth2_introspection_url: str | None = None,
    ) -> None:
        super().__init__(work_dir, cert, key, oauth2_introspection_url)
        self.capabilities = capabilities

    def _config(self, uid: int, gid: int) -> str:
        return super()._config(uid, gid) + f"imap_capability = {self.capabilities}\n"


@pytest.mark.parametrize("move", [True, False], ids=["move", "copy"])
async def test_without_uidplus_others_deleted_messages_survive(
    tmp_path_factory: pytest.TempPathFactory,
    pki: PKI,
    move: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    capabilities = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE NAMESPACE LITERAL+"
    restricted = RestrictedDovecot(
        tmp_path_factory.mktemp("dovecot"),
        pki.server_cert,
        pki.server_key,
        capabilities + (" MOVE" if move else ""),
    )
    restricted.start()
    postfix = new_postfix(tmp_path_factory, pki, restricted)
    try:
        postfix.start()

        async def no_idle(self: object) -> None:
            raise AssertionError("IDLE sent to a server that does not offer it")

        monkeypatch.setattr(aioimaplib.IMAP4ClientProtocol, "idle", no_idle)
        # Someone else's mail, \Deleted among it, also in the configured cleanup_mailbox,
        # a message with our headers but a token not issued here, and a client that marks
        # more mail \Deleted right before anything of ours that could remove mail for good.
        add_other_mail(restricted)
        add_other_mail(restricted, "mail_exporter")
        forged = build_message("restricted", USER, USER, new_token(), time.time() - 3600)
        append(restricted, "INBOX", bytes(forged))
        before = snapshot(restricted)
        cleanup_before = snapshot(restricted, "mail_exporter")
        meddler = Meddler(restricted, ("INBOX", "mail_exporter"))
        meddler.install(monkeypatch)
        config = route_config(
            pki, "restricted", submission(postfix), imaps(restricted), poll_interval="50ms"
        )
        runner = runner_for(config)
        for _ in range(2):  # the second attempt must not trip over the first one's traces
            outcome = await runner.run_once()
            assert outcome.success and outcome.late == 0 and not outcome.cleanup_failed
        assert meddler.marked == 2  # once before each attempt's DELETE of its folder
        meddler.check()
        after = snapshot(restricted)
        assert {uid: after[uid] for uid in before} == before  # \Deleted ones included
        extra = [after[uid] for uid in set(after) - set(before)]
        ours = [flags for flags, raw in extra if FOREIGN.encode() not in raw]
        if move:
            assert ours == []
        else:  # our copied originals stay flagged for the owner's client to expunge
            assert len(ours) == 2 and all(r"\Deleted" in flags for flags in ours)
        cleanup_after = snapshot(restricted, "mail_exporter")
        assert {uid: cleanup_after[uid] for uid in cleanup_before} == cleanup_before
        assert folders(restricted) == {"INBOX", "mail_exporter"}  # no folder of ours is left

        # A session lost right before the DELETE leaves the folder: the next cleanup takes it.
        execute = aioimaplib.IMAP4ClientProtocol.execute

        async def lost_before_delete(
            protocol: aioimaplib.IMAP4ClientProtocol, command: aioimaplib.Command, **kwargs: str
        ) -> aioimaplib.Response:
            if command.name == "DELETE":
                monkeypatch.setattr(aioimaplib.IMAP4ClientProtocol, "execute", execute)
                raise aioimaplib.Abort("connection lost")
            return await execute(protocol, command, **kwargs)

        monkeypatch.setattr(aioimaplib.IMAP4ClientProtocol, "execute", lost_before_delete)
        assert (await runner.run_once()).cleanup_failed
        assert len(folders(restricted)) == 3
        outcome = await runner.run_once()
        assert outcome.success and not outcome.cleanup_failed
        assert folders(restricted) == {"INBOX", "mail_exporter"}
        meddler.check()
    finally:
        postfix.stop()
        restricted.stop()


# The exporter runs routes itself and exports them.


async def test_exporter_runs_routes_and_metrics_pass_promtool(
    tmp_path: Path,
    postfix: Postfix,
    dovecot: Dovecot,
    pki: PKI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner_module, "FIRST_RUN_SPREAD_SECONDS", 0.0)
    path = tmp_path / "config.yml"
    path.write_text(
        f"""
modules:
  send: {module(pki, "smtp", "starttls")}
  receive: {module(pki, "imap", "implicit")}
roundtrip:
  - name: exported
    interval: 1s
    send: {{address: "{submission(postfix)}", module: send, from: {USER}, to: {USER}}}
    receive: {{address: "{imaps(dovecot)}", module: receive}}
"""
    )
    exporter = Exporter(path, {})
    exporter.start()
    try:
        for _ in range(50):
            if exporter.roundtrip.routes["exported"].stats.success is not None:
                break
            await asyncio.sleep(0.1)
        text = (await asyncio.to_thread(generate_latest, exporter.registry)).decode()
    finally:
        exporter.stop()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    route = (("route", "exported"),)
    assert samples[("mail_roundtrip_success", route)] == 1.0
    assert samples[("mail_roundtrip_delivery_seconds_count", route)] >= 1.0
    assert samples[("mail_roundtrip_failures_total", (*route, ("stage", "cleanup")))] == 0.0
    assert dovecot.password not in text
    await check_metrics(text)
