"""Command line: serve (the default), ``check-config``, ``check-web-config``,
``hash-password``, ``probe`` and ``discover``.

Without ``--config.file`` the exporter serves what ``discover`` finds (see
:mod:`mail_exporter.discovery`); the ``--discovery.*`` flags point discovery elsewhere,
for both.

Flags follow Prometheus conventions (``--config.file``, ``--web.listen-address``,
``--web.config.file``, ``--web.max-connections``, ``--web.read-timeout``,
``--probe.max-concurrency``, ``--log.level``, ``--log.format``); ``--[no-]collector.NAME``
exists for every registered collector. The web limits are flags rather than config keys:
like the listen address they belong to the process and its open files limit, and a reload
does not change them.

Shutdown (SIGTERM, SIGINT) is bounded: it stops the scheduler, the round trips and the
collectors and closes the web server, and if that and the interpreter's own exit (which
waits for worker threads) are not done within :data:`SHUTDOWN_GRACE_SECONDS`, the process
exits anyway, with status 0 (the stop was asked for) and a warning naming the threads
still busy. A thread blocked in a system call (a read from a hung mount, a FIFO) cannot
be stopped from outside, and a stop that waits for it never ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from aiohttp import web
from pydantic import ValidationError

from mail_exporter import __version__
from mail_exporter.basic_auth import hash_password
from mail_exporter.collectors.base import COLLECTORS
from mail_exporter.config.probes import PROTOCOLS, TLS_MODES, ModuleConfig
from mail_exporter.config.root import Config, load_config
from mail_exporter.config.validation import ConfigError, describe_error, did_you_mean
from mail_exporter.discovery import NOTHING_FOUND
from mail_exporter.discovery.command import discover_command, discovery_flags, discovery_options
from mail_exporter.durations import format_duration, parse_duration
from mail_exporter.exporter import Exporter, read_config
from mail_exporter.logs import LEVELS, redact, setup_logging
from mail_exporter.probes import run_probe
from mail_exporter.report import render_report
from mail_exporter.targets import Address, parse_address, parse_port
from mail_exporter.web import make_app
from mail_exporter.web_limits import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_READ_TIMEOUT_SECONDS,
    WebLimits,
    raise_open_files_limit,
)
from mail_exporter.webconfig import load_web_config

logger = logging.getLogger("mail_exporter")

DEFAULT_LISTEN_ADDRESS = ":9469"
SHUTDOWN_GRACE_SECONDS = 5.0
"""How long a shutdown may take before the process exits without waiting any longer."""


def _split_listen_address(text: str) -> tuple[str | None, int]:
    """``:9469`` (all addresses), ``127.0.0.1:9469`` or ``[::1]:9469``."""
    if text.startswith(":") and (port := parse_port(text[1:])) is not None:
        return None, port
    address = parse_address(text)
    return address.host, address.port


def _duration_flag(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A duration flag's seconds: written as the config writes durations (``500ms``, ``5s``,
    ``1m30s``), or as a plain number of seconds, as these flags took before."""
    if value is None:
        return None
    try:
        seconds = float(value) if _PLAIN_NUMBER.fullmatch(value) else parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx, param) from None
    if seconds <= 0:
        raise click.BadParameter(f"{value!r} is not a duration above zero", ctx, param)
    return seconds


_PLAIN_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def _collector_flags(command: Any) -> Any:
    # Applied last first: click lists a command's options in the order they are declared,
    # which for decorators is the reverse of the order they are applied in.
    for name, spec in sorted(COLLECTORS.items(), reverse=True):
        command = click.option(
            f"--collector.{name}/--no-collector.{name}",
            f"collector_{name}",
            default=None,
            help=f"{spec.help} (default: the config's collectors.{name}.enabled)",
        )(command)
    return command


class ListenError(Exception):
    """The listening socket could not be opened: a port taken, an address not of this host."""

    def __init__(self, error: OSError) -> None:
        # The reason alone ("address already in use"), not asyncio's "error while
        # attempting to bind on address (...)" around it: the caller names the address.
        reason = os.strerror(error.errno).lower() if error.errno else str(error)
        super().__init__(reason)


