"""Round trips through Microsoft Graph: a scripted Graph over HTTPS on loopback
(:mod:`tests.realservers.graph`) with the token server of :mod:`tests.realservers.oauth`,
Graph to Graph and mixed with a real Postfix and Dovecot, and the real exporter serving a
Graph route's metrics.

Every test that runs a round trip also checks that mail which is not ours (someone
else's, and a forgery with our headers and a token this process never issued) is still
in the mailbox afterwards, and that nothing but our message was ever asked to be deleted.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mail_exporter.config.root import Config, parse_config
from mail_exporter.probes import ProbeMemory
from mail_exporter.roundtrip import graph as graph_module
from mail_exporter.roundtrip.message import ROUTE_HEADER, SENT_HEADER, TOKEN_HEADER
from mail_exporter.roundtrip.outcome import Outcome, Stage
from mail_exporter.roundtrip.runner import RoundTripRunner, RouteRunner
from tests.promtool import check_metrics
from tests.realservers.dovecot import Dovecot
from tests.realservers.graph import Failure, GraphServer, Stored
from tests.realservers.oauth import TokenServer
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix
from tests.served import get, served_exporter
from tests.test_roundtrip_real_servers import deliver_to, route_messages

USER = "probe@test.local"
CLIENT_ID = "graph-app"
SECRET = "graph-client-s3cret-6610"
BOUND = 60.0
"""Hang guard of each attempt: far above what any takes."""


@pytest.fixture
def tokens() -> Iterator[TokenServer]:
    with TokenServer() as server:
        server.add_client(CLIENT_ID, USER, SECRET)
        yield server


@pytest.fixture
def graph(pki: PKI, tokens: TokenServer) -> Iterator[GraphServer]:
    with GraphServer(pki, tokens) as server:
        yield server


def secret_file(directory: Path, secret: str = SECRET) -> Path:
    path = directory / "graph.secret"
    path.write_text(secret + "\n")
    return path


def graph_leg(
    graph: GraphServer, tokens: TokenServer, secret: Path, mailbox: str = USER, extra: str = ""
) -> str:
    """The keys of a Graph leg, in YAML flow style."""
    token = (
        f"{{client_credentials: {{token_url: '{tokens.token_url}', client_id: {CLIENT_ID}, "
        f"client_secret_file: {secret}, scope: 'https://graph.microsoft.com/.default'}}}}"
    )
    return (
        f"method: graph, mailbox: {mailbox}, base_url: '{graph.base_url}', "
        f"ca_file: {graph.pki.ca_file}, timeout: 2s, token: {token}{extra}"
    )


def graph_config(
    graph: GraphServer,
    tokens: TokenServer,
    secret: Path,
    name: str,
    timeout: str = "5s",
    receive_extra: str = "",
) -> Config:
    leg = graph_leg(graph, tokens, secret)
    return parse_config(
        f"""
roundtrip:
  - name: {name}
    timeout: {timeout}
    send: {{{leg}, to: {USER}}}
    receive: {{{leg}{receive_extra}}}
"""
    )


def runner_for(config: Config) -> RouteRunner:
    return RouteRunner(config.roundtrip[0], None, None, ProbeMemory())


async def run(runner: RouteRunner) -> Outcome:
    return await asyncio.wait_for(runner.run_once(), BOUND)


def others(graph: GraphServer, route: str) -> list[Stored]:
    """Mail that is not ours: someone else's, in the inbox and in junk, and a forgery
    with the route's headers and a token this process never issued."""
    plain = [("From", "someone@example.org"), ("Subject", "keep me")]
    forged = [(TOKEN_HEADER, str(uuid.uuid4())), (ROUTE_HEADER, route),
              (SENT_HEADER, f"{time.time():.6f}"), ("Subject", "forged")]  # fmt: skip
    return [
        graph.put(USER, plain),
        graph.put(USER, forged),
        graph.put(USER, plain, folder="junkemail"),
    ]


def assert_left_alone(graph: GraphServer, kept: list[Stored]) -> None:
    """Every message in ``kept`` is still there, and no DELETE ever named one of them."""
    present = {m.id for folder in ("inbox", "junkemail") for m in graph.messages(USER, folder)}
    assert {m.id for m in kept} <= present
    deleted = {path.rsplit("/", 1)[1] for _, path, _, _ in graph.logged("DELETE")}
    assert not deleted & {m.id for m in kept}


