"""A private Dovecot instance on loopback: IMAP, POP3 (plain with STARTTLS/STLS, and implicit
TLS), LMTP for deliveries from Postfix, and the auth service over TCP for Postfix's SASL.

Config, sockets, state and log live in its work directory; the password file and the
mailboxes, which unprivileged Dovecot processes open, in a directory of their own in the
system temp directory, removed by stop(). It must run as root: Dovecot's master binds the
ports and switches each process to its user.
"""

import pwd
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.realservers.runtime import (
    LOOPBACK_ADDRESSES,
    Endpoint,
    ServerStartError,
    accepts_tcp,
    format_endpoints,
    free_port,
    listens_on,
    log_excerpt,
    loopback_endpoints,
    reachable_dir,
    start_with_fresh_ports,
    stop_session,
    wait_for_endpoints,
)

MAIL_DOMAIN = "test.local"
PROBE_USER = f"probe@{MAIL_DOMAIN}"
PROBE_PASSWORD = "probe-secret"
# Dovecot refuses to access mail as uid 0, so mailboxes belong to an unprivileged user.
# "nobody" exists on every Debian system, so tests need not add a user to the host; its
# uid 65534 is above Dovecot's default first_valid_uid (500).
MAIL_OWNER = "nobody"
QUOTA_STORAGE = "10M"
QUOTA_MESSAGES = 1000


@dataclass(frozen=True)
class QuotaUser:
    """A further user with quota limits (None: no limit on that resource), as the
    passwd-file gives them to the quota plugin (``userdb_quota_rule``)."""

    name: str
    storage_kib: int | None
    messages: int | None

    def passwd_line(self, password: str) -> str:
        rules = [f"storage={self.storage_kib}K"] if self.storage_kib is not None else []
        rules += [f"messages={self.messages}"] if self.messages is not None else []
        extra = f"userdb_quota_rule=*:{':'.join(rules)}" if rules else ""
        return f"{self.name}:{{PLAIN}}{password}::::::{extra}\n"


