"""Probes against scripted loopback servers: the edge cases real servers won't produce."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

import mail_exporter.probes
from mail_exporter.config.probes import ModuleConfig
from mail_exporter.probes import FailureReason, Phase, ProbeResult, run_probe
from mail_exporter.probes.result import SessionLog
from mail_exporter.probes.session import MAX_LINE_BYTES, MAX_REPLY_LINES, Session
from mail_exporter.targets import parse_address
from tests.realservers.pki import PKI
from tests.scripted import Handler, scripted_server, send, server_context, smtp_script, upgrade


def module(**settings: Any) -> ModuleConfig:
    return ModuleConfig.model_validate({"protocol": "smtp", **settings})


async def probe(
    handler: Handler,
    mod: ModuleConfig,
    budget: float = 5.0,
    tls: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
) -> ProbeResult:
    async with scripted_server(handler, tls, host) as address:
        return await run_probe(parse_address(address), mod, budget)


def assert_failed(result: ProbeResult, phase: Phase, reason: FailureReason) -> None:
    assert not result.success, result.log
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (phase, reason), result.log


async def test_multiline_replies_are_read_by_code() -> None:
    handler = smtp_script(
        ["220-mx.example.net ESMTP", "220-second line", "220 ready"],
        [
            "250-mx.example.net",
            "250-PIPELINING",
            "250-SIZE 10240000",
            "250-AUTH PLAIN LOGIN",
            "250 8BITMIME",
        ],
    )
    result = await probe(handler, module())
    assert result.success, result.log
    assert result.starttls_offered is False
    assert result.plaintext_auth_offered is True
    assert set(result.phases) == {
        Phase.RESOLVE,
        Phase.CONNECT,
        Phase.BANNER,
        Phase.CAPABILITIES,
        Phase.QUIT,
    }


async def test_bare_lf_replies_are_accepted() -> None:
    handler = smtp_script(["220 ready"], ["250-hi", "250 STARTTLS"], ending=b"\n")
    result = await probe(handler, module())
    assert result.success, result.log
    assert result.starttls_offered is True
    assert result.plaintext_auth_offered is False


@pytest.mark.parametrize("banner", ["421 4.3.2 too busy, try later", "554 5.7.1 go away"])
async def test_error_banner_fails_at_once(banner: str) -> None:
    result = await probe(smtp_script([banner]), module(), budget=30.0)
    assert_failed(result, Phase.BANNER, FailureReason.BANNER)
    assert result.failure is not None and banner[:3] in result.failure.detail
    assert result.duration_seconds < 15.0  # fails on the reply, not the 30 s budget


async def test_4xx_to_ehlo_is_rejected_at_once() -> None:
    result = await probe(smtp_script(["220 hi"], ["451 local error"]), module(), budget=30.0)
    assert_failed(result, Phase.CAPABILITIES, FailureReason.REJECTED)
    assert result.duration_seconds < 15.0


async def test_silent_server_ends_within_budget() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    result = await probe(silent, module(), budget=0.5)
    assert_failed(result, Phase.BANNER, FailureReason.TIMEOUT)
    assert result.duration_seconds < 5.0


async def test_garbage_banner_is_a_banner_failure() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(bytes(range(256)) + b"\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    result = await probe(garbage, module())
    assert_failed(result, Phase.BANNER, FailureReason.BANNER)


async def test_endless_line_is_cut_off() -> None:
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, "220 hi")
        await reader.readline()
        for _ in range(200):  # 12.8 MB without a line break
            writer.write(b"A" * 65536)
            await writer.drain()

    result = await probe(flood, module())
    assert_failed(result, Phase.CAPABILITIES, FailureReason.PROTOCOL)
    assert result.failure is not None and "longer than" in result.failure.detail


async def test_endless_multiline_reply_is_cut_off() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, "220 hi")
        await reader.readline()
        for _ in range(100_000):
            writer.write(b"250-more\r\n")
            await writer.drain()

    result = await probe(endless, module())
    assert_failed(result, Phase.CAPABILITIES, FailureReason.PROTOCOL)


async def test_unread_lines_stay_bounded_in_memory() -> None:
    """A server that pours out lines faster than the probe reads them fills the kernel's
    buffers, not the probe's memory: the connection stops reading above its bound."""
    sent = 0
    flood_bytes = 64 * 1024 * 1024

    async def pour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        chunk = b"250-more\r\n" * 6554  # 64 KiB of short lines
        while sent < flood_bytes:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)

    async with scripted_server(pour) as address:
        session = Session(parse_address(address), module(), ProbeResult("smtp"))
        await session.connect()
        try:
            await asyncio.sleep(1.0)  # the probe reads nothing meanwhile
            assert sent < flood_bytes / 2, f"{sent} bytes taken in without being read"
            assert await session.read_line() == "250-more"
        finally:
            await session.close()