@dataclass(frozen=True)
class WebSettings:
    """The --web.* and --probe.* flags that limit the web server."""

    max_connections: int
    max_probes: int | None
    read_timeout: float


async def _serve(exporter: Exporter, host: str | None, port: int, settings: WebSettings) -> None:
    limits = WebLimits(
        exporter,
        raise_open_files_limit(),
        settings.max_connections,
        settings.max_probes,
        settings.read_timeout,
    )
    exporter.registry.register(limits)
    runner = web.AppRunner(make_app(exporter, limits), access_log=None)
    await runner.setup()
    try:
        await limits.serve(runner, host, port)
    except OSError as error:
        await runner.cleanup()
        exporter.stop()
        raise ListenError(error) from None
    exporter.start()
    level, security = exporter.web_config.security()
    logger.log(level, "listening on %s:%d %s", host or "*", port, security)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    reloads: set[asyncio.Task[None]] = set()  # held until done, as asyncio asks

    async def reload() -> None:
        with contextlib.suppress(ConfigError):  # logged by reload(); the running config stays
            await exporter.reload()

    def start_reload() -> None:
        task = loop.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, start_reload)
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    await stopping.wait()
    logger.info("shutting down")
    _exit_after(SHUTDOWN_GRACE_SECONDS)
    exporter.stop()
    limits.stop_listening()
    await runner.cleanup()
    limits.close()


