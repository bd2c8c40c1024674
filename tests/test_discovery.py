"""Discovery against the suite's real servers, on a host without mail software, and as an
unprivileged user: the printed config passes check-config, its probes and collectors
work, it lists nothing that is not there, and what cannot run says why.

The host itself is taken to run no mail server on the standard ports (as the suite's
machines are set up): the suite's servers listen on ports of their own.

Discovery is pointed at the servers as on a real host: ``--discovery.root`` is a tree
whose ``etc/postfix`` and ``etc/dovecot/dovecot.conf`` are the test instances' own (so
``postconf -c`` and ``doveconf -c`` read them), and ``--discovery.exim-command`` is the
unpacked Exim with its config.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mail_exporter.collectors.base import CollectorSet
from mail_exporter.config.root import Config, load_config
from mail_exporter.discovery import discover_config, discover_plan
from mail_exporter.discovery.facts import Port
from mail_exporter.discovery.listeners import listening_sockets, peek_listeners, probe_address
from mail_exporter.discovery.options import DiscoveryOptions
from mail_exporter.discovery.plan import plan_targets
from mail_exporter.discovery.postfix import discover_postfix
from mail_exporter.probes import run_probe
from mail_exporter.targets import Address, parse_address
from tests.conftest import real_exim_or_fail
from tests.realservers.dovecot import Dovecot
from tests.realservers.exim import Exim, exim_work_dir
from tests.realservers.pki import PKI
from tests.realservers.postfix import Postfix
from tests.realservers.runtime import free_port, reachable_dir
from tests.served import get, metrics_with, served_exporter

pytestmark = pytest.mark.integration

COMMAND_SECONDS = 60  # hang guard: discovery takes a few seconds at most


def run_cli(*arguments: str, env: dict[str, str] | None = None,
            user: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``mail-exporter ARGUMENTS``, as ``user`` (and its group only) when given: util-linux's
    setpriv switches before it runs the interpreter."""
    switch = [] if user is None else ["setpriv", f"--reuid={user}", "--regid=nogroup",
                                      "--clear-groups"]  # fmt: skip
    return subprocess.run(
        [*switch, sys.executable, "-m", "mail_exporter", *arguments],
        capture_output=True, text=True, timeout=COMMAND_SECONDS, check=False, env=env, cwd="/",
    )  # fmt: skip


def discover(*flags: str, **options: object) -> tuple[str, str]:
    """The printed config and the messages of ``discover FLAGS``, which must succeed."""
    done = run_cli("discover", *flags, **options)  # type: ignore[arg-type]
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def checked(text: str, directory: Path) -> Config:
    """The config as check-config accepts it, from a file as a user would save it."""
    path = directory / "discovered.yml"
    path.write_text(text)
    done = run_cli("check-config", str(path))
    assert done.returncode == 0, done.stderr + text
    return load_config(path)


def success_by_collector(config: Config) -> dict[str, float]:
    collectors = CollectorSet(config.collectors, {})
    try:
        families = list(collectors.collect())
    finally:
        collectors.close()
    (success,) = [f for f in families if f.name == "mail_exporter_collector_success"]
    return {s.labels["collector"]: s.value for s in success.samples}


def enabled(config: Config) -> set[str]:
    return {
        name
        for name in type(config.collectors).model_fields
        if config.collectors.section(name).enabled
    }


@pytest.fixture
def exim() -> Iterator[Exim]:
    with exim_work_dir() as work_dir:
        server = real_exim_or_fail(lambda: Exim(work_dir))
        server.queue("sender@test.local", "someone@elsewhere.example", "discovered")
        yield server


def mail_root(directory: Path, postfix: Postfix | None, dovecot: Dovecot | None) -> Path:
    """A tree with the well-known paths of a host: the servers' configs where Debian
    keeps them, nothing else."""
    root = directory / "root"
    (root / "etc" / "dovecot").mkdir(parents=True)
    if postfix is not None:
        (root / "etc" / "postfix").symlink_to(postfix.config_dir)
    if dovecot is not None:
        (root / "etc" / "dovecot" / "dovecot.conf").symlink_to(dovecot.config_path)
    return root