async def test_connection_closed_mid_reply() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, "220 hi")
        await reader.readline()
        await send(writer, "250-first")

    result = await probe(hang_up, module())
    assert_failed(result, Phase.CAPABILITIES, FailureReason.PROTOCOL)


async def test_required_starttls_missing() -> None:
    result = await probe(
        smtp_script(["220 hi"], ["250-hi", "250 AUTH PLAIN"]), module(tls="starttls")
    )
    assert_failed(result, Phase.CAPABILITIES, FailureReason.STARTTLS_UNAVAILABLE)
    assert result.starttls_offered is False
    assert result.plaintext_auth_offered is True


async def test_optional_starttls_missing_passes() -> None:
    handler = smtp_script(["220 hi"], ["250 hi"])
    result = await probe(handler, module(tls="starttls", require_tls=False))
    assert result.success, result.log
    assert result.starttls_offered is False
    assert result.tls is None


async def test_refused_connection() -> None:
    async with scripted_server(smtp_script(["220 hi"])) as address:
        pass  # closed again: nothing listens on the port any more
    result = await run_probe(parse_address(address), module(), 5.0)
    assert_failed(result, Phase.CONNECT, FailureReason.CONNECT)


async def test_ipv6_literal_target() -> None:
    result = await probe(smtp_script(["220 hi"]), module(), host="::1")
    assert result.success, result.log
    assert result.peer_address == "::1"


def tls_module(pki: PKI, **settings: Any) -> ModuleConfig:
    return module(tls="implicit", tls_config={"ca_file": str(pki.ca_file), **settings})


async def test_expired_certificate_facts_still_exported(pki: PKI) -> None:
    context = server_context(pki.expired_cert, pki.expired_key)
    result = await probe(smtp_script(["220 hi"]), tls_module(pki), tls=context)
    assert_failed(result, Phase.TLS_HANDSHAKE, FailureReason.TLS)
    assert result.tls is not None
    assert result.tls.verified is False
    assert result.tls.earliest_not_after is not None
    assert 0 < result.tls.earliest_not_after < asyncio.get_running_loop().time() + 4e9


async def test_expired_certificate_with_skip_verify_passes(pki: PKI) -> None:
    context = server_context(pki.expired_cert, pki.expired_key)
    mod = tls_module(pki, insecure_skip_verify=True)
    result = await probe(smtp_script(["220 hi"]), mod, tls=context)
    assert result.success, result.log
    assert result.tls is not None and result.tls.verified is False


async def test_wrong_host_name_is_not_verified(pki: PKI) -> None:
    context = server_context(pki.wronghost_cert, pki.wronghost_key)
    result = await probe(smtp_script(["220 hi"]), tls_module(pki), tls=context)
    assert_failed(result, Phase.TLS_HANDSHAKE, FailureReason.TLS)
    assert result.tls is not None and result.tls.verified is False
    assert result.tls.leaf_not_before is not None


async def test_server_name_overrides_host_for_verification(pki: PKI) -> None:
    context = server_context(pki.wronghost_cert, pki.wronghost_key)
    mod = tls_module(pki, server_name="other.example.net")
    result = await probe(smtp_script(["220 hi"]), mod, tls=context)
    assert result.success, result.log
    assert result.tls is not None and result.tls.verified is True


