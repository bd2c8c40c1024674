"""Discovery on a busy, messy host, and against a local user who listens on a port the
configs name: what peers say and what configs hold never breaks the printed config,
the tools and the peeks stay within their bounds, and a config the exporter would refuse
is never what discovery hands it.

The servers' configs are read by the real ``postconf`` (main.cf and master.cf of the
test's own), or by a fake one on the PATH where the test needs a tool that misbehaves
(hangs, floods); peers are scripted servers on loopback (:mod:`tests.scripted`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mail_exporter.discovery import DiscoveryOptions, _accepted, discover_config
from mail_exporter.discovery.facts import Port
from mail_exporter.discovery.listeners import MAX_PEEKS, PEEKS_AT_ONCE, peek_listeners
from mail_exporter.discovery.options import MAX_OUTPUT_BYTES, SERVER_SECONDS
from mail_exporter.discovery.plan import CollectorChoice, _target_name
from tests.scripted import Handler, scripted_server, smtp_script
from tests.served import get, served_exporter
from tests.test_discovery import checked, discover

pytestmark = pytest.mark.integration

# What a hostile peer or config would like to see as YAML: each a line of its own after a
# line break YAML knows (LF, CR, NEL, U+2028, U+2029), or a control character that makes
# the whole document unreadable.
INJECTED = "collectors: {}"
BREAKS = ("\n", "\r", "\x85", "\u2028", "\u2029")


def _hostile_lines(breaks: tuple[str, ...] = BREAKS) -> list[str]:
    return [f"220-{b}{INJECTED}{b}# x: 1 \x00\x07\x1b[2J\ufeff" for b in breaks]


async def _injecting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A banner of line breaks and markup, then EHLO the same, then an unknown reply."""
    for line in _hostile_lines():
        writer.write(line.encode() + b"\r\n")
    writer.write(b"220 <script>alert(1)</script> ready\r\n")
    await writer.drain()
    await reader.readline()
    writer.write("".join(f"250-{line[4:]}\r\n" for line in _hostile_lines()).encode())
    writer.write(b"250 8BITMIME\r\n")
    await writer.drain()
    await reader.readline()
    writer.write("999 \u2028targets: [{name: evil}]\r\n".encode())
    await writer.drain()
    await asyncio.sleep(60)


async def _binary(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(bytes(range(256)) * 64)
    await writer.drain()
    await asyncio.sleep(60)


async def _huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for _ in range(400):
        writer.write(b"220-" + b"#: x\xe2\x80\xa8" * 1500 + b"\r\n")
    await writer.drain()
    await asyncio.sleep(60)


async def _endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        writer.write(b"220 \xe2\x80\xa8" * 4096)
        await writer.drain()
        await asyncio.sleep(0.01)


async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        writer.write(b"2")
        await writer.drain()
        await asyncio.sleep(0.2)


async def _stalled_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)  # the ClientHello arrives; the ServerHello never does
    await asyncio.sleep(60)


HOSTILE: dict[str, tuple[Handler, bool]] = {  # name: (script, implicit TLS in master.cf)
    "injecting": (_injecting, False),
    "answering": (  # SMTP as a probe takes it: the lines hold no LF or CR
        smtp_script(
            [*_hostile_lines(BREAKS[2:]), "220 ok"],
            [*(f"250-{line[4:]}" for line in _hostile_lines(BREAKS[2:])), "250 ok"],
        ),
        False,
    ),
    "binary": (_binary, False),
    "huge": (_huge, False),
    "endless": (_endless, False),
    "trickle": (_trickle, False),
    "stalled": (_stalled_handshake, True),
}