def sent_headers(graph: GraphServer) -> dict[str, str]:
    (send,) = graph.logged("POST")
    return {h["name"]: h["value"] for h in send[3]["message"]["internetMessageHeaders"]}


def failure_log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


# Success, and only our own message deleted.


async def test_graph_round_trip_deletes_only_its_own_message(
    graph: GraphServer, tokens: TokenServer, tmp_path: Path
) -> None:
    kept = others(graph, "m365")
    runner = runner_for(graph_config(graph, tokens, secret_file(tmp_path), "m365"))
    outcome = await run(runner)
    assert outcome.success, outcome
    assert outcome.duration is not None and outcome.duration > 0
    assert set(outcome.hops) == {"1"}  # the mailbox's Received stamp
    assert not outcome.cleanup_failed
    (send,) = graph.logged("POST")
    assert send[1] == f"/v1.0/users/{USER}/sendMail"
    body = send[3]
    assert body["saveToSentItems"] is False
    assert body["message"]["toRecipients"] == [{"emailAddress": {"address": USER}}]
    headers = sent_headers(graph)
    assert set(headers) == {TOKEN_HEADER, ROUTE_HEADER, SENT_HEADER, "X-Auto-Response-Suppress"}
    assert headers[ROUTE_HEADER] == "m365"
    looks = [query for _, path, query, _ in graph.logged("GET") if "$filter" in query]
    assert looks and all(q["$filter"].startswith("receivedDateTime ge ") for q in looks)
    assert all("internetMessageHeaders" in q["$select"].split(",") for q in looks)
    (deleted,) = graph.logged("DELETE")
    assert deleted[1].startswith(f"/v1.0/users/{USER}/messages/")
    assert_left_alone(graph, kept)
    assert graph.messages(USER) == kept[:2] and graph.messages(USER, "junkemail") == kept[2:]
    assert runner.stats.throttled == 0


async def test_junk_arrival_is_its_own_outcome_and_removed(
    graph: GraphServer, tokens: TokenServer, tmp_path: Path
) -> None:
    kept = others(graph, "m365-junk")
    graph.to_junk = True
    config = graph_config(graph, tokens, secret_file(tmp_path), "m365-junk",
                          receive_extra=", junk_folder: junkemail")  # fmt: skip
    runner = runner_for(config)
    outcome = await run(runner)
    assert outcome.junk and not outcome.success and outcome.failure is None
    assert runner.stats.junk == 1
    assert graph.messages(USER, "junkemail") == kept[2:]
    assert_left_alone(graph, kept)


async def test_paging_follows_next_link(
    graph: GraphServer, tokens: TokenServer, tmp_path: Path
) -> None:
    """Four messages arrive right after ours and Graph pages by three: ours is on the
    second page, reached only through @odata.nextLink."""
    graph.page_cap, graph.also_deliver = 3, 4
    runner = runner_for(graph_config(graph, tokens, secret_file(tmp_path), "paged"))
    outcome = await run(runner)
    assert outcome.success, outcome
    assert any("$skip" in query for _, _, query, _ in graph.logged("GET"))
    assert len(graph.messages(USER)) == 4  # the busy mailbox's, untouched