async def test_starttls_upgrade_and_second_ehlo(pki: PKI) -> None:
    context = server_context(pki.server_cert, pki.server_key)
    handler = smtp_script(["220 hi"], ["250-hi", "250-STARTTLS", "250 AUTH PLAIN"], tls=context)
    result = await probe(handler, module(tls="starttls", tls_config={"ca_file": str(pki.ca_file)}))
    assert result.success, result.log
    assert result.tls is not None and result.tls.verified is True
    assert result.starttls_offered is True
    assert Phase.STARTTLS in result.phases and Phase.TLS_HANDSHAKE in result.phases


async def test_imap_bye_greeting() -> None:
    async def bye(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, "* BYE too many connections")

    result = await probe(bye, module(protocol="imap"))
    assert_failed(result, Phase.BANNER, FailureReason.BANNER)


async def test_pop3_err_greeting() -> None:
    async def err(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, "-ERR [SYS/TEMP] maintenance")

    result = await probe(err, module(protocol="pop3"))
    assert_failed(result, Phase.BANNER, FailureReason.BANNER)


async def test_pop3_without_capa() -> None:
    async def old(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, "+OK POP3 ready")
        while line := (await reader.readline()).decode().strip():
            await send(writer, "+OK bye" if line == "QUIT" else "-ERR unknown command")

    result = await probe(old, module(protocol="pop3"))
    assert result.success, result.log
    assert result.starttls_offered is False


async def test_plaintext_injected_after_starttls_is_refused(pki: PKI) -> None:
    async def injecting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, "220 hi")
        await reader.readline()
        await send(writer, "250-hi", "250 STARTTLS")
        await reader.readline()
        await send(writer, "220 go ahead", "250 injected before TLS")
        await asyncio.sleep(5)

    mod = module(tls="starttls", tls_config={"ca_file": str(pki.ca_file)})
    result = await probe(injecting, mod)
    assert_failed(result, Phase.STARTTLS, FailureReason.PROTOCOL)


async def test_sni_is_the_server_name_or_the_host(pki: PKI) -> None:
    seen: list[str | None] = []
    context = server_context(pki.server_cert, pki.server_key)
    context.sni_callback = lambda connection, name, ctx: seen.append(name)
    ca = {"ca_file": str(pki.ca_file)}
    async with scripted_server(smtp_script(["220 hi"]), context) as address:
        port = parse_address(address).port
        named = await run_probe(
            parse_address(f"localhost:{port}"), module(tls="implicit", tls_config=ca), 5
        )
        override = module(tls="implicit", tls_config={**ca, "server_name": "mail.test.local"})
        renamed = await run_probe(parse_address(f"127.0.0.1:{port}"), override, 5)
        literal = await run_probe(
            parse_address(f"127.0.0.1:{port}"), module(tls="implicit", tls_config=ca), 5
        )
    assert named.success and renamed.success and literal.success, (
        named.log,
        renamed.log,
        literal.log,
    )
    assert seen == ["localhost", "mail.test.local", None]  # no SNI for an IP literal (RFC 6066)


Answer = Callable[[str], Sequence[str]]
"""A scripted server's reply lines to one command line; none: it stays silent."""


async def dialogue(
    answer: Answer,
    mod: ModuleConfig,
    budget: float = 5.0,
    hang_up_after: str | None = None,
    greeting: str = "220 mx.test ESMTP",
) -> tuple[ProbeResult, list[str]]:
    """Probe a server that greets, answers each command line with ``answer`` (and closes the
    connection after the verb ``hang_up_after``); the result, and what the server heard."""
    heard: list[str] = []
    ended = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await send(writer, greeting)
            while line := (await reader.readline()).decode().strip():
                heard.append(line)
                await send(writer, *answer(line))
                if hang_up_after is not None and line.upper().startswith(hang_up_after):
                    return
        finally:
            ended.set()

    async with scripted_server(handler) as address:
        result = await run_probe(parse_address(address), mod, budget)
        await asyncio.wait_for(ended.wait(), 10)  # the server has read all the probe sent
    return result, heard