class Dovecot:
    """Runs ``dovecot -F -c CONF`` from ``work_dir`` with the given certificate and key.

    Ports (each on 127.0.0.1 and ::1 unless noted): ``imap_port`` (plain, offers STARTTLS),
    ``imaps_port``, ``pop3_port`` (plain, offers STLS), ``pop3s_port``, ``lmtp_port``, and
    ``auth_port`` (127.0.0.1 only, Dovecot's SASL protocol for Postfix). One user,
    ``user``/``password``, whose mail is a Maildir under ``mail_dir`` (until stop()).

    With ``oauth2_introspection_url`` it also takes XOAUTH2 and OAUTHBEARER logins, whose
    tokens its ``passdb oauth2`` checks at that URL as
    :class:`tests.realservers.oauth.TokenServer` answers: RFC 7662 introspection by POST
    (``introspection_mode = post``), the user in ``username``, live while ``active`` is true.

    With ``quota_users`` the quota plugin counts every user's mail (the ``count`` driver,
    virtual sizes) against the limits the passwd-file, then also the userdb, gives each
    of them; those users share ``password``.
    With ``quota`` it runs the quota plugin (the count driver, limits :data:`QUOTA_STORAGE`
    and :data:`QUOTA_MESSAGES`) and imap_quota, so IMAP offers QUOTA; :meth:`doveadm` asks
    the instance itself (``doveadm -c CONF ...``).

    With ``native_metrics`` (Dovecot config text: ``metric`` blocks and a ``service stats``
    block whose ``inet_listener http`` says ``port = {stats_port}``) it also serves its own
    OpenMetrics on ``stats_port`` (127.0.0.1 and ::1, as every listener), at ``/metrics``.
    """

    def __init__(
        self,
        work_dir: Path,
        cert: Path,
        key: Path,
        oauth2_introspection_url: str | None = None,
        quota_users: Sequence[QuotaUser] = (),
        quota: bool = False,
        native_metrics: str | None = None,
    ) -> None:
        self.work_dir = work_dir
        self.native_metrics = native_metrics
        self.quota = quota
        self.oauth2_introspection_url = oauth2_introspection_url
        self.quota_users = tuple(quota_users)
        self.cert = cert
        self.key = key
        token = secrets.token_hex(4)
        # Shows in process titles and keeps this instance apart from any other Dovecot.
        self.instance_name = f"mail-exporter-test-{token}"
        self.config_path = work_dir / "dovecot.conf"
        self.log_path = work_dir / "dovecot.log"
        # Dovecot writes here before its log is set up, e.g. about a bad config file.
        self.stderr_path = work_dir / "dovecot.stderr"
        self.shared_dir = reachable_dir(f"dovecot-{token}")
        self.passwd_path = self.shared_dir / "passwd"
        self.mail_dir = self.shared_dir / "mail"
        self.user = PROBE_USER
        self.password = PROBE_PASSWORD
        self.addresses = LOOPBACK_ADDRESSES
        self._take_ports()
        self._process: subprocess.Popen[bytes] | None = None

    def _take_ports(self) -> None:
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.pop3_port = free_port()
        self.pop3s_port = free_port()
        self.lmtp_port = free_port()
        self.auth_port = free_port()
        self.stats_port = free_port()

    def start(self, timeout: float = 20.0) -> None:
        """Start Dovecot and return once every listener accepts connections (on other
        ports than first given if one was taken meanwhile: read them after the start)."""
        start_with_fresh_ports(lambda: self._start(timeout), self._take_ports)

    def _start(self, timeout: float) -> None:
        try:
            self._prepare_work_dir()
            self._launch()
            self._wait_until_listening(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Dovecot, wait until none of its processes is left, remove the mailboxes."""
        if self._process is not None:
            process, self._process = self._process, None
            # The whole group at once: the master alone takes about 1 s to wind its
            # children down, and login processes with clients would outlive it.
            stop_session(process, "Dovecot", timeout)
        shutil.rmtree(self.shared_dir, ignore_errors=True)

    def _launch(self) -> None:
        with self.stderr_path.open("wb") as stderr:
            # A session (and process group) of its own lets stop() signal and then find
            # every process Dovecot forked.
            self._process = subprocess.Popen(
                ["dovecot", "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_until_listening(self, timeout: float) -> None:
        # Held by Dovecot's own master, not only answered: the taken port of a clash
        # answers too, while the master is still binding the others before it gives up.
        assert self._process is not None
        pid = self._process.pid
        pending = wait_for_endpoints(
            self._endpoints(),
            lambda endpoint: accepts_tcp(endpoint) and listens_on(pid, endpoint[1]),
            timeout,
            still_running=self._running,
        )
        if not pending:
            return
        exit_code = self._process.poll() if self._process else None
        problem = (
            f"not listening after {timeout}s"
            if exit_code is None
            else f"exited with status {exit_code} before listening"
        )
        raise ServerStartError(
            f"Dovecot {problem} on {format_endpoints(pending)}\n"
            f"{log_excerpt(self.stderr_path, self.log_path)}"
        )

    def _running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _endpoints(self) -> list[Endpoint]:
        ports = (self.imap_port, self.imaps_port, self.pop3_port, self.pop3s_port, self.lmtp_port)
        if self.native_metrics is not None:
            ports += (self.stats_port,)
        return [*loopback_endpoints(*ports), ("127.0.0.1", self.auth_port)]

    def _prepare_work_dir(self) -> None:
        owner = pwd.getpwnam(MAIL_OWNER)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # Search but no listing for others: the auth process (user dovecot) and the mail
        # owner each need a path through it.
        self.shared_dir.mkdir()
        self.shared_dir.chmod(0o711)
        self.mail_dir.mkdir()
        # LMTP and IMAP/POP3 processes run as the mail owner and create its home here.
        shutil.chown(self.mail_dir, owner.pw_uid, owner.pw_gid)
        # Readable by the unprivileged auth process; the password is a test constant.
        further = "".join(user.passwd_line(self.password) for user in self.quota_users)
        # Every line with all its fields: the passwd-file userdb takes no shorter line.
        self.passwd_path.write_text(f"{self.user}:{{PLAIN}}{self.password}::::::\n{further}")
        self.passwd_path.chmod(0o644)
        self.config_path.write_text(self._config(owner.pw_uid, owner.pw_gid))

    def _oauth2_passdb(self) -> tuple[str, str]:
        """The mechanisms and the passdb that check OAuth2 tokens, when asked for."""
        if self.oauth2_introspection_url is None:
            return "", ""
        settings = self.work_dir / "oauth2.conf.ext"
        settings.write_text(
            f"introspection_mode = post\nintrospection_url = {self.oauth2_introspection_url}\n"
            "force_introspection = yes\nusername_attribute = username\n"
            "active_attribute = active\nactive_value = true\n"
        )
        passdb = f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {settings}\n}}\n"
        return " xoauth2 oauthbearer", passdb

    def _userdb(self, uid: int, gid: int) -> str:
        """Everyone in one static userdb; with quota users, the passwd-file (for their
        quota rules, and so that ``doveadm -A`` can list them)."""
        fields = f"uid={uid} gid={gid} home={self.mail_dir}/%u"
        if not self.quota_users:
            return f"userdb {{\n  driver = static\n  args = {fields}\n}}\n"
        return f"""\
userdb {{
  driver = passwd-file
  args = {self.passwd_path}
  default_fields = {fields}
}}
"""

    def doveadm(self, *arguments: str) -> str:
        """``doveadm -c CONF ARGUMENTS`` against this instance; its output (raises on failure)."""
        command = ["doveadm", "-c", str(self.config_path), *arguments]
        return subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=30
        ).stdout

    def _quota_settings(self) -> str:
        """The quota plugin and imap_quota, with ``quota`` or quota users: limits for everyone
        (``quota``) or the ones each quota user's passwd-file line gives."""
        if not self.quota and not self.quota_users:
            return ""
        everyone = (
            f"  quota_rule = *:storage={QUOTA_STORAGE}:messages={QUOTA_MESSAGES}\n"
            if self.quota
            else ""
        )
        # The count driver keeps no state of its own; it needs quota_vsizes (Dovecot 2.3 docs,
        # "Quota driver: count").
        return f"""\
mail_plugins = $mail_plugins quota
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
}}
plugin {{
  quota = count:User quota
  quota_vsizes = yes
{everyone}}}
"""

    def _native_metrics(self) -> str:
        if self.native_metrics is None:
            return ""
        return self.native_metrics.replace("{stats_port}", str(self.stats_port))

    def _config(self, uid: int, gid: int) -> str:
        oauth2_mechanisms, oauth2_passdb = self._oauth2_passdb()
        # Every setting of a listener block needs its own line: Dovecot rejects one-line
        # blocks with "Garbage after '{'".
        return f"""\
instance_name = {self.instance_name}
base_dir = {self.work_dir / "run"}
state_dir = {self.work_dir / "state"}
log_path = {self.log_path}
hostname = mail.{MAIL_DOMAIN}
protocols = imap pop3 lmtp
listen = {", ".join(self.addresses)}

ssl = yes
ssl_cert = <{self.cert}
ssl_key = <{self.key}

disable_plaintext_auth = no
auth_mechanisms = plain login{oauth2_mechanisms}
# Without this, every failed login waits about 2 s. Dovecot 2.3 still holds each failure
# until its next 0.5 s timer tick, so a wrong-password test takes up to half a second.
auth_failure_delay = 0
{oauth2_passdb}passdb {{
  driver = passwd-file
  args = {self.passwd_path}
}}
{self._userdb(uid, gid)}mail_location = maildir:~/Maildir
{self._quota_settings()}
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = {self.pop3s_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    port = {self.lmtp_port}
  }}
}}
service auth {{
  # Postfix reaches Dovecot's SASL over TCP, so its smtpd needs no access to our sockets.
  inet_listener sasl {{
    address = 127.0.0.1
    port = {self.auth_port}
  }}
}}
# anvil otherwise delays every later login from an address after one failed (~4 s each).
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{self._native_metrics()}"""
