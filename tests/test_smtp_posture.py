"""SMTP security checks against scripted servers: relay and enumeration verdicts, the
commands sent (never DATA), servers that refuse, hang or hang up mid-check, the metrics
and the report."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest

from mail_exporter.config.probes import ModuleConfig
from mail_exporter.exposition import sample_lines
from mail_exporter.metrics import probe_families
from mail_exporter.probes import Phase, ProbeResult
from mail_exporter.probes.smtp_posture import SMTPPosture
from mail_exporter.report import render_report
from tests.test_probes_scripted import Answer, dialogue, module

PASSWORD_VARIABLE = "SCRIPTED_POSTURE_PASSWORD"
RELAY_CHECK = {"mail_from": "a@outside.example", "rcpt_to": "b@elsewhere.example"}
ENUMERATION_CHECK = {"address": "postmaster@example.org"}


def answers(**by_verb: str | list[str]) -> Answer:
    """Replies by verb: one for every time, or one for each time in turn (the last one
    repeats); a reply's lines are separated by newlines. EHLO, RSET and QUIT answer as a
    server would unless given; a verb not given gets no answer at all."""
    script: dict[str, list[str]] = {
        "EHLO": ["250-mx.test\n250 PIPELINING"],
        "RSET": ["250 2.0.0 Ok"],
        "QUIT": ["221 2.0.0 Bye"],
    }
    script.update({verb: [r] if isinstance(r, str) else r for verb, r in by_verb.items()})
    counts: dict[str, int] = {}

    def answer(line: str) -> Sequence[str]:
        verb = line.split(" ", 1)[0].upper()
        replies = script.get(verb)
        if not replies:
            return []
        counts[verb] = counts.get(verb, 0) + 1
        return replies[min(counts[verb], len(replies)) - 1].split("\n")

    return answer


def verbs(heard: list[str]) -> list[str]:
    return [line.split(" ", 1)[0].upper() for line in heard]


def posture_of(result: ProbeResult) -> SMTPPosture:
    assert result.smtp_posture is not None, result.log
    return result.smtp_posture


def exposition(result: ProbeResult) -> str:
    """What /probe shows for the result."""
    families = probe_families(("protocol",), ["smtp"], result, {}, None)
    return "".join(sample_lines(family) for family in families)


def login_module(monkeypatch: pytest.MonkeyPatch, **settings: Any) -> ModuleConfig:
    monkeypatch.setenv(PASSWORD_VARIABLE, "secret")
    auth = {"username": "probe", "password_env": PASSWORD_VARIABLE}
    return module(auth=auth, allow_plaintext_auth=True, **settings)


def relay_module(**relay: Any) -> ModuleConfig:
    return module(smtp={"relay_check": {**RELAY_CHECK, **relay}})


@pytest.mark.parametrize(
    ("rcpt", "open_relay"),
    [
        ("250 2.1.5 Ok", True),
        ("251 2.1.5 User not local; will forward", True),
        ("454 4.7.1 <b@elsewhere.example>: Relay access denied", False),
        ("550 5.7.1 Relaying denied", False),
    ],
)
async def test_relay_verdict_from_the_answer_to_rcpt(rcpt: str, open_relay: bool) -> None:
    script = answers(MAIL="250 2.1.0 Ok", RCPT=rcpt)
    result, heard = await dialogue(script, relay_module())
    assert result.success, result.log
    assert heard == [
        heard[0],
        "MAIL FROM:<a@outside.example>",
        "RCPT TO:<b@elsewhere.example>",
        "RSET",
        "QUIT",
    ]
    relay = posture_of(result).relay
    assert relay is not None and (relay.after_login, relay.allowed) == (False, open_relay)
    text = exposition(result)
    assert f'mail_smtp_open_relay{{protocol="smtp"}} {float(open_relay)}' in text
    assert "mail_smtp_auth_relay_allowed" not in text
    assert "mail_smtp_user_enumeration" not in text
    assert Phase.POSTURE in result.phases
    expected = "Open relay:           " + ("yes" if open_relay else "no")
    assert expected in render_report("mx.test:25", "m", result).splitlines()


async def test_refused_mail_from_gives_no_relay_verdict() -> None:
    script = answers(MAIL="553 5.7.1 Sender address rejected")
    result, heard = await dialogue(script, relay_module())
    assert result.success, result.log
    assert verbs(heard) == ["EHLO", "MAIL", "QUIT"]  # no RCPT without a transaction
    relay = posture_of(result).relay
    assert relay is not None and relay.allowed is None
    assert "mail_smtp_open_relay" not in exposition(result)
    assert any("MAIL FROM answered 553" in line for line in result.log), result.log
    report = render_report("mx.test:25", "m", result).splitlines()
    assert "Open relay:           unknown (see the session log)" in report


async def test_relay_after_the_login(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = login_module(monkeypatch, smtp={"relay_check": {**RELAY_CHECK, "authenticated": True}})
    script = answers(
        EHLO="250-mx.test\n250 AUTH PLAIN", AUTH="235 2.7.0 Ok", MAIL="250 Ok", RCPT="250 Ok"
    )
    result, heard = await dialogue(script, mod)
    assert result.success, result.log
    assert verbs(heard) == ["EHLO", "AUTH", "MAIL", "RCPT", "RSET", "QUIT"]
    text = exposition(result)
    assert 'mail_smtp_auth_relay_allowed{protocol="smtp"} 1.0' in text
    assert "mail_smtp_open_relay" not in text
    assert "Relay after login:    yes" in render_report("mx.test:587", "m", result)


async def test_no_checks_no_commands_and_no_series() -> None:
    result, heard = await dialogue(answers(), module())
    assert result.success, result.log
    assert verbs(heard) == ["EHLO", "QUIT"]
    assert result.smtp_posture is None
    assert Phase.POSTURE not in result.phases
    assert "mail_smtp_" not in exposition(result)


async def test_hang_after_mail_from_ends_within_the_budget() -> None:
    """A server that never answers RCPT: the checks give up in time, the probe passes."""
    started = time.monotonic()
    result, heard = await dialogue(answers(MAIL="250 Ok"), relay_module(), budget=2.0)
    assert time.monotonic() - started < 10.0  # hang guard: the budget is 2 s
    assert result.success, result.log
    assert result.duration_seconds <= 2.0
    assert verbs(heard) == ["EHLO", "MAIL", "RCPT"]  # no QUIT on a conversation out of step
    relay = posture_of(result).relay
    assert relay is not None and relay.allowed is None
    assert "mail_smtp_open_relay" not in exposition(result)
    assert any("security checks stopped: no answer within" in line for line in result.log)


@pytest.mark.parametrize("verb", ["MAIL", "RCPT"])
async def test_connection_lost_mid_check_leaves_the_verdict_alone(verb: str) -> None:
    script = answers(MAIL="250 Ok", RCPT="250 Ok")
    result, heard = await dialogue(script, relay_module(), hang_up_after=verb)
    assert result.success, result.log
    assert result.failure is None
    assert "QUIT" not in verbs(heard)
    assert "mail_smtp_open_relay" not in exposition(result)
    assert any("security checks stopped" in line for line in result.log), result.log


async def test_garbled_answer_mid_check_leaves_the_verdict_alone() -> None:
    result, _ = await dialogue(answers(MAIL="250 Ok", RCPT="hello?"), relay_module())
    assert result.success, result.log
    assert "mail_smtp_open_relay" not in exposition(result)


def enumeration_module() -> ModuleConfig:
    return module(smtp={"enumeration_check": ENUMERATION_CHECK})


@pytest.mark.parametrize(
    ("vrfy", "enumerates", "sent"),
    [
        # Postfix with VRFY on: 252 for a user it knows, 550 for one it does not.
        (["252 2.0.0 postmaster@example.org", "550 5.1.1 User unknown"], True, 2),
        (["250 Postmaster <postmaster@example.org>", "550 5.1.1 User unknown"], True, 2),
        (["250 <postmaster@example.org>", "252 2.5.2 Cannot VRFY user"], True, 2),
        # The same answer for everyone tells no one apart.
        (
            ["252 2.5.2 Cannot VRFY user; try RCPT", "252 2.5.2 Cannot VRFY user; try RCPT"],
            False,
            2,
        ),
        (["502 5.5.1 VRFY command is disabled"], False, 1),
        (["550 5.1.1 User unknown"], False, 1),
        (["450 4.1.1 Try again later"], None, 1),
        (["252 2.0.0 ok", "450 4.3.0 Try again later"], None, 2),
    ],
)
async def test_enumeration_verdict(vrfy: list[str], enumerates: bool | None, sent: int) -> None:
    script = answers(VRFY=vrfy, EXPN="500 5.5.2 Error: command not recognized")
    result, heard = await dialogue(script, enumeration_module())
    assert result.success, result.log
    vrfys = [line for line in heard if line.startswith("VRFY ")]
    assert vrfys[0] == "VRFY postmaster@example.org"
    assert len(vrfys) == sent
    if sent == 2:
        assert vrfys[1].startswith("VRFY no-such-user-") and vrfys[1].endswith("@example.org")
    assert heard[-2:] == ["EXPN postmaster@example.org", "QUIT"]
    assert posture_of(result).enumeration == {"VRFY": enumerates, "EXPN": False}
    text = exposition(result)
    expected = 'mail_smtp_user_enumeration{protocol="smtp",command="VRFY"}'
    if enumerates is None:
        assert expected not in text
    else:
        assert f"{expected} {float(enumerates)}" in text
    assert 'mail_smtp_user_enumeration{protocol="smtp",command="EXPN"} 0.0' in text
    report = render_report("mx.test:25", "m", result).splitlines()
    shown = (
        "unknown (see the session log)" if enumerates is None else ("yes" if enumerates else "no")
    )
    assert f"VRFY enumerates:      {shown}" in report
    assert "EXPN enumerates:      no" in report


async def test_expn_that_lists_a_known_address_enumerates() -> None:
    expn = ["250-Postmaster <root@example.org>\n250 <admin@example.org>", "550 5.1.1 no list"]
    script = answers(VRFY="502 5.5.1 VRFY disabled", EXPN=expn)
    result, _ = await dialogue(script, enumeration_module())
    assert posture_of(result).enumeration == {"VRFY": False, "EXPN": True}


async def test_relay_and_enumeration_together_never_send_data() -> None:
    mod = module(smtp={"relay_check": RELAY_CHECK, "enumeration_check": ENUMERATION_CHECK})
    script = answers(MAIL="250 Ok", RCPT="250 Ok", VRFY="502 off", EXPN="502 off", DATA="354 go")
    result, heard = await dialogue(script, mod)
    assert result.success, result.log
    assert verbs(heard) == ["EHLO", "MAIL", "RCPT", "RSET", "VRFY", "EXPN", "QUIT"]
    text = exposition(result)
    assert 'mail_smtp_open_relay{protocol="smtp"} 1.0' in text
    assert 'mail_smtp_user_enumeration{protocol="smtp",command="VRFY"} 0.0' in text


async def test_checks_the_session_never_reached_read_as_unanswered() -> None:
    mod = module(smtp={"relay_check": RELAY_CHECK, "enumeration_check": ENUMERATION_CHECK})
    result, _ = await dialogue(answers(MAIL="250 Ok"), mod, hang_up_after="MAIL")
    assert result.success, result.log
    assert posture_of(result).enumeration == {"VRFY": None, "EXPN": None}
    assert "mail_smtp_" not in exposition(result)
    report = render_report("mx.test:25", "m", result).splitlines()
    assert "VRFY enumerates:      unknown (see the session log)" in report