Script = Mapping[str, Sequence[str]]
"""A scripted server's answers by command verb; ``{tag}`` stands for the IMAP tag."""


async def probe_dialogue(
    greeting: str, script: Script, mod: ModuleConfig, budget: float = 5.0
) -> tuple[ProbeResult, list[str]]:
    """Probe a server that greets, answers each command from ``script`` and stays silent
    at a verb the script lacks; the result, and every command line the server heard."""
    tagged = mod.protocol == "imap"

    def answer(line: str) -> list[str]:
        tag, verb, *_ = line.split() if tagged else ["", *line.split()]
        return [reply.format(tag=tag) for reply in script.get(verb, [])]

    return await dialogue(answer, mod, budget, greeting=greeting)


def login_module(protocol: str, monkeypatch: pytest.MonkeyPatch) -> ModuleConfig:
    monkeypatch.setenv("SCRIPTED_PROBE_PASSWORD", "wrong")
    auth = {"username": "probe", "password_env": "SCRIPTED_PROBE_PASSWORD"}
    return module(protocol=protocol, auth=auth, allow_plaintext_auth=True)


# Per protocol: greeting, answers that refuse the login, the goodbye and its answer.
REFUSED_LOGIN: dict[str, tuple[str, Script, str, Sequence[str]]] = {
    "smtp": (
        "220 mx.test ESMTP",
        {"EHLO": ["250-mx.test", "250 AUTH PLAIN LOGIN"], "AUTH": ["535 5.7.8 Bad credentials"]},
        "QUIT",
        ["221 2.0.0 Bye"],
    ),
    "imap": (
        "* OK ready",
        {
            "CAPABILITY": ["* CAPABILITY IMAP4rev1 AUTH=PLAIN", "{tag} OK done"],
            "LOGIN": ["{tag} NO [AUTHENTICATIONFAILED] Authentication failed."],
        },
        "LOGOUT",
        ["* BYE Logging out", "{tag} OK Logout completed."],
    ),
    "pop3": (
        "+OK ready",
        {"CAPA": ["+OK", "USER", "."], "USER": ["+OK"], "PASS": ["-ERR [AUTH] Bad credentials"]},
        "QUIT",
        ["+OK Logging out."],
    ),
}

HEARD_AFTER_REFUSED_LOGIN = {
    "smtp": ["EHLO", "AUTH", "QUIT"],
    "imap": ["a1 CAPABILITY", "a2 LOGIN", "a3 LOGOUT"],
    "pop3": ["CAPA", "USER", "PASS", "QUIT"],
}


def commands(heard: list[str], protocol: str) -> list[str]:
    """What the server heard without arguments (and so without secrets)."""
    words = 2 if protocol == "imap" else 1
    return [" ".join(line.split()[:words]) for line in heard]