def test_discovered_config_watches_the_real_servers(
    tmp_path: Path, postfix: Postfix, dovecot: Dovecot, exim: Exim, pki: PKI
) -> None:
    root = mail_root(tmp_path, postfix, dovecot)
    text, _ = discover(
        "--discovery.root", str(root), "--discovery.exim-command", shlex.join(exim.command)
    )
    config = checked(text, tmp_path)

    found = {
        (t.address, config.modules[t.module].protocol, config.modules[t.module].tls)
        for t in config.targets
    }
    assert found == {
        (f"127.0.0.1:{postfix.smtp_port}", "smtp", "starttls"),
        (f"127.0.0.1:{postfix.submission_port}", "smtp", "starttls"),
        (f"127.0.0.1:{postfix.smtps_port}", "smtp", "implicit"),
        (f"127.0.0.1:{dovecot.imap_port}", "imap", "starttls"),
        (f"127.0.0.1:{dovecot.imaps_port}", "imap", "implicit"),
        (f"127.0.0.1:{dovecot.pop3_port}", "pop3", "starttls"),
        (f"127.0.0.1:{dovecot.pop3s_port}", "pop3", "implicit"),
    }
    submission = next(t for t in config.targets if t.name == "submission")
    assert config.modules[submission.module].require_tls is not False
    # Nothing secret: no login but the commented template, no password of the servers'.
    assert all(module.auth is None for module in config.modules.values())
    assert "#   auth:" in text and dovecot.password not in text

    async def probe_all() -> list[tuple[str, bool, str]]:
        results = await asyncio.gather(*(
            run_probe(parse_address(t.address), config.modules[t.module], 10)
            for t in config.targets
        ))  # fmt: skip
        return [
            (t.name, r.success, str(r.failure))
            for t, r in zip(config.targets, results, strict=True)
        ]

    assert all(success for _, success, _ in asyncio.run(probe_all())), asyncio.run(probe_all())

    expected = {"postfix_queue", "exim_queue", "logs", "host", "services", "certificates"}
    assert enabled(config) == expected
    # Postfix's chain files are its key and its certificate; Dovecot uses the same.
    assert config.collectors.section("certificates").files == [pki.server_cert]  # type: ignore[attr-defined]
    (instance,) = config.collectors.section("postfix_queue").instances  # type: ignore[attr-defined]
    assert instance.config_directory == root / "etc" / "postfix"
    sources = {(s.path, s.format) for s in config.collectors.section("logs").sources}  # type: ignore[attr-defined]
    assert sources == {
        (postfix.log_path, "syslog"),
        (dovecot.log_path, "dovecot"),
        (exim.log_directory / "mainlog", "exim"),
    }
    services = {s.name for s in config.collectors.section("services").services}  # type: ignore[attr-defined]
    assert {"postfix", "dovecot", "exim"} <= services
    assert not services & {"qmail"}
    assert success_by_collector(config) == dict.fromkeys(enabled(config), 1.0)

    # A config of one's own that lacks the Dovecot ports and the logs: --diff names them.
    mine = yaml.safe_load(text)
    mine["targets"] = [t for t in mine["targets"] if not t["module"].startswith(("imap", "pop3"))]
    del mine["collectors"]["logs"]
    own = tmp_path / "own.yml"
    own.write_text(yaml.safe_dump(mine))
    done = run_cli(
        "discover", "--diff", str(own), "--discovery.root", str(root),
        "--discovery.exim-command", shlex.join(exim.command),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"127.0.0.1:{dovecot.imaps_port} (imap) is not probed" in done.stdout
    assert "collector logs: off" in done.stdout
    assert "smtp" not in done.stdout.replace("postfix", "")
    own.write_text(text)
    done = run_cli(
        "discover", "--diff", str(own), "--discovery.root", str(root),
        "--discovery.exim-command", shlex.join(exim.command),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout


def test_a_host_without_mail_software_gets_a_host_config(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()  # a PATH without postconf, doveconf, exim, smartctl, journalctl
    text, message = discover(
        "--discovery.root", str(tmp_path), env={**os.environ, "PATH": str(empty)}
    )
    config = checked(text, tmp_path)
    assert "No mail server found" in message and "host only" in message
    assert config.targets == [] and config.modules == {}
    assert enabled(config) == {"host", "services"}
    assert config.collectors.section("services").services == []  # type: ignore[attr-defined]
    assert config.collectors.section("host").mail_paths == []  # type: ignore[attr-defined]
    assert success_by_collector(config) == {"host": 1.0, "services": 1.0}
    # Served without a config, it says so in its log.
    with served_exporter(
        tmp_path, None, "--discovery.root", str(tmp_path), env={"PATH": str(empty)}
    ) as served:
        assert "discovered: no mail server; 0 targets" in get(served.port, "/").body
    assert "No mail server found" in served.stderr()


@pytest.fixture
def unprivileged_root() -> Iterator[Path]:
    """A tree an unprivileged user can walk: a mail.log for group adm only, and a
    Dovecot config of its own (readable; doveadm would still need root)."""
    root = reachable_dir(f"discovery-{os.getpid()}-{time.monotonic_ns()}")
    try:
        (root / "var" / "log").mkdir(parents=True)
        (root / "etc" / "dovecot").mkdir(parents=True)
        for directory in (root, root / "var", root / "var" / "log", root / "etc"):
            directory.chmod(0o755)
        log = root / "var" / "log" / "mail.log"
        log.write_text("")
        os.chown(log, 0, grp.getgrnam("adm").gr_gid)
        log.chmod(0o640)
        conf = root / "etc" / "dovecot" / "dovecot.conf"
        conf.write_text(
            f"base_dir = {root}/run\nlog_path = syslog\nprotocols = imap\n"
            "mail_plugins = quota\nssl = no\n"
        )
        for path in (root / "etc" / "dovecot", conf):
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_an_unprivileged_user_gets_what_it_cannot_run_commented_out(
    tmp_path: Path, unprivileged_root: Path
) -> None:
    text, _ = discover("--discovery.root", str(unprivileged_root), user="nobody")
    config = checked(text, tmp_path)
    assert "dovecot" in {s.name for s in config.collectors.section("services").services}  # type: ignore[attr-defined]
    assert "logs" not in enabled(config) and "dovecot" not in enabled(config)
    log = unprivileged_root / "var" / "log" / "mail.log"
    said = re.sub(r"\n *# +", " ", text)  # the comments' wrapped lines joined
    assert f"Off: {log} is not readable by nobody: add it to group adm" in said
    assert "Off: doveadm needs root and nobody is not" in said
    assert "# logs:\n  #   enabled: true" in text and "# dovecot:\n  #   enabled: true" in text
    # As root, the same tree gets both.
    text, _ = discover("--discovery.root", str(unprivileged_root))
    assert {"logs", "dovecot"} <= enabled(checked(text, tmp_path))


def test_without_a_config_the_exporter_serves_what_it_discovers(
    tmp_path: Path, postfix: Postfix, dovecot: Dovecot
) -> None:
    root = mail_root(tmp_path, postfix, None)
    flags = ("--discovery.root", str(root), "--log.format", "json")
    with served_exporter(tmp_path, None, *flags) as served:
        smtp = f'mail_probe_success{{target="smtp-{postfix.smtp_port}",module="smtp",protocol="smtp"}} 1.0'
        metrics_with(served, {smtp, 'mail_exporter_collector_success{collector="postfix_queue"} 1.0',
                              'mail_exporter_collector_success{collector="logs"} 1.0',
                              'mail_exporter_collector_success{collector="host"} 1.0'})  # fmt: skip
        page = get(served.port, "/").body
        assert "discovered: postfix;" in page
        assert "deferred" in page  # the queue table of the Postfix found
        assert "# Found:" in get(served.port, "/config").body
        # Dovecot appears: a reload discovers it.
        (root / "etc" / "dovecot" / "dovecot.conf").symlink_to(dovecot.config_path)
        served.process.send_signal(signal.SIGHUP)
        imaps = 'mail_probe_success{target="imaps",module="imaps",protocol="imap"} 1.0'
        metrics_with(served, {imaps})
        assert "discovered: postfix, dovecot;" in get(served.port, "/").body
    log = served.stderr()
    assert '"starting mail_exporter' in log and "discovered: postfix;" in log
    assert "configuration reloaded from discovered: postfix, dovecot;" in log


def test_peeks_are_bounded_each_and_run_at_once() -> None:
    """Ports that accept and never answer: each peek gives up at its limit (STARTTLS
    first, then implicit TLS), all ports at once, and none becomes a target."""
    limit = 2.0
    with contextlib.ExitStack() as stack:
        hung = [stack.enter_context(socket.socket()) for _ in range(3)]
        for server in hung:
            server.bind(("127.0.0.1", 0))
            server.listen()
        ports = [
            Port(s.getsockname()[1], "smtp", "smtp", f"hung-{n}", "a test")
            for n, s in enumerate(hung)
        ]
        started = time.monotonic()
        peeks, silent, unpeeked = peek_listeners(ports, limit)
        elapsed = time.monotonic() - started
    assert silent == [] and unpeeked == []
    assert [(p.tls, p.address.host) for p in peeks] == [(None, "127.0.0.1")] * 3
    assert all(p.problem.count(f"no answer within {limit:g}s") == 2 for p in peeks), peeks
    # One after another would take 3 ports x 2 modes x the limit (12 s); at once, 2 limits.
    assert elapsed < 5 * limit, elapsed
    modules, targets, left_out = plan_targets(peeks)
    assert modules == {} and targets == [] and len(left_out) == 3


def test_listening_sockets_and_where_they_are_peeked(tmp_path: Path) -> None:
    """The kernel's tables as /proc/net/tcp{,6} print them; a wildcard is peeked on
    loopback, an address of the host's own as it is bound."""
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt\n"
    ipv4 = tmp_path / "tcp"
    ipv4.write_text(
        header
        + "   0: 0100007F:0019 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n"
        + "   1: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n"
        + "   2: 0100007F:0050 0100007F:9C40 01 00000000:00000000 00:00000000 00000000\n"
    )
    ipv6 = tmp_path / "tcp6"
    ipv6.write_text(
        header + "   0: 00000000000000000000000001000000:03E1 "
        "00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000\n"
    )
    assert listening_sockets([ipv4, ipv6]) == {25: {"127.0.0.1"}, 443: {"0.0.0.0"}, 993: {"::1"}}
    smtp = Port(25, "smtp", "smtp", "smtp", "a test")
    assert probe_address(smtp, ["0.0.0.0", "::"]) == Address("127.0.0.1", 25)
    assert probe_address(smtp, ["::"]) == Address("::1", 25)
    assert probe_address(smtp, ["192.0.2.10", "127.0.0.2"]) == Address("127.0.0.2", 25)
    assert probe_address(smtp, ["192.0.2.10"]) == Address("192.0.2.10", 25)
    assert probe_address(smtp, []) is None
    bound = Port(25, "smtp", "smtp", "smtp", "a test", host="192.0.2.10")
    assert probe_address(bound, ["127.0.0.1", "192.0.2.10"]) == Address("192.0.2.10", 25)


def test_postfix_instances_and_their_services_from_postconf(tmp_path: Path) -> None:
    """postmulti's instances and master.cf's smtpd services as postconf reads them; ports
    that do not listen are noted, never targets."""
    root = tmp_path / "root"
    primary, other = root / "etc" / "postfix", tmp_path / "postfix-out"
    first, second = free_port(), free_port()
    for directory, main, master in (
        (primary, f"maillog_file = {tmp_path}/postfix.log\n"
                  f"multi_instance_directories = {other}\n",
         f"127.0.0.1:{first} inet n - n - - smtpd\n"
         "submission inet n - n - - smtpd\n  -o syslog_name=postfix/submission\n"
         "  -o smtpd_tls_security_level=encrypt\n"
         "pickup unix n - n 60 1 pickup\n"),
        (other, "multi_instance_name = postfix-out\nsyslog_name = postfix-out\n",
         f"{second} inet n - n - - smtpd\n  -o smtpd_tls_wrappermode=yes\n"),
    ):  # fmt: skip
        directory.mkdir(parents=True)
        queue = tmp_path / f"queue-{directory.name}"
        (directory / "main.cf").write_text(f"queue_directory = {queue}\n{main}")
        (directory / "master.cf").write_text(master)

    instances, problems = discover_postfix(DiscoveryOptions(root=root))
    assert problems == []
    assert [(i.name, i.running) for i in instances] == [("postfix", False), ("postfix-out", False)]
    ports = [(p.port, p.kind, p.tls, p.host, p.name) for i in instances for p in i.ports]
    assert ports == [
        (first, "smtp", None, "127.0.0.1", f"smtp-{first}"),
        (587, "submission", "starttls", None, "submission"),
        (second, "smtps", "implicit", None, f"postfix-out-smtps-{second}"),
    ]
    assert [log.path for i in instances for log in i.logs] == [tmp_path / "postfix.log"]
    assert [i.uses_syslog for i in instances] == [False, True]

    plan, _ = discover_plan(DiscoveryOptions(root=root, peek_timeout=2))
    assert not {t.address for t in plan.targets} & {f"127.0.0.1:{first}", f"127.0.0.1:{second}"}
    (queues,) = [c for c in plan.collectors if c.name == "postfix_queue"]
    assert queues.settings["instances"] == [
        {"name": "postfix", "config_directory": str(primary)},
        {"name": "postfix-out", "config_directory": str(other)},
    ]
    notes = "\n".join(plan.notes)
    assert f"not listening: port {first}" in notes and f"not listening: port {second}" in notes


def test_qmail_is_found_by_its_queue_directory(tmp_path: Path) -> None:
    queue = tmp_path / "var" / "qmail" / "queue"
    for part in ("mess", "todo"):
        (queue / part).mkdir(parents=True)
    text = discover_config(DiscoveryOptions(root=tmp_path, peek_timeout=2)).text
    config = checked(text, tmp_path)
    section = config.collectors.section("qmail_queue")
    assert section.queue_directory == queue  # type: ignore[attr-defined]
    assert section.qstat_command == [str(tmp_path / "var/qmail/bin/qmail-qstat")]  # type: ignore[attr-defined]
    assert "qmail" in {s.name for s in config.collectors.section("services").services}  # type: ignore[attr-defined]
    assert success_by_collector(config)["qmail_queue"] == 1.0