def _exit_after(seconds: float) -> None:
    """End the process in ``seconds`` if it has not ended by then (see the module docstring)."""

    def exit_now() -> None:
        waiting = {threading.main_thread(), threading.current_thread()}
        busy = sorted(thread.name for thread in threading.enumerate() if thread not in waiting)
        logger.warning(
            "shutdown not done within %gs, exiting without waiting for: %s",
            seconds,
            ", ".join(busy),
        )
        os._exit(0)

    timer = threading.Timer(seconds, exit_now)
    timer.daemon = True  # not waited for at exit: the exit it guards would wait for it
    timer.start()


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config.file",
    "config_file",
    type=click.Path(path_type=Path),
    help="YAML config; without it the exporter watches what `discover` finds on this host "
    "(discovered again at each reload).",
)
@click.option(
    "--web.listen-address",
    "listen_address",
    default=DEFAULT_LISTEN_ADDRESS,
    show_default=True,
    help="Address to serve /metrics and /probe on.",
)
@click.option(
    "--web.config.file",
    "web_config_file",
    type=click.Path(path_type=Path),
    help="TLS and basic auth settings (exporter-toolkit format); without it the endpoints "
    "are plain HTTP without authentication.",
)
@click.option(
    "--web.max-connections",
    "max_connections",
    type=click.IntRange(1),
    default=DEFAULT_MAX_CONNECTIONS,
    show_default=True,
    help="Web connections kept open at once, lowered to what the open files limit allows; "
    "past it the connection that has waited longest for its request is closed.",
)
@click.option(
    "--web.read-timeout",
    "read_timeout",
    callback=_duration_flag,
    default=format_duration(DEFAULT_READ_TIMEOUT_SECONDS),
    show_default=True,
    help="Time a connection has to send a complete request head, from when it opens "
    "or from its previous response; then it is closed.",
)
@click.option(
    "--probe.max-concurrency",
    "max_probes",
    type=click.IntRange(1),
    help="/probe requests run at once; past it /probe answers 503 with Retry-After. "
    "[default: 128, or fewer as the open files limit allows]",
)
@click.option(
    "--log.level", "log_level", type=click.Choice(LEVELS), default="info", show_default=True
)
@click.option(
    "--log.format",
    "log_format",
    type=click.Choice(["logfmt", "json"]),
    default="logfmt",
    show_default=True,
)
@click.version_option(__version__, "--version")
@discovery_flags
@_collector_flags
@click.pass_context
def main(
    ctx: click.Context,
    /,
    config_file: Path | None,
    listen_address: str,
    web_config_file: Path | None,
    max_connections: int,
    read_timeout: float,
    max_probes: int | None,
    log_level: str,
    log_format: str,
    discovery_root: Path,
    exim_command: str | None,
    **collector_choices: bool | None,
) -> None:
    """Prometheus exporter for mail servers. Without a subcommand it serves."""
    setup_logging(log_level, log_format)
    if ctx.invoked_subcommand is not None:
        return
    try:
        host, port = _split_listen_address(listen_address)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--web.listen-address") from None
    settings = WebSettings(max_connections, max_probes, read_timeout)
    choices = {key.removeprefix("collector_"): value for key, value in collector_choices.items()}
    discovery = discovery_options(discovery_root, exim_command)
    # Before the exporter is built: building it starts the collectors, which log that.
    logger.info(
        "starting mail_exporter %s with %s",
        __version__,
        config_file or "the config discovery finds on this host",
    )
    try:
        exporter = Exporter(config_file, choices, web_config_file, discovery)
    except ConfigError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    if exporter.discovered is not None:
        logger.info("%s", exporter.source)
        if not exporter.discovered.found_anything:
            logger.warning("%s", NOTHING_FOUND)
    _log_unverifying_modules(exporter.config.modules)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(_serve(exporter, host, port, settings))
    except ListenError as error:
        logger.error("cannot listen on %s: %s", listen_address, error)
        sys.exit(1)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (the ``fast`` extra), else ``None``: asyncio's
    own. Measured against the same Postfix, uvloop takes a STARTTLS probe's CPU and wall
    time below blackbox_exporter's (docs/benchmarks.md, section 2).

    Everything works the same on both, TLS of the web config included: the web server
    accepts its connections and has the loop open them (TLS handshake and all) through
    what both loops do alike, because their own servers differ (uvloop's drops waiting
    connections when descriptors run out, and reads a new connection before ``start_tls``
    could take it over; see :mod:`mail_exporter.web_limits`). So no feature makes the
    exporter fall back to asyncio's loop. The tests run in process on asyncio's loop, and
    their served web exporters on each loop (``served_loop`` in tests/conftest.py)."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _log_unverifying_modules(modules: Mapping[str, ModuleConfig]) -> None:
    """Say which modules do not fail on a certificate that does not verify because their
    config says so: the built-in config's do, and a written config of the same modules
    without ``insecure_skip_verify`` would fail where these pass."""
    # An opportunistic module reports without the key too: it would not fail without it.
    skipping = sorted(
        name
        for name, module in modules.items()
        if module.tls_config.insecure_skip_verify and not module.opportunistic
    )
    if skipping:
        logger.warning(
            "modules %s report a certificate that does not verify without failing "
            "(tls_config.insecure_skip_verify: true); without that key they fail on it",
            ", ".join(skipping),
        )


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def config_summary(config: Config) -> str:
    """What a valid config runs: ``3 modules, 2 targets, 1 round trip, 2 collectors: logs,
    postfix_queue``."""
    enabled = sorted(name for name in COLLECTORS if config.collectors.section(name).enabled)
    counts = ", ".join(
        (_counted(len(config.modules), "module"), _counted(len(config.targets), "target"),
         _counted(len(config.roundtrip), "round trip"), _counted(len(enabled), "collector"))
    )  # fmt: skip
    return f"{counts}: {', '.join(enabled)}" if enabled else counts


@main.command("check-config")
@click.argument("path", type=click.Path(path_type=Path), required=False)
@click.option(
    "--config.file",
    "config_file",
    type=click.Path(path_type=Path),
    help="The config to check, as the server and probe take it (or PATH).",
)
@click.pass_context
def check_config(ctx: click.Context, /, path: Path | None, config_file: Path | None) -> None:
    """Validate a config file; list every problem and exit 1 if there is one."""
    if path is not None and config_file is not None:
        raise click.UsageError("give the config once: PATH or --config.file")
    # `mail-exporter --config.file X check-config` names it before the command, as serving does.
    chosen = path or config_file or (ctx.parent.params["config_file"] if ctx.parent else None)
    if chosen is None:
        raise click.UsageError("which config? give PATH or --config.file")
    try:
        config = load_config(chosen)
    except ConfigError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    click.echo(f"{chosen}: OK ({config_summary(config)})")