async def test_a_next_link_to_another_origin_is_not_followed(
    graph: GraphServer, tokens: TokenServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    graph.page_cap, graph.also_deliver, graph.next_link_host = 3, 4, "localhost"
    runner = runner_for(graph_config(graph, tokens, secret_file(tmp_path), "elsewhere"))
    outcome = await run(runner)
    assert outcome.failure is Stage.RECEIVE
    assert "@odata.nextLink leads off" in failure_log(caplog)
    assert not any("$skip" in query for _, _, query, _ in graph.logged("GET"))
    assert graph.logged("DELETE") == []


async def test_a_reload_keeps_an_unchanged_graph_route(
    graph: GraphServer, tokens: TokenServer, tmp_path: Path
) -> None:
    """Graph legs compare as module legs do: the same settings and secrets read again are
    the same route, which keeps running; a changed leg starts it afresh."""
    secret = secret_file(tmp_path)
    runners = RoundTripRunner(ProbeMemory())
    try:
        runners.apply(graph_config(graph, tokens, secret, "kept"))
        first = runners.routes["kept"]
        runners.apply(graph_config(graph, tokens, secret, "kept"))
        assert runners.routes["kept"] is first
        runners.apply(
            graph_config(graph, tokens, secret, "kept", receive_extra=", folder: junkemail")
        )
        assert runners.routes["kept"] is not first
    finally:
        runners.stop()


# Throttling.


async def test_throttling_is_waited_out_and_counted(
    graph: GraphServer, tokens: TokenServer, tmp_path: Path
) -> None:
    kept = others(graph, "throttled")
    graph.throttle("POST", retry_after=None)  # no Retry-After: the first pause, 1 s
    graph.throttle("GET", retry_after="1")
    graph.throttle("DELETE", retry_after="0")
    runner = runner_for(graph_config(graph, tokens, secret_file(tmp_path), "throttled"))
    outcome = await run(runner)
    assert outcome.success and not outcome.cleanup_failed, outcome
    assert runner.stats.throttled == 3
    assert len(graph.logged("POST")) == 2  # sent again once
    assert len(graph.logged("DELETE")) == 2
    assert_left_alone(graph, kept)


@pytest.mark.parametrize(
    ("method", "stage"),
    [("GET", Stage.RECEIVE), ("POST", Stage.SEND)],
)
async def test_throttling_past_the_route_timeout_fails_at_once(
    graph: GraphServer,
    tokens: TokenServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    method: str,
    stage: Stage,
) -> None:
    graph.throttle(method, retry_after="3600")
    runner = runner_for(graph_config(graph, tokens, secret_file(tmp_path), "slowed"))
    started = time.monotonic()
    outcome = await run(runner)
    assert outcome.failure is stage
    assert time.monotonic() - started < BOUND / 2  # no hour's wait
    said = failure_log(caplog)
    assert "throttled (HTTP 429 TooManyRequests: Too many requests.)" in said
    assert "asked to wait 3600s more" in said
    assert runner.stats.throttled == 1
    if method == "GET":  # the mailbox is opened first: nothing was sent
        assert graph.logged("POST") == []


async def test_retry_after_as_a_date(monkeypatch: pytest.MonkeyPatch) -> None:
    now = 1_800_000_000.0
    assert graph_module.retry_after({"Retry-After": "Fri, 15 Jan 2027 08:00:07 GMT"}, now) == 7.0
    assert graph_module.retry_after({"Retry-After": "Fri, 15 Jan 2027 07:59:00 GMT"}, now) == 0.0
    assert graph_module.retry_after({"Retry-After": "soon"}, now) is None
    assert graph_module.retry_after({}, now) is None


def test_a_line_break_in_a_header_value_starts_no_header() -> None:
    """Graph hands header values over as strings: one with a line break must not add a
    token (or any header) of its own to what is read."""
    token = str(uuid.uuid4())
    item = {"id": "AAMk-1", "internetMessageHeaders": [
        {"name": ROUTE_HEADER, "value": f"m365\r\n{TOKEN_HEADER}: {token}"},
        {"name": "Subject", "value": f"x\n{TOKEN_HEADER}: {token}"},
    ]}  # fmt: skip
    assert graph_module._tagged(item) is None  # no token of its own: not a tagged message
    item["internetMessageHeaders"].append({"name": TOKEN_HEADER.lower(), "value": "t-1"})
    tagged = graph_module._tagged(item)
    assert tagged is not None
    ident, message = tagged
    assert (ident, message.token) == ("AAMk-1", "t-1")
    assert message.route == f"m365 {TOKEN_HEADER}: {token}"


# Errors: Graph's code and message in the detail, counted at the right stage.


@pytest.mark.parametrize(
    ("method", "failure", "stage", "said"),
    [
        ("POST", Failure(400, "ErrorInvalidRecipients", "At least one recipient is not valid."),
         Stage.SEND, "sendMail: HTTP 400 ErrorInvalidRecipients: At least one recipient is not valid."),
        ("POST", Failure(403, "ErrorAccessDenied", "Access is denied."),
         Stage.SEND_AUTH, "sendMail: HTTP 403 ErrorAccessDenied: Access is denied."),
        ("GET", Failure(403, "ErrorAccessDenied", "Access is denied.\r\nX-Forged: \x1b[31mred"),
         Stage.RECEIVE_AUTH, "messages: HTTP 403 ErrorAccessDenied: Access is denied.\\r\\nX-Forged: \\x1b[31mred"),
        ("GET", Failure(500, kind="redirect"),
         Stage.RECEIVE, "messages: HTTP 302 (redirects are not followed)"),
        ("GET", Failure(200, kind="oversize"), Stage.RECEIVE, "messages: answer over 4 MiB"),
        ("GET", Failure(200, kind="deep"), Stage.RECEIVE, "messages: the answer is not a JSON object"),
        ("GET", Failure(0, kind="hang"), Stage.RECEIVE, "messages: no answer within 2s"),
    ],
    ids=["bad-request", "send-denied", "read-denied", "redirect", "oversize", "deep", "hang"],
)  # fmt: skip
async def test_errors_show_graph_code_and_message(
    graph: GraphServer,
    tokens: TokenServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    method: str,
    failure: Failure,
    stage: Stage,
    said: str,
) -> None:
    kept = others(graph, "refused")
    graph.fail(method, failure)
    runner = runner_for(graph_config(graph, tokens, secret_file(tmp_path), "refused"))
    outcome = await run(runner)
    assert outcome.failure is stage
    assert said in failure_log(caplog)
    assert not any("/elsewhere" in path for _, path, _, _ in graph.requests)
    assert_left_alone(graph, kept)


async def test_a_failed_delete_is_a_cleanup_failure_and_others_stay(
    graph: GraphServer, tokens: TokenServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kept = others(graph, "stuck")
    graph.fail("DELETE", Failure(500, "ErrorInternalServerError", "Try again later."))
    runner = runner_for(graph_config(graph, tokens, secret_file(tmp_path), "stuck"))
    outcome = await run(runner)
    assert outcome.success and outcome.cleanup_failed
    assert "delete: HTTP 500 ErrorInternalServerError: Try again later." in failure_log(caplog)
    ours = [m for m in graph.messages(USER) if m.header(ROUTE_HEADER) == "stuck"]
    assert len(ours) == 2  # ours, left for the next cleanup, and the forgery
    again = await run(runner)  # the next attempt removes both of its own, and only those
    assert again.success and not again.cleanup_failed
    assert graph.messages(USER) == kept[:2]
    assert_left_alone(graph, kept)


async def test_a_refused_token_sends_nothing_and_shows_no_secret(
    graph: GraphServer, tokens: TokenServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runner = runner_for(graph_config(graph, tokens, secret_file(tmp_path, "wrong"), "no-token"))
    outcome = await run(runner)
    assert outcome.failure is Stage.RECEIVE_AUTH
    said = failure_log(caplog)
    assert "token: " in said and "invalid_client" in said
    assert "wrong" not in said.replace("wrong-", "")  # the token server quoted it back
    assert graph.requests == []


async def test_a_token_graph_does_not_take_is_receive_auth(
    graph: GraphServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = tmp_path / "access.token"
    token.write_text("not-a-token-graph-knows\n")
    leg = (f"method: graph, mailbox: {USER}, base_url: '{graph.base_url}', "
           f"ca_file: {graph.pki.ca_file}, token: {{token_file: {token}}}")  # fmt: skip
    config = parse_config(
        f"roundtrip:\n  - name: bogus\n    send: {{{leg}, to: {USER}}}\n    receive: {{{leg}}}\n"
    )
    outcome = await run(runner_for(config))
    assert outcome.failure is Stage.RECEIVE_AUTH
    said = failure_log(caplog)
    assert "HTTP 401 InvalidAuthenticationToken: Access token is empty or invalid." in said
    assert "not-a-token-graph-knows" not in said


async def test_an_untrusted_certificate_stops_before_the_token_is_sent(
    graph: GraphServer, tokens: TokenServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    leg = graph_leg(graph, tokens, secret_file(tmp_path)).replace(str(graph.pki.ca_file), "")
    leg = leg.replace("ca_file: , ", "")  # the system's CAs, which do not know the test CA
    config = parse_config(
        f"roundtrip:\n  - name: untrusted\n    send: {{{leg}, to: {USER}}}\n"
        f"    receive: {{{leg}}}\n"
    )
    outcome = await run(runner_for(config))
    assert outcome.failure is Stage.RECEIVE
    assert "CERTIFICATE_VERIFY_FAILED" in failure_log(caplog)
    assert graph.requests == []


# With real servers: Postfix into a Graph mailbox, and Graph out to Dovecot over IMAP.


def password_module(pki: PKI, protocol: str, tls: str) -> str:
    return (
        f"{{protocol: {protocol}, tls: {tls}, timeout: 5s, tls_config: {{ca_file: {pki.ca_file}}}, "
        f"auth: {{username: {USER}, password_env: GRAPH_RT_PASSWORD}}}}"
    )


@pytest.mark.integration
async def test_postfix_submission_into_a_graph_mailbox(
    private_postfix: Postfix,
    dovecot: Dovecot,
    pki: PKI,
    graph: GraphServer,
    tokens: TokenServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Real Postfix takes the message on submission (login through Dovecot) and hands it
    over by LMTP to the scripted Graph's mailbox, which the route reads with Graph."""
    monkeypatch.setenv("GRAPH_RT_PASSWORD", dovecot.password)
    deliver_to(private_postfix, graph.lmtp_port)
    kept = others(graph, "onprem-to-m365")
    leg = graph_leg(graph, tokens, secret_file(tmp_path))
    config = parse_config(
        f"""
modules:
  submission: {password_module(pki, "smtp", "starttls")}
roundtrip:
  - name: onprem-to-m365
    timeout: 20s
    send: {{address: "127.0.0.1:{private_postfix.submission_port}", module: submission, from: {USER}, to: {USER}}}
    receive: {{{leg}}}
"""
    )
    runner = RouteRunner(config.roundtrip[0], config.modules["submission"], None, ProbeMemory())
    outcome = await run(runner)
    assert outcome.success, outcome
    assert set(outcome.hops) == {"1", "2"}  # Postfix, then the mailbox's LMTP
    assert_left_alone(graph, kept)
    assert [m.header(ROUTE_HEADER) for m in graph.messages(USER)] == [None, "onprem-to-m365"]


@pytest.mark.integration
async def test_graph_send_out_to_dovecot_over_imap(
    postfix: Postfix,
    dovecot: Dovecot,
    pki: PKI,
    tokens: TokenServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The route sends as a Graph mailbox to an on-premises address: the scripted Graph
    relays it to the real Postfix, which delivers to Dovecot, read over IMAPS."""
    monkeypatch.setenv("GRAPH_RT_PASSWORD", dovecot.password)
    sender = "sender@graph.test"
    relay = ("127.0.0.1", postfix.smtp_port)
    with GraphServer(pki, tokens, users=(sender,), relay=relay) as graph:
        leg = graph_leg(graph, tokens, secret_file(tmp_path), mailbox=sender)
        config = parse_config(
            f"""
modules:
  imaps: {password_module(pki, "imap", "implicit")}
roundtrip:
  - name: m365-to-onprem
    timeout: 20s
    send: {{{leg}, to: {USER}}}
    receive: {{address: "127.0.0.1:{dovecot.imaps_port}", module: imaps}}
"""
        )
        runner = RouteRunner(config.roundtrip[0], None, config.modules["imaps"], ProbeMemory())
        outcome = await run(runner)
    assert outcome.success, outcome
    assert set(outcome.hops) == {"1", "2", "3"}  # Graph's relay, Postfix, Dovecot's LMTP
    assert route_messages(dovecot, "m365-to-onprem") == []


# The real exporter, serving a Graph route.


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.integration
async def test_exporter_serves_a_graph_route(
    graph: GraphServer, tokens: TokenServer, tmp_path: Path
) -> None:
    graph.throttle("GET", retry_after="0")
    leg = graph_leg(graph, tokens, secret_file(tmp_path))
    config = tmp_path / "config.yml"
    config.write_text(
        f"roundtrip:\n  - name: m365\n    interval: 2s\n    timeout: 10s\n"
        f"    send: {{{leg}, to: {USER}}}\n    receive: {{{leg}, junk_folder: junkemail}}\n"
    )
    with served_exporter(tmp_path, config, "--log.level", "debug") as served:
        deadline = time.monotonic() + BOUND
        found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        while time.monotonic() < deadline:
            text = (await asyncio.to_thread(get, served.port, "/metrics")).body
            found = samples(text)
            if found.get(("mail_roundtrip_success", (("route", "m365"),))) is not None:
                break
            await asyncio.sleep(0.2)
        shown = (await asyncio.to_thread(get, served.port, "/config")).body
        log = served.stderr()
    route = (("route", "m365"),)
    assert found[("mail_roundtrip_success", route)] == 1.0
    assert found[("mail_roundtrip_throttled_total", route)] == 1.0
    assert found[("mail_roundtrip_failures_total", (*route, ("stage", "send_auth")))] == 0.0
    assert found[("mail_oauth2_token_fetches_total", (("source", "m365/send"),))] == 1.0
    await check_metrics(text)
    assert "method: graph" in shown and "client_secret_file" in shown
    for secret in [SECRET, *tokens.issued]:
        assert secret not in text and secret not in shown and secret not in log
