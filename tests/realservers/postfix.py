"""A private Postfix instance on loopback (``postfix -c DIR``), apart from the system one.

It offers SMTP with STARTTLS, submission (STARTTLS required, then SASL via Dovecot) and
smtps (implicit TLS, SASL via Dovecot). Mail for the Dovecot domain goes to Dovecot's
LMTP; everything else is relayed to a loopback port that refuses connections, so it stays
deferred in the queue. Config, queue and log live in the work directory; data_directory,
which the master opens as the postfix user, in the system temp directory until stop().
"""

import os
import pty
import secrets
import shutil
import smtplib
import ssl
import subprocess
import time
from pathlib import Path

from tests.realservers.dovecot import MAIL_DOMAIN
from tests.realservers.runtime import (
    CONNECT_TIMEOUT_SECONDS,
    Endpoint,
    ServerStartError,
    end_session,
    format_endpoints,
    free_port,
    log_excerpt,
    loopback_endpoints,
    process_alive,
    reachable_dir,
    start_with_fresh_ports,
    wait_for_endpoints,
)

# Internal services as in Debian's master.cf, except that none is chrooted: a chroot
# would need copies of resolv.conf and friends inside the queue directory.
_DAEMON_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """Runs a Postfix instance from ``config_dir`` with the given certificate and key.

    Ports, each on 127.0.0.1 and ::1: ``smtp_port`` (STARTTLS offered, no AUTH),
    ``submission_port`` (TLS required, AUTH after STARTTLS) and ``smtps_port`` (implicit
    TLS, AUTH). ``refused_port`` is the relayhost that never answers. Its log is
    ``log_path``; ``config_dir`` is what ``postqueue -c`` and ``postsuper -c`` take.
    """

    def __init__(
        self, work_dir: Path, cert: Path, key: Path, dovecot_auth_port: int, dovecot_lmtp_port: int
    ) -> None:
        self.work_dir = work_dir
        self.cert = cert
        self.key = key
        self.dovecot_auth_port = dovecot_auth_port
        self.dovecot_lmtp_port = dovecot_lmtp_port
        self.config_dir = work_dir / "config"
        self.queue_dir = work_dir / "queue"
        # The master opens data_directory/master.lock as the postfix user, by full path.
        self.data_dir = reachable_dir(f"postfix-{secrets.token_hex(4)}")
        self.log_path = work_dir / "postfix.log"
        self._take_ports()
        self._master_pid: int | None = None

    def _take_ports(self) -> None:
        self.smtp_port = free_port()
        self.submission_port = free_port()
        self.smtps_port = free_port()
        # Taken from the pool but never bound, so deliveries to it are refused.
        self.refused_port = free_port()

    def start(self, timeout: float = 20.0) -> None:
        """Start Postfix and return once every listener greets with a 220 banner (on other
        ports than first given if one was taken meanwhile: read them after the start)."""
        start_with_fresh_ports(lambda: self._start(timeout), self._take_ports)

    def _start(self, timeout: float) -> None:
        try:
            self._prepare_work_dir()
            master_pid = self._launch()
            self._wait_until_greeting(master_pid, timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Postfix and wait until none of its processes is left."""
        if self._master_pid is not None:
            master_pid, self._master_pid = self._master_pid, None
            # "postfix stop" only signals the master; the wait below makes it final.
            self._postfix("stop")
            # The master calls setsid(), so its pid is the session of all Postfix daemons.
            end_session(master_pid, "Postfix", timeout)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _launch(self) -> int:
        status, output = self._postfix("start")
        if status != 0:
            raise ServerStartError(
                f"postfix -c {self.config_dir} start failed with status {status}:\n"
                f"{output}{log_excerpt(self.log_path)}"
            )
        self._master_pid = self._read_master_pid()
        return self._master_pid

    def _wait_until_greeting(self, master_pid: int, timeout: float) -> None:
        pending = wait_for_endpoints(
            self._endpoints(),
            self._greets,
            timeout,
            still_running=lambda: process_alive(master_pid),
        )
        if pending:
            raise ServerStartError(
                f"Postfix gave no 220 banner on {format_endpoints(pending)} after {timeout}s\n"
                f"{log_excerpt(self.log_path)}"
            )

    def _postfix(self, command: str) -> tuple[int, str]:
        """Run ``postfix -c CONFIG_DIR COMMAND``; return its exit status and output.

        postfix prints errors only when stderr is a terminal, and otherwise logs them
        through the log service, which a failed start never reaches: hence the pty.
        """
        leader, follower = pty.openpty()
        try:
            with subprocess.Popen(
                ["postfix", "-c", str(self.config_dir), command],
                stdin=subprocess.DEVNULL,
                stdout=follower,
                stderr=follower,
            ) as process:
                os.close(follower)
                output = _read_until_closed(leader)
        finally:
            os.close(leader)
        return process.returncode, output.replace("\r\n", "\n")

    def _read_master_pid(self) -> int:
        return int((self.queue_dir / "pid" / "master.pid").read_text().strip())

    def _endpoints(self) -> list[Endpoint]:
        return loopback_endpoints(self.smtp_port, self.submission_port, self.smtps_port)

    def _greets(self, endpoint: Endpoint) -> bool:
        # smtplib raises SMTPConnectError (an OSError) unless the banner is 220.
        try:
            if endpoint[1] == self.smtps_port:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    *endpoint, "localhost", timeout=CONNECT_TIMEOUT_SECONDS, context=_any_cert()
                )
            else:
                smtp = smtplib.SMTP(*endpoint, "localhost", timeout=CONNECT_TIMEOUT_SECONDS)
            with smtp:
                return True
        except OSError:
            return False

    def _prepare_work_dir(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        # "postfix start" creates the queue's subdirectories but not the queue itself.
        self.queue_dir.mkdir(exist_ok=True)
        self.data_dir.mkdir(mode=0o700)
        shutil.chown(self.data_dir, "postfix")
        main_cf = self.config_dir / "main.cf"
        master_cf = self.config_dir / "master.cf"
        main_cf.write_text(self._main_cf())
        master_cf.write_text(self._master_cf())
        # "postfix start" waits about 2.5 s when main.cf is less than a second old.
        an_hour_ago = time.time() - 3600
        for path in (main_cf, master_cf):
            os.utime(path, (an_hour_ago, an_hour_ago))

    def _main_cf(self) -> str:
        return f"""\
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.{MAIL_DOMAIN}
mydomain = {MAIL_DOMAIN}

# No syslog here: postlogd writes the log (maillog_file must be under a listed prefix).
maillog_file = {self.log_path}
maillog_file_prefixes = {self.work_dir}

inet_interfaces = 127.0.0.1, [::1]
inet_protocols = all
mynetworks = 127.0.0.0/8, [::1]/128
# Reverse lookups of ::1 could wait for a resolver the test machine may not have.
smtpd_peername_lookup = no

# Nothing is delivered locally; the Dovecot domain goes to Dovecot over LMTP.
mydestination =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
virtual_mailbox_domains = {MAIL_DOMAIN}
virtual_transport = lmtp:inet:127.0.0.1:{self.dovecot_lmtp_port}

# Everything else goes to a refused loopback port and stays deferred while a test looks.
default_transport = smtp
relay_transport = smtp
relayhost = [127.0.0.1]:{self.refused_port}
smtp_dns_support_level = disabled
queue_run_delay = 3600s
minimal_backoff_time = 3600s
maximal_backoff_time = 3600s

smtpd_tls_chain_files = {self.key}, {self.cert}
smtpd_tls_security_level = may
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{self.dovecot_auth_port}
"""

    def _master_cf(self) -> str:
        # A bare port as service name listens on every inet_interfaces address.
        return f"""\
{self.smtp_port} inet n - n - - smtpd
{self.submission_port} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
{self.smtps_port} inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
{_DAEMON_SERVICES}"""


def _any_cert() -> ssl.SSLContext:
    # Only for the readiness check: a server may deliberately run with a bad certificate.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _read_until_closed(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: every process holding the terminal has closed it
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