@main.command("check-web-config")
@click.argument("path", type=click.Path(path_type=Path))
def check_web_config(path: Path) -> None:
    """Validate a web config file (TLS, basic auth); list every problem and exit 1 if any."""
    try:
        web_config = load_web_config(path)
    except ConfigError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    _, security = web_config.security()
    click.echo(f"{path}: OK (serves {security})")
    # A reload swaps certificates and users on the listening socket, which was opened with
    # TLS or without it: saying so here spares a reload that would be refused.
    if web_config.tls_server_config is not None:
        click.echo(
            "TLS is set up when the exporter starts: restart one that runs without TLS now "
            "(a reload applies new certificates and users, but cannot turn TLS on)."
        )
    else:
        click.echo(
            "Without TLS: a reload applies users, but cannot turn TLS off in an exporter "
            "that runs with it: restart that one."
        )


@main.command("hash-password")
@click.option(
    "--cost", type=click.IntRange(4, 31), default=10, show_default=True, help="bcrypt cost."
)
def hash_password_command(cost: int) -> None:
    """Print a bcrypt hash for basic_auth_users in the web config.

    The password is asked for twice, never taken as an argument (which other users of
    the host could read from the process list).
    """
    password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    click.echo(hash_password(password, cost))


def _adhoc_module(
    protocol: str | None,
    tls_mode: str | None,
    ca_file: Path | None,
    server_name: str | None,
    insecure: bool,
) -> ModuleConfig:
    settings: dict[str, Any] = {"protocol": protocol or "smtp", "tls": tls_mode or "none"}
    tls_config: dict[str, Any] = {"insecure_skip_verify": insecure}
    if ca_file:
        tls_config["ca_file"] = str(ca_file)
    if server_name:
        tls_config["server_name"] = server_name
    settings["tls_config"] = tls_config
    try:
        return ModuleConfig.model_validate(settings)
    except ValidationError as error:  # only --server-name can be wrong: the rest are choices
        raise click.BadParameter(
            describe_error(error.errors()[0]), param_hint="--server-name"
        ) from None


@dataclass(frozen=True)
class PostureChecks:
    """The security checks ``probe`` is asked for on top of the module's own."""

    tls_scan: bool = False
    revocation: bool = False
    relay: tuple[str, str] | None = None
    enumeration: str | None = None

    def settings(self, module: ModuleConfig) -> tuple[dict[str, Any], dict[str, Any]]:
        """(module keys, smtp section keys) that ask for them."""
        shared: dict[str, Any] = {}
        if self.tls_scan:
            shared["tls_scan"] = True
        if self.revocation:
            shared["revocation"] = {"crl": True, "ocsp": True, "stapling": True}
        if (self.tls_scan or self.revocation) and module.tls == "none":
            raise click.UsageError("--tls-scan and --revocation check TLS: add --tls")
        smtp: dict[str, Any] = {}
        if self.relay is not None:
            mail_from, rcpt_to = self.relay
            authenticated = module.auth is not None  # a module that logs in checks after it
            smtp["relay_check"] = {"mail_from": mail_from, "rcpt_to": rcpt_to,
                                   "authenticated": authenticated}  # fmt: skip
        if self.enumeration is not None:
            smtp["enumeration_check"] = {"address": self.enumeration}
        if smtp and module.protocol != "smtp":
            raise click.UsageError("--relay-check and --enumeration-check are checks of SMTP")
        return shared, smtp