@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
async def test_refused_login_ends_with_a_goodbye(
    protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    greeting, script, goodbye, answer = REFUSED_LOGIN[protocol]
    mod = login_module(protocol, monkeypatch)
    result, heard = await probe_dialogue(greeting, {**script, goodbye: answer}, mod)
    assert_failed(result, Phase.AUTH, FailureReason.AUTH)
    assert commands(heard, protocol) == HEARD_AFTER_REFUSED_LOGIN[protocol]
    assert Phase.QUIT not in result.phases  # a failed probe's goodbye is not timed
    assert result.plaintext_auth_offered is True


@pytest.mark.parametrize(
    ("ehlo", "settings", "reason"),
    [
        (["550 no EHLO here"], {}, FailureReason.REJECTED),
        (
            ["250-mx.test", "250 AUTH PLAIN"],
            {"tls": "starttls"},
            FailureReason.STARTTLS_UNAVAILABLE,
        ),
    ],
    ids=["rejected", "starttls_unavailable"],
)
async def test_other_refusals_end_with_quit(
    ehlo: list[str], settings: dict[str, str], reason: FailureReason
) -> None:
    script = {"EHLO": ehlo, "HELO": ["550 no HELO either"], "QUIT": ["221 Bye"]}
    result, heard = await probe_dialogue("220 mx.test", script, module(**settings))
    assert result.failure is not None and result.failure.reason == reason, result.log
    assert commands(heard, "smtp")[-1] == "QUIT"


@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
async def test_unanswered_goodbye_waits_a_second_at_most(
    protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    greeting, script, _, _ = REFUSED_LOGIN[protocol]  # the goodbye gets no answer
    mod = login_module(protocol, monkeypatch)
    result, heard = await probe_dialogue(greeting, script, mod, budget=30.0)
    assert_failed(result, Phase.AUTH, FailureReason.AUTH)
    assert commands(heard, protocol) == HEARD_AFTER_REFUSED_LOGIN[protocol]
    assert result.duration_seconds < 10.0  # the 1 s cap, not the 30 s budget


async def test_unanswered_goodbye_never_outlasts_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mail_exporter.probes, "FAREWELL_SECONDS", 60.0)
    greeting, script, _, _ = REFUSED_LOGIN["smtp"]
    result, _ = await probe_dialogue(greeting, script, login_module("smtp", monkeypatch), 1.0)
    assert_failed(result, Phase.AUTH, FailureReason.AUTH)
    assert result.duration_seconds < 10.0  # the 1 s budget, not the 60 s cap


@pytest.mark.parametrize(("greeting", "heard"), [
    ("554 5.7.1 No SMTP service here", ["QUIT"]),  # RFC 5321 3.1: the client sends QUIT
    ("421 4.3.2 Too busy, closing", []),  # the server closes: nothing more to say
    ("hello there", []),  # not SMTP: nothing to say either
])  # fmt: skip
async def test_refused_greeting_gets_quit_only_when_the_server_waits_for_it(
    greeting: str, heard: list[str]
) -> None:
    result, said = await probe_dialogue(greeting, {"QUIT": ["221 Bye"]}, module())
    assert_failed(result, Phase.BANNER, FailureReason.BANNER)
    assert said == heard


async def test_imap_login_asking_for_more_is_cancelled_before_logout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that wants a second SASL round gets "*" (cancel), then LOGOUT as a command."""
    heard: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, "* OK ready")
        answers = {
            "a1 CAPABILITY": ["* CAPABILITY IMAP4rev1 AUTH=PLAIN LOGINDISABLED", "a1 OK done"],
            "a2 AUTHENTICATE PLAIN": ["+ "],
            "*": ["a2 BAD AUTHENTICATE cancelled"],
            "a3 LOGOUT": ["* BYE Logging out", "a3 OK Logout completed."],
        }
        while line := (await reader.readline()).decode().strip():
            heard.append(line)
            await send(writer, *answers.get(line, ["+ and what else?"]))

    async with scripted_server(handler) as address:
        mod = login_module("imap", monkeypatch)
        result = await run_probe(parse_address(address), mod, 5.0)
    assert_failed(result, Phase.AUTH, FailureReason.AUTH)
    assert [line if " " in line or line == "*" else "<token>" for line in heard] == [
        "a1 CAPABILITY", "a2 AUTHENTICATE PLAIN", "<token>", "*", "a3 LOGOUT"
    ]  # fmt: skip


async def test_no_goodbye_after_a_malformed_reply() -> None:
    script = {"EHLO": ["250-mx.test", "garbage"], "QUIT": ["221 Bye"]}
    result, heard = await probe_dialogue("220 mx.test", script, module())
    assert_failed(result, Phase.CAPABILITIES, FailureReason.PROTOCOL)
    assert commands(heard, "smtp") == ["EHLO"]  # out of step: the probe only hangs up


def plaintext_login_module(
    protocol: str, monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> ModuleConfig:
    """A module that logs in and takes STARTTLS when offered (``require_tls: false``)."""
    monkeypatch.setenv("SCRIPTED_PROBE_PASSWORD", "secret")
    auth = {"username": "probe", "password_env": "SCRIPTED_PROBE_PASSWORD"}
    return module(protocol=protocol, tls="starttls", require_tls=False, auth=auth, **settings)


HEARD_WITHOUT_STARTTLS = {
    "smtp": ["EHLO", "QUIT"],
    "imap": ["a1 CAPABILITY", "a2 LOGOUT"],
    "pop3": ["CAPA", "QUIT"],
}


@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
async def test_login_is_withheld_when_starttls_is_missing(
    protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STARTTLS missing (or stripped on the way): the password is never sent in cleartext."""
    greeting, script, goodbye, answer = REFUSED_LOGIN[protocol]  # offers login, not STARTTLS
    mod = plaintext_login_module(protocol, monkeypatch)
    result, heard = await probe_dialogue(greeting, {**script, goodbye: answer}, mod)
    assert_failed(result, Phase.CAPABILITIES, FailureReason.STARTTLS_UNAVAILABLE)
    assert commands(heard, protocol) == HEARD_WITHOUT_STARTTLS[protocol]
    assert result.failure is not None and "allow_plaintext_auth" in result.failure.detail
    assert result.starttls_offered is False and result.plaintext_auth_offered is True


@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
async def test_cleartext_login_when_the_module_allows_it(
    protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    greeting, script, goodbye, answer = REFUSED_LOGIN[protocol]
    mod = plaintext_login_module(protocol, monkeypatch, allow_plaintext_auth=True)
    result, heard = await probe_dialogue(greeting, {**script, goodbye: answer}, mod)
    assert_failed(result, Phase.AUTH, FailureReason.AUTH)  # the login was sent, and refused
    assert commands(heard, protocol) == HEARD_AFTER_REFUSED_LOGIN[protocol]


async def test_pop3_asks_for_capabilities_again_after_stls(
    pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 2595 4: the list from before STLS is discarded. Here, as Dovecot does when it
    refuses plaintext logins, USER is offered only once TLS is up."""
    heard: list[str] = []
    context = server_context(pki.server_cert, pki.server_key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, "+OK ready")
        capabilities = ["STLS"]
        while line := (await reader.readline()).decode().strip():
            heard.append(line.split()[0])
            verb = line.split()[0]
            if verb == "CAPA":
                await send(writer, "+OK", *capabilities, ".")
            elif verb == "STLS":
                await send(writer, "+OK begin TLS")
                await upgrade(writer, context)
                capabilities = ["USER"]
            elif verb == "QUIT":
                await send(writer, "+OK bye")
                return
            else:
                await send(writer, "+OK")

    ca = {"ca_file": str(pki.ca_file), "server_name": "localhost"}
    mod = plaintext_login_module("pop3", monkeypatch, tls_config=ca)
    result = await probe(handler, mod)
    assert result.success, result.log
    assert heard == ["CAPA", "STLS", "CAPA", "USER", "PASS", "QUIT"]
    assert result.tls is not None and result.tls.verified


async def test_server_name_with_a_trailing_dot_verifies_and_is_sent_without_it(
    pki: PKI,
) -> None:
    seen: list[str | None] = []
    context = server_context(pki.server_cert, pki.server_key)
    context.sni_callback = lambda connection, name, ctx: seen.append(name)
    result = await probe(
        smtp_script(["220 hi"]), tls_module(pki, server_name="localhost."), tls=context
    )
    assert result.success, result.log
    assert result.tls is not None and result.tls.verified, result.tls.verify_error
    assert seen == ["localhost"]  # RFC 6066 3: SNI carries no trailing dot


@pytest.mark.parametrize("skip_verify", [False, True])
async def test_underscore_server_name_is_unverified_with_the_certificate_facts(
    pki: PKI, skip_verify: bool
) -> None:
    """No certificate verifier takes ``_`` in a DNS name: not verified, never an internal error."""
    seen: list[str | None] = []
    context = server_context(pki.server_cert, pki.server_key)
    context.sni_callback = lambda connection, name, ctx: seen.append(name)
    mod = tls_module(pki, server_name="mail_1.example.com", insecure_skip_verify=skip_verify)
    result = await probe(smtp_script(["220 hi"]), mod, tls=context)
    if skip_verify:
        assert result.success, result.log
    else:
        assert_failed(result, Phase.TLS_HANDSHAKE, FailureReason.TLS)
    facts = result.tls
    assert facts is not None and facts.verified is False
    assert facts.verify_error is not None and "'mail_1.example.com'" in facts.verify_error
    assert facts.earliest_not_after == pki.server_not_after.timestamp()
    assert facts.leaf_not_before == pki.server_not_before.timestamp()
    assert seen == ["mail_1.example.com"]


async def test_ehlo_name_from_the_smtp_section() -> None:
    result = await probe(smtp_script(["220 ready"]), module(smtp={"ehlo_name": "monitor.example"}))
    assert result.success, result.log
    assert any(line.endswith("C: EHLO monitor.example") for line in result.log), result.log


async def test_old_style_auth_keyword_counts_as_a_login_offered() -> None:
    """``AUTH=PLAIN LOGIN``, the form servers add for pre-RFC 4954 clients, offers a login."""
    result = await probe(smtp_script(["220 hi"], ["250-hi", "250 AUTH=PLAIN LOGIN"]), module())
    assert result.success, result.log
    assert result.plaintext_auth_offered is True


async def test_old_style_auth_keyword_is_logged_in_with(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = plaintext_login_module("smtp", monkeypatch, allow_plaintext_auth=True)
    script = {"EHLO": ["250-hi", "250 AUTH=LOGIN PLAIN"], "AUTH": ["235 2.7.0 Ok"]}
    result, heard = await probe_dialogue("220 hi", {**script, "QUIT": ["221 bye"]}, mod)
    assert result.success, result.log
    assert commands(heard, "smtp") == ["EHLO", "AUTH", "QUIT"]
    assert heard[1].startswith("AUTH PLAIN ")


def test_session_log_is_written_out_when_read() -> None:
    """Entries kept as they came read as the log's lines, the server's text escaped."""
    log = SessionLog()
    log.add(0.01234, Phase.BANNER, "S: 220 hi\r\x1b[2J")
    log.add(1.5, "tls_scan", "kept")
    assert list(log) == [
        "    12.3ms banner        S: 220 hi\\r\\x1b[2J",
        "  1500.0ms tls_scan      kept",
    ]
    assert len(log) == 2 and "kept" in "\n".join(log)


async def test_reply_sent_with_the_tls_handshake_is_read_to_the_end(pki: PKI) -> None:
    """More than the read-ahead limit, decrypted with the server's last handshake flight
    (TLS 1.2: the server's Finished comes last, so data can ride with it): it reaches the
    channel before the handshake returns, and reading must still go on after it."""
    context = server_context(pki.server_cert, pki.server_key)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    lines = [f"250-{'x' * 96}" for _ in range(MAX_REPLY_LINES - 2)] + ["250 done"]
    ehlo_reply = "".join(f"{line}\r\n" for line in lines).encode()
    assert len(ehlo_reply) > 2 * MAX_LINE_BYTES

    async def flight(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send(writer, "220 hi")
        await reader.readline()
        await send(writer, "250-hi", "250 STARTTLS")
        await reader.readline()
        await send(writer, "220 go ahead")
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_side=True)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                writer.write(outgoing.read())
                incoming.write(await reader.read(65536))
        tls.write(ehlo_reply)  # the reply to the EHLO still to come, in the Finished's segment
        writer.write(outgoing.read())
        heard = b""
        while b"QUIT" not in heard:
            received = await reader.read(65536)
            if not received:
                return
            incoming.write(received)
            with contextlib.suppress(ssl.SSLWantReadError):
                while True:  # a record at a time
                    heard += tls.read(65536)
        tls.write(b"221 bye\r\n")
        writer.write(outgoing.read())
        await writer.drain()

    mod = module(tls="starttls", tls_config={"ca_file": str(pki.ca_file)})
    result = await probe(flight, mod)
    assert result.success, result.log
    assert result.tls is not None and result.tls.version == "TLSv1.2"