@contextlib.contextmanager
def hostile_servers(handlers: dict[str, Handler]) -> Iterator[dict[str, int]]:
    """Each handler served on a loopback port of its own, in a thread's event loop."""
    ports: dict[str, int] = {}
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        async with contextlib.AsyncExitStack() as stack:
            for name, handler in handlers.items():
                address = await stack.enter_async_context(scripted_server(handler))
                ports[name] = int(address.rpartition(":")[2])
            ready.set()
            await stop.wait()
        connections = asyncio.all_tasks() - {asyncio.current_task()}
        for connection in connections:
            connection.cancel()
        await asyncio.gather(*connections, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    try:
        yield ports
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def hostile_certificate(path: Path) -> None:
    """A self-signed certificate whose subject tries to end the comment it is quoted in."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"x{b}{INJECTED}\x1b")
                      for b in BREAKS])  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=9))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def assert_safe(text: str) -> None:
    """Valid YAML of the four sections only, every character printable, nothing injected."""
    assert set(yaml.safe_load(text)) == {"global", "modules", "targets", "collectors"}
    for line in text.split("\n"):
        assert line.isprintable(), repr(line)
        assert INJECTED not in line or line.lstrip().startswith("#"), line
    assert len(text) < 200_000


def test_hostile_peers_and_odd_config_values_stay_out_of_the_yaml(tmp_path: Path) -> None:
    """A Postfix whose master.cf names ports where hostile scripts listen, and whose
    main.cf holds paths with spaces, quotes, ``#`` and every YAML line break, a queue
    that is a symlink elsewhere and a certificate whose subject is an injection: the
    printed config is check-config clean, quotes all that escaped, and watches the
    paths as they are."""
    root = tmp_path / "root"
    config = root / "etc" / "postfix"
    config.mkdir(parents=True)
    odd = tmp_path / "odd dir #1 'q' \"d\""
    logs = odd / f"a b#c{''.join(BREAKS[2:])}.log"  # no LF or CR: main.cf is line based
    logs.parent.mkdir()
    logs.write_text("")
    spool = tmp_path / "elsewhere" / "spool"
    spool.mkdir(parents=True)
    queue = odd / "queue"
    queue.symlink_to(spool)
    certificate = tmp_path / "cert.pem"
    hostile_certificate(certificate)
    (config / "main.cf").write_text(
        f"queue_directory = {queue}\nmaillog_file = {logs}\nsmtpd_tls_cert_file = {certificate}\n"
    )
    with hostile_servers({name: script for name, (script, _) in HOSTILE.items()}) as ports:
        (config / "master.cf").write_text("".join(
            f"127.0.0.1:{ports[name]} inet n - n - - smtpd\n"
            + ("  -o smtpd_tls_wrappermode=yes\n" if implicit else "")
            for name, (_, implicit) in HOSTILE.items()
        ))  # fmt: skip
        started = time.monotonic()
        text, _ = discover("--discovery.root", str(root))
        elapsed = time.monotonic() - started
    assert_safe(text)
    loaded = checked(text, tmp_path)
    (source,) = loaded.collectors.section("logs").sources  # type: ignore[attr-defined]
    assert source.path == logs
    assert str(queue) in map(str, loaded.collectors.section("host").mail_paths)  # type: ignore[attr-defined]
    assert loaded.collectors.section("certificates").files == [certificate]  # type: ignore[attr-defined]
    # Only the one that answered as SMTP does became a target; each other is noted.
    assert [t.address for t in loaded.targets] == [f"127.0.0.1:{ports['answering']}"]
    said = re.sub(r"\n#? *# +", " ", text)
    for name in HOSTILE.keys() - {"answering"}:
        assert f"port {ports[name]} (master.cf service" in said, name
    assert "\\u2028" in said and "\\x1b" in said  # quoted, escaped
    # Two peek limits (STARTTLS, then implicit TLS) and the tools: the hang guard only.
    assert elapsed < 40, elapsed


def fake_tool(directory: Path, name: str, python: str) -> None:
    """An executable ``name`` in ``directory`` running the Python code ``python``."""
    tool = directory / name
    tool.write_text(f"#!{sys.executable}\nimport sys, time\n{python}\n")
    tool.chmod(0o755)


def test_a_postconf_that_floods_or_hangs_is_cut_off(tmp_path: Path) -> None:
    """A postconf that prints without end is cut at the output bound (not read to its
    end), and one that hangs for each of many postmulti instances costs the Postfix
    discoverer its time bound in all, not the command limit once per instance."""
    tools = tmp_path / "bin"
    tools.mkdir()
    root = tmp_path / "root"
    (root / "etc" / "postfix").mkdir(parents=True)
    (root / "etc" / "postfix" / "main.cf").write_text("")
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"}
    fake_tool(tools, "postconf", f"sys.stdout.write('x' * {MAX_OUTPUT_BYTES * 6})")
    text, _ = discover("--discovery.root", str(root), env=env)
    assert f"more than {MAX_OUTPUT_BYTES} bytes of output" in re.sub(r"\n#? *# +", " ", text)

    instances = [tmp_path / f"instance-{n}" for n in range(12)]
    fake_tool(
        tools,
        "postconf",
        f"""
if "{root}" not in sys.argv[2]:
    time.sleep(120)
elif "-h" in sys.argv:
    names = sys.argv[sys.argv.index("-h") + 1:]
    values = {{"queue_directory": "{tmp_path}/queue",
              "multi_instance_directories": "{' '.join(map(str, instances))}"}}
    print("\\n".join(values.get(name, "") for name in names))
""",
    )
    started = time.monotonic()
    text, _ = discover("--discovery.root", str(root), env=env)
    elapsed = time.monotonic() - started
    said = re.sub(r"\n#? *# +", " ", text)
    assert "Postfix instance postfix (" in said
    assert said.count("no answer within") >= 1 and "the time for this server ran out" in said
    # One instance after another would take 12 times the command limit (60 s).
    assert elapsed < SERVER_SECONDS + 20, elapsed


def test_many_listening_ports_are_peeked_a_bounded_number_at_a_time() -> None:
    """A master.cf of many services, all listening and none answering: at most
    PEEKS_AT_ONCE connections at once, MAX_PEEKS ports peeked, the rest listed."""
    open_now = most = 0

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            while await reader.read(4096):  # silent until the peek gives up and closes
                pass
        finally:
            open_now -= 1

    count = MAX_PEEKS + 16
    with hostile_servers({str(n): counting for n in range(count)}) as ports:
        named = [Port(port, "smtp", "smtp", f"s{port}", "a test") for port in ports.values()]
        peeks, silent, unpeeked = peek_listeners(named, 0.5)
    assert silent == [] and len(peeks) == MAX_PEEKS and len(unpeeked) == count - MAX_PEEKS
    assert all(peek.tls is None for peek in peeks)
    assert 0 < most <= PEEKS_AT_ONCE, most


def test_values_that_clash_still_make_a_config_that_loads(tmp_path: Path) -> None:
    """Real postconf and doveconf on configs that name one log file from several servers
    (a shared maillog_file, a maillog_file that is syslog's mail.log, Dovecot's log_path),
    one instance name twice and one instance directory three times: each file is one
    source, each instance one name, and check-config takes the printed config."""
    root = tmp_path / "root"
    primary, out, other = root / "etc" / "postfix", tmp_path / "out", tmp_path / "other"
    mail_log, shared = root / "var" / "log" / "mail.log", tmp_path / "shared.log"
    mail_log.parent.mkdir(parents=True)
    mail_log.write_text("")
    shared.write_text("")
    for directory, main in (
        (primary, f"maillog_file = {mail_log}\n"
                  f"multi_instance_directories = {out} {out}, {primary} {other}\n"),
        (out, "multi_instance_name = postfix-out\n"),
        (other, f"multi_instance_name = postfix-out\nmaillog_file = {shared}\n"),
    ):  # fmt: skip
        directory.mkdir(parents=True)
        (directory / "main.cf").write_text(
            f"queue_directory = {tmp_path}/q-{directory.name}\n{main}"
        )
        (directory / "master.cf").write_text("")
    dovecot = root / "etc" / "dovecot" / "dovecot.conf"
    dovecot.parent.mkdir(parents=True)
    dovecot.write_text(
        f"base_dir = {tmp_path}/run\nlog_path = {shared}\nprotocols = imap\nssl = no\n"
    )

    text, _ = discover("--discovery.root", str(root))
    config = checked(text, tmp_path)
    sources = [s.path for s in config.collectors.section("logs").sources]  # type: ignore[attr-defined]
    assert sorted(sources) == sorted([mail_log, shared])
    instances = config.collectors.section("postfix_queue").instances  # type: ignore[attr-defined]
    assert [(i.name, i.config_directory) for i in instances] == [
        ("postfix", primary), ("postfix-out", out), ("postfix-out-2", other),
    ]  # fmt: skip


def test_a_section_the_exporter_refuses_is_commented_out_and_a_failing_discoverer_noted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safety nets behind the discoverers: whatever they did not foresee."""
    twice = CollectorChoice("logs", {"sources": [{"path": "/a.log"}, {"path": "/a.log"}]}, [])
    assert _accepted(twice).blocked.startswith("the exporter refuses it: collectors.logs")
    fine = CollectorChoice("logs", {"sources": [{"path": "/a.log"}]}, [])
    assert _accepted(fine) == fine

    def failing(options: DiscoveryOptions) -> tuple[list[object], list[str]]:
        raise ValueError("a value nobody foresaw")

    monkeypatch.setattr("mail_exporter.discovery.discover_dovecot", failing)
    found = discover_config(DiscoveryOptions(root=tmp_path, peek_timeout=1))
    assert "failing: failed, left out: ValueError('a value nobody foresaw')" in found.text


def test_a_burst_of_reloads_while_discovery_is_slow_costs_one_more(tmp_path: Path) -> None:
    """Six SIGHUPs while a slow postconf keeps discovery busy: the running reload and one
    after it read the host, not one per signal, and the exporter answers meanwhile."""
    tools, root = tmp_path / "bin", tmp_path / "root"
    tools.mkdir()
    (root / "etc" / "postfix").mkdir(parents=True)
    (root / "etc" / "postfix" / "main.cf").write_text("")
    fake_tool(
        tools,
        "postconf",
        f"""
time.sleep(1)
if "-h" in sys.argv:
    names = sys.argv[sys.argv.index("-h") + 1:]
    print("\\n".join("{tmp_path}/queue" if name == "queue_directory" else "" for name in names))
""",
    )
    with served_exporter(
        tmp_path, None, "--discovery.root", str(root), env={"PATH": f"{tools}:{os.environ['PATH']}"}
    ) as served:
        for _ in range(6):
            served.process.send_signal(signal.SIGHUP)
            time.sleep(0.1)
        assert get(served.port, "/-/healthy").status == 200
        deadline = time.monotonic() + 60
        while served.stderr().count("configuration reloaded") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(8)  # longer than two more discoveries (three postconf calls of a second)
        reloads = served.stderr().count("configuration reloaded")
    assert reloads == 2, served.stderr()


def test_target_names_stay_distinct_however_the_configs_name_listeners() -> None:
    """Listener names are the configs' own: a name with the port already added is taken
    too, so a number follows (two targets of one name would be refused)."""
    assert _target_name("smtp", 2525, set()) == "smtp"
    assert _target_name("smtp", 2525, {"smtp"}) == "smtp-2525"
    assert _target_name("smtp", 2525, {"smtp", "smtp-2525"}) == "smtp-2525-2"
    assert _target_name("imap login/é", 143, set()) == "imap-login--"