def _with_checks(module: ModuleConfig, checks: PostureChecks) -> ModuleConfig:
    """``module`` with the security checks the command line asks for, validated as the
    config would validate them."""
    shared, smtp = checks.settings(module)
    if not shared and not smtp:
        return module
    # The module as its config says it (durations as written, paths made absolute), so
    # that it is validated again whole: a password file is read again, checks meet the login.
    settings = module.model_dump(mode="json", exclude_unset=True) | shared
    if smtp:
        settings["smtp"] = {**settings.get("smtp", {}), **smtp}
    try:
        return ModuleConfig.model_validate(settings)
    except ValidationError as error:
        raise click.UsageError(describe_error(error.errors()[0])) from None


@main.command("probe")
@click.argument("target")
@click.option("--module", "module_name", help="A module from the config (or the built-in config).")
@click.option(
    "--config.file",
    "config_file",
    type=click.Path(path_type=Path),
    help="Config to take --module from.",
)
@click.option("--protocol", type=click.Choice(PROTOCOLS), help="Without --module.")
@click.option(
    "--tls",
    "tls_mode",
    type=click.Choice(TLS_MODES),
    help="Without --module.",
)
@click.option("--ca-file", type=click.Path(path_type=Path, exists=True), help="Without --module.")
@click.option(
    "--server-name", help="Name to verify the certificate against (and SNI). Without --module."
)
@click.option(
    "--insecure-skip-verify",
    is_flag=True,
    help="Report but do not fail on an unverified certificate.",
)
@click.option(
    "--timeout",
    callback=_duration_flag,
    help="A duration such as 5s or 500ms; default: the module's timeout.",
)
@click.option(
    "--tls-scan",
    is_flag=True,
    help="Also try each TLS version (1.0 to 1.3) and weak cipher class, one handshake each.",
)
@click.option(
    "--revocation",
    is_flag=True,
    help="Also ask the certificate's CRL and OCSP responder whether it is revoked "
    "(HTTP requests to the URLs it names), and the server for its OCSP staple.",
)
@click.option(
    "--relay-check",
    nargs=2,
    metavar="MAIL_FROM RCPT_TO",
    help="SMTP: is it an open relay? MAIL FROM and RCPT TO addresses outside its domains "
    "(after the login when the module logs in); never sends DATA.",
)
@click.option(
    "--enumeration-check",
    metavar="ADDRESS",
    help="SMTP: do VRFY and EXPN tell this existing address from an unknown one?",
)
def probe_command(
    target: str,
    module_name: str | None,
    config_file: Path | None,
    protocol: str | None,
    tls_mode: str | None,
    ca_file: Path | None,
    server_name: str | None,
    insecure_skip_verify: bool,
    timeout: float | None,
    tls_scan: bool,
    revocation: bool,
    relay_check: tuple[str, str] | None,
    enumeration_check: str | None,
) -> None:
    """Probe TARGET (HOST:PORT) once and print each phase, the TLS facts, the security
    checks asked for (the module's, and --tls-scan, --revocation, --relay-check,
    --enumeration-check on top), what they found, and the verdict."""
    try:
        address: Address = parse_address(target)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="TARGET") from None
    if module_name is not None:
        if protocol or tls_mode or ca_file or server_name or insecure_skip_verify:
            raise click.UsageError("--module takes its protocol and TLS settings from the config")
        try:
            config = read_config(config_file)
        except ConfigError as error:
            click.echo(str(error), err=True)
            sys.exit(2)
        if module_name not in config.modules:
            known = ", ".join(sorted(config.modules))
            typo = did_you_mean(module_name, config.modules)
            raise click.BadParameter(
                f"unknown module {module_name!r}{typo} (configured: {known})",
                param_hint="--module",
            )
        module = config.modules[module_name]
        redact(config.secrets())
    else:
        module = _adhoc_module(protocol, tls_mode, ca_file, server_name, insecure_skip_verify)
        module_name = f"{module.protocol}/{module.tls}"
    checks = PostureChecks(tls_scan, revocation, relay_check, enumeration_check)
    module = _with_checks(module, checks)
    result = asyncio.run(run_probe(address, module, timeout or module.timeout_seconds))
    click.echo(render_report(str(address), module_name, result), nl=False)
    sys.exit(0 if result.success else 1)


main.add_command(discover_command)
