"""Config validation: every problem listed with its key path and line, nothing half-valid."""

from __future__ import annotations

import asyncio
import os
import textwrap
import threading
from pathlib import Path
from typing import Any

import click
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mail_exporter import exporter as exporter_module
from mail_exporter import tls_facts
from mail_exporter.cli import main
from mail_exporter.config.probes import MODULE_TYPES, PROTOCOLS, ModuleConfig, SMTPModule
from mail_exporter.config.root import default_config, load_config, parse_config
from mail_exporter.config.validation import ConfigError
from mail_exporter.durations import format_duration, parse_duration
from mail_exporter.exporter import Exporter
from mail_exporter.probes import PROTOCOL_PROBES
from tests.realservers.oauth import new_app_certificate, new_service_account
from tests.realservers.pki import new_rsa_key, write_key

VALID_MODULE = "modules:\n  m:\n    protocol: smtp\n"
OAUTH2_AUTH = (
    "modules:\n  m:\n    protocol: imap\n    tls: implicit\n    auth:\n      username: u\n"
    "      mechanism: xoauth2\n"
)  # oauth2 follows on line 8
CLIENT = "token_url: https://login.example.com/t, client_id: c, scope: s"

IMAP_MODULE = "modules:\n  m:\n    protocol: imap\n    tls: implicit\n"
IMAP_LOGIN = IMAP_MODULE + "    auth: {username: u, password_env: HOME}\n"

INVALID_CONFIGS: list[tuple[str, str, list[str]]] = [
    (
        "unknown top-level key",
        "colectors: {}\n",
        ["colectors (line 1): unknown key (did you mean collectors?)"],
    ),
    (
        "unknown module key",
        VALID_MODULE + "    tsl: starttls\n",
        ["modules.m.tsl (line 4): unknown key"],
    ),
    (
        "bad duration",
        "global:\n  interval: 30x\n",
        [
            "global.interval (line 2): invalid duration '30x': use a number and a unit such as 500ms, 30s, 5m"
        ],
    ),
    (
        "number as duration",
        VALID_MODULE + "    timeout: 10\n",
        [
            "modules.m.timeout (line 4): invalid duration 10: use a number and a unit such as 500ms, 30s, 5m"
        ],
    ),
    (
        "zero duration",
        "global:\n  interval: 0s\n",
        ["global.interval (line 2): duration '0s' must be greater than zero"],
    ),
    (
        "bad protocol",
        "modules:\n  m:\n    protocol: smtpx\n",
        ["modules.m.protocol (line 3): Input should be 'smtp', 'imap' or 'pop3'"],
    ),
    (
        "missing protocol",
        "modules:\n  m:\n    tls: implicit\n",
        ["modules.m.protocol (line 2): required key is missing"],
    ),
    (
        "require_tls without starttls",
        VALID_MODULE + "    require_tls: true\n",
        ["modules.m (line 2): require_tls applies only to tls: starttls"],
    ),
    (
        "revocation without TLS",
        VALID_MODULE + "    revocation: {crl: true}\n",
        ["modules.m (line 2): revocation applies only to a module with tls: starttls or implicit"],
    ),
    (
        "unknown revocation method",
        VALID_MODULE + "    tls: implicit\n    revocation: {crl: true, stapled: true}\n",
        ["modules.m.revocation.stapled (line 5): unknown key"],
    ),
    (
        "ehlo_name where it was before it moved into the smtp section",
        VALID_MODULE + "    ehlo_name: monitor.example.com\n",
        [
            "modules.m.ehlo_name (line 4): ehlo_name has moved into the module's smtp section: "
            "smtp: {ehlo_name: ...}"
        ],
    ),
    (
        "another protocol's section",
        "modules:\n  m:\n    protocol: imap\n    smtp: {ehlo_name: monitor.example.com}\n",
        ["modules.m.smtp (line 4): unknown key"],
    ),
    (
        "an unknown key in the protocol's section",
        VALID_MODULE + "    smtp: {helo_name: monitor.example.com}\n",
        ["modules.m.smtp.helo_name (line 4): unknown key (did you mean ehlo_name?)"],
    ),
    (
        "AUTH LOGIN, which POP3 does not have",
        "modules:\n  m:\n    protocol: pop3\n    tls: implicit\n"
        "    auth: {username: u, password_env: HOME, mechanism: login}\n",
        [
            "modules.m.auth.mechanism (line 5): Input should be 'auto', 'plain', 'xoauth2' or "
            "'oauthbearer'"
        ],
    ),
    (
        "login without TLS",
        "modules:\n  m:\n    protocol: imap\n    auth: {username: u, password_env: HOME}\n",
        [
            "modules.m (line 2): auth with tls: none sends the password in cleartext: "
            "add allow_plaintext_auth: true to do that on purpose, or use tls: starttls or implicit"
        ],
    ),
    (
        "allow_plaintext_auth where the login always has TLS",
        "modules:\n  m:\n    protocol: imap\n    tls: starttls\n    allow_plaintext_auth: true\n"
        "    auth: {username: u, password_env: HOME}\n",
        [
            "modules.m (line 2): allow_plaintext_auth applies only to a module with auth and "
            "tls: none, or tls: starttls with require_tls: false"
        ],
    ),
    (
        "allow_plaintext_auth without a login",
        "modules:\n  m:\n    protocol: imap\n    allow_plaintext_auth: true\n",
        [
            "modules.m (line 2): allow_plaintext_auth applies only to a module with auth and "
            "tls: none, or tls: starttls with require_tls: false"
        ],
    ),
    (
        "relay check address that would end the command",
        VALID_MODULE + "    smtp:\n      relay_check:\n"
        '        mail_from: "a@outside.example>\\r\\nDATA"\n        rcpt_to: b@elsewhere.example\n',
        [
            "modules.m.smtp.relay_check.mail_from (line 6): 'a@outside.example>\\r\\nDATA' is "
            "not a plain mailbox address: local-part@domain in ASCII, without spaces, quotes, "
            "<> or line breaks"
        ],
    ),
    (
        "relay check addresses in brackets, with a space, without a domain",
        VALID_MODULE + "    smtp:\n      relay_check:\n"
        "        {mail_from: <a@outside.example>, rcpt_to: b @elsewhere.example}\n"
        "      enumeration_check: {address: postmaster}\n",
        [
            f"modules.m.smtp.{key} (line {line}): {value!r} is not a plain mailbox address: "
            "local-part@domain in ASCII, without spaces, quotes, <> or line breaks"
            for key, line, value in [
                ("relay_check.mail_from", 6, "<a@outside.example>"),
                ("relay_check.rcpt_to", 6, "b @elsewhere.example"),
                ("enumeration_check.address", 7, "postmaster"),
            ]
        ],
    ),
    (
        "relay check without a recipient",
        VALID_MODULE + "    smtp: {relay_check: {mail_from: a@outside.example}}\n",
        ["modules.m.smtp.relay_check.rcpt_to (line 4): required key is missing"],
    ),
    (
        "relay check after a login the module does not have",
        VALID_MODULE + "    smtp:\n      relay_check: {mail_from: a@outside.example, "
        "rcpt_to: b@elsewhere.example, authenticated: true}\n",
        [
            "modules.m (line 2): smtp.relay_check with authenticated: true checks relaying "
            "after the module's login: add auth, or set authenticated: false"
        ],
    ),
    (
        "checks without a login in a module that logs in",
        VALID_MODULE + "    tls: starttls\n    auth: {username: u, password_env: HOME}\n"
        "    smtp:\n      relay_check: {mail_from: a@outside.example, rcpt_to: b@elsewhere.example}\n"
        "      enumeration_check: {address: postmaster@example.org}\n",
        [
            "modules.m (line 2): smtp.relay_check and smtp.enumeration_check without a login "
            "cannot run in a module with auth (they come after the login): put them in a "
            "module without auth; relay_check with authenticated: true checks relaying after "
            "the login"
        ],
    ),
    (
        "server name TLS cannot send",
        VALID_MODULE + "    tls_config: {server_name: mail..example.com}\n",
        [
            "modules.m.tls_config.server_name (line 4): server_name 'mail..example.com' is not "
            "a host name: labels of 1 to 63 characters between dots"
        ],
    ),
    (
        "missing module reference",
        VALID_MODULE + "targets:\n  - {name: a, address: 'h:25', module: nope}\n",
        ["targets[0].module (line 5): unknown module 'nope' (modules: m)"],
    ),
    (
        "duplicate target",
        VALID_MODULE + "targets:\n  - {name: a, address: 'h:25', module: m}\n"
        "  - {name: a, address: 'h:26', module: m}\n",
        ["targets[1].name (line 6): duplicate target name 'a'"],
    ),
    (
        "bad port",
        VALID_MODULE + "targets:\n  - {name: a, address: 'h:0', module: m}\n",
        [
            "targets[0].address (line 5): invalid address 'h:0': port must be a number from 1 to 65535"
        ],
    ),
    (
        "ipv6 without brackets",
        VALID_MODULE + "targets:\n  - {name: a, address: '::1:25', module: m}\n",
        ["targets[0].address (line 5): invalid address '::1:25': write IPv6 addresses as [::1]:25"],
    ),
    (
        "missing secret file",
        VALID_MODULE + "    auth: {username: u, password_file: /nonexistent/pass}\n",
        [
            "modules.m.auth (line 4): password_file '/nonexistent/pass' cannot be read: "
            "No such file or directory"
        ],
    ),
    (
        "unset secret variable",
        VALID_MODULE + "    auth: {username: u, password_env: MAIL_EXPORTER_TEST_UNSET}\n",
        ["modules.m.auth (line 4): environment variable MAIL_EXPORTER_TEST_UNSET is not set"],
    ),
    (
        "both secret sources",
        VALID_MODULE
        + "    auth: {username: u, password_env: HOME, password_file: /etc/hostname}\n",
        ["modules.m.auth (line 4): set exactly one of password_file and password_env"],
    ),
    (
        "password in the config",
        VALID_MODULE + "    auth: {username: u, password: hunter2}\n",
        [
            "modules.m.auth.password (line 4): unknown key: passwords never go in the config; "
            "use password_file or password_env"
        ],
    ),
    (
        "duplicate key",
        "global:\n  interval: 30s\n  interval: 60s\n",
        ["global.interval (line 3): duplicate key"],
    ),
    (
        "missing CA file",
        VALID_MODULE + "    tls_config: {ca_file: /nonexistent/ca.pem}\n",
        [
            "modules.m.tls_config (line 4): ca_file '/nonexistent/ca.pem' cannot be read: No such file or directory"
        ],
    ),
    (
        "CA file a device",
        "collectors:\n  dns: {mta_sts_ca_file: /dev/zero}\n",
        [
            "collectors.dns.mta_sts_ca_file (line 2): CA file '/dev/zero' cannot be read: not a regular file (a character device)"
        ],
    ),
    (
        "password file a directory",
        VALID_MODULE + "    auth: {username: u, password_file: /}\n",
        [
            "modules.m.auth (line 4): password_file '/' cannot be read: not a regular file (a directory)"
        ],
    ),
    (
        "alias cycle in a list",
        "targets: &t [*t]\n",
        ["targets[0] (line 1): alias *t is inside the node it names: a cycle"],
    ),
    (
        "alias cycle in a mapping",
        "modules: &m\n  m: {protocol: smtp, tls_config: *m}\n",
        ["modules.m.tls_config (line 2): alias *m is inside the node it names: a cycle"],
    ),
    (
        "5000-deep nesting",
        "modules:\n  m: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
        ["modules.m.a.a.a.a.a.a... (line 2): nested deeper than 100 levels"],
    ),
    (
        "alias nesting too deep",
        "x: &x " + "[" * 99 + "]" * 99 + "\ny: [*x]\n",
        ["y[0] (line 2): alias *x nests values deeper than 100 levels"],
    ),
    (
        "lone surrogate in a module name",
        'modules:\n  "\\udc80": {protocol: smtp}\n',
        [
            "modules (line 2): lone surrogate (a \\uD800-\\uDFFF escape) is not a character: "
            "write the character itself or a \\U escape"
        ],
    ),
    (
        "lone surrogate in a value",
        VALID_MODULE + 'targets:\n  - {name: "a\\ud83d", address: "h:25", module: m}\n',
        [
            "targets[0].name (line 5): lone surrogate (a \\uD800-\\uDFFF escape) is not a character: "
            "write the character itself or a \\U escape"
        ],
    ),
    (
        "control character in a module name",
        'modules:\n  "m\\e[2J": {protocol: smtp}\n',
        [
            "modules.'m\\x1b[2J'.[key] (line 2): name 'm\\x1b[2J' must be printable (no control characters)"
        ],
    ),
    (
        "module name too long",
        f"modules:\n  {'m' * 129}: {{protocol: smtp}}\n",
        [f"modules.{'m' * 129}.[key] (line 2): a name must have 1 to 128 characters"],
    ),
    (
        "target name too long",
        VALID_MODULE + f"targets:\n  - {{name: {'t' * 129}, address: 'h:25', module: m}}\n",
        ["targets[0].name (line 5): String should have at most 128 characters"],
    ),
    (
        "fullwidth digits as a port",
        VALID_MODULE + "targets:\n  - {name: a, address: 'h:\uff12\uff15', module: m}\n",
        [
            "targets[0].address (line 5): invalid address 'h:\uff12\uff15': port must be a number from 1 to 65535"
        ],
    ),
    (
        "Arabic-Indic digits as a port",
        VALID_MODULE + "targets:\n  - {name: a, address: 'h:\u0662\u0665', module: m}\n",
        [
            "targets[0].address (line 5): invalid address 'h:\u0662\u0665': port must be a number from 1 to 65535"
        ],
    ),
    (
        "superscript digit in a port",
        VALID_MODULE + "targets:\n  - {name: a, address: 'h:2\u00b2', module: m}\n",
        [
            "targets[0].address (line 5): invalid address 'h:2\u00b2': port must be a number from 1 to 65535"
        ],
    ),
    (
        "fullwidth digits in a duration",
        "global:\n  interval: \uff13\uff10s\n",
        [
            "global.interval (line 2): invalid duration '\uff13\uff10s': use a number and a unit such as 500ms, 30s, 5m"
        ],
    ),
    (
        "duration of 400 digits",
        f"global:\n  interval: {'9' * 400}s\n",
        [
            f"global.interval (line 2): invalid duration '{'9' * 400}s': use a number and a unit such as 500ms, 30s, 5m"
        ],
    ),
    (
        "integer beyond Python's digit limit",
        f"global:\n  concurrency: {'9' * 5000}\n",
        [
            "global.concurrency (line 2): not a valid int: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits"
        ],
    ),
    (
        "impossible timestamp",
        "global:\n  interval: 2001-13-01\n",
        ["global.interval (line 2): not a valid timestamp: month must be in 1..12"],
    ),
    (
        "round trip sends with an imap module",
        "modules:\n  i: {protocol: imap}\n"
        "roundtrip:\n  - name: r\n    send: {address: 'h:587', module: i, from: a@x.org, to: b@x.org}\n"
        "    receive: {address: 'h:993', module: i}\n",
        [
            "roundtrip[0].send.module (line 5): module 'i' must have protocol smtp",
            "roundtrip[0].receive.module (line 6): module 'i' needs auth: the mailbox is read after a login",
        ],
    ),
    (
        "round trip to a missing module",
        "roundtrip:\n  - name: r\n    send: {address: 'h:587', module: s, from: a@x.org, to: b@x.org}\n"
        "    receive: {address: 'h:993', module: i, mailbox: INBOX}\n",
        [
            "roundtrip[0].send.module (line 3): unknown module 's' (modules: none defined)",
            "roundtrip[0].receive.module (line 4): unknown module 'i' (modules: none defined)",
        ],
    ),
    (
        "round trip reads IMAP mailboxes with POP3",
        "modules:\n  s: {protocol: smtp}\n"
        "  p: {protocol: pop3, tls: implicit, auth: {username: u, password_env: PATH}}\n"
        "roundtrip:\n  - name: r\n    send: {address: 'h:587', module: s, from: a@x.org, to: b@x.org}\n"
        "    receive:\n      address: 'h:995'\n      module: p\n      mailbox: Archive\n"
        "      junk_mailbox: Junk\n      cleanup_mailbox: Trash\n",
        [
            "roundtrip[0].receive.mailbox (line 10): POP3 reads only the inbox: use an imap module for another mailbox",
            "roundtrip[0].receive.junk_mailbox (line 11): junk_mailbox needs an imap module: POP3 has no other mailboxes",
            "roundtrip[0].receive.cleanup_mailbox (line 12): cleanup_mailbox needs an imap module: POP3 has no other mailboxes",
        ],
    ),
    (
        "round trip address",
        "roundtrip:\n  - name: r\n    send: {address: 'h:587', module: s, from: nobody, to: b@x.org}\n",
        [
            "roundtrip[0].send.from (line 3): String should match pattern '^[^@\\s<>]+@[^@\\s<>]+$'",
            "roundtrip[0].receive (line 2): required key is missing",
            "roundtrip[0].send.module (line 3): unknown module 's' (modules: none defined)",
        ],
    ),
    (
        "round trip site that is no label value",
        "modules:\n  s: {protocol: smtp}\n"
        "  i: {protocol: imap, tls: implicit, auth: {username: u, password_env: PATH}}\n"
        "roundtrip:\n  - name: r\n    site: on prem\n"
        "    send: {address: 'h:587', module: s, from: a@x.org, to: b@x.org}\n"
        "    receive: {address: 'h:993', module: i}\n"
        '  - name: q\n    site: "m365\\n"\n'
        "    send: {address: 'h:587', module: s, from: a@x.org, to: b@x.org}\n"
        "    receive: {address: 'h:993', module: i}\n",
        [
            "roundtrip[0].site (line 6): String should match pattern '^[A-Za-z0-9_.:-]*$'",
            "roundtrip[1].site (line 10): String should match pattern '^[A-Za-z0-9_.:-]*$'",
        ],
    ),
    (
        "round trip graph legs",
        "modules:\n  s: {protocol: smtp}\n"
        "  p: {protocol: pop3, tls: implicit, auth: {username: u, password_env: PATH}}\n"
        "roundtrip:\n  - name: r\n"
        "    send: {method: grap, address: 'h:587', module: s, from: a@x.org, to: b@x.org}\n"
        "    receive: {method: graph, address: 'h:993', module: s, mailbox: a/b, token: {},\n"
        "              base_url: 'http://graph.example.com/v1.0', junk_folder: ''}\n"
        "  - name: q\n"
        "    send: {method: graph, mailbox: m, to: b@x.org, token: {token_command: [t]},\n"
        "           base_url: 'https://127.0.0.1:1/v1.0?x=1', timeout: 0s, from: me}\n"
        "    receive: {method: imap, address: 'h:995', module: p}\n",
        [
            "roundtrip[0].send.method (line 6): Input should be 'smtp' or 'graph'",
            "roundtrip[0].receive.mailbox (line 7): 'a/b' must be printable, without spaces, / \\ ? or #",
            "roundtrip[0].receive.token (line 7): set exactly one token source: client_credentials, refresh_token, jwt_bearer, token_command, token_file",
            "roundtrip[0].receive.base_url (line 8): base_url must use https:// (http:// only to a loopback address such as 127.0.0.1)",
            "roundtrip[0].receive.junk_folder (line 8): String should have at least 1 character",
            "roundtrip[0].receive.address (line 7): unknown key",
            "roundtrip[0].receive.module (line 7): unknown key",
            "roundtrip[1].send.base_url (line 11): base_url must not hold a ?query: the requests add their own",
            "roundtrip[1].send.timeout (line 11): duration '0s' must be greater than zero",
            "roundtrip[1].send.from (line 11): String should match pattern '^[^@\\s<>]+@[^@\\s<>]+$'",
            "roundtrip[1].receive.module (line 12): module 'p' must have protocol imap",
        ],
    ),
    (
        "a route's token source named as a module's",
        "modules:\n  r/send: {protocol: imap, tls: implicit, auth: {username: u, mechanism: xoauth2,\n"
        "    oauth2: {token_command: [a]}}}\n"
        "roundtrip:\n  - name: r\n"
        "    send: {method: graph, mailbox: m, to: b@x.org, token: {token_command: [b]}}\n"
        "    receive: {method: graph, mailbox: m, token: {token_command: [b]}}\n",
        [
            "(top level) (line 1): two token sources would both be named 'r/send' in the metrics (a module's and a round-trip route's): rename the module or the route",
        ],
    ),
    (
        "duplicate postfix instance",
        "collectors:\n  postfix_queue:\n    instances:\n"
        "      - {config_directory: /etc/postfix}\n      - {config_directory: /etc/postfix-out}\n",
        ["collectors.postfix_queue.instances[1].name (line 5): duplicate instance name 'postfix'"],
    ),
    (
        "tls_scan without TLS",
        VALID_MODULE + "    tls_scan: true\n",
        ["modules.m (line 2): tls_scan applies only to tls: starttls or implicit"],
    ),
    (
        "tls_scan neither a switch nor a section",
        VALID_MODULE + "    tls: implicit\n    tls_scan: hourly\n",
        [
            "modules.m.tls_scan (line 5): tls_scan takes true, false or a section such as "
            "{interval: 1h}"
        ],
    ),
    (
        "tls_scan with a zero interval",
        VALID_MODULE + "    tls: starttls\n    tls_scan: {interval: 0s}\n",
        ["modules.m.tls_scan.interval (line 5): duration '0s' must be greater than zero"],
    ),
    (
        "an unknown key in tls_scan",
        VALID_MODULE + "    tls: starttls\n    tls_scan: {every: 1h}\n",
        ["modules.m.tls_scan.every (line 5): unknown key"],
    ),
    (
        "xoauth2 without a token source",
        OAUTH2_AUTH,
        ["modules.m.auth (line 5): mechanism xoauth2 needs oauth2: the source of its access token"],
    ),
    (
        "oauth2 with a password",
        OAUTH2_AUTH + "      password_env: HOME\n      oauth2: {token_file: /etc/hostname}\n",
        [
            "modules.m.auth (line 5): password_file and password_env do not go with oauth2: "
            "the access token is the secret"
        ],
    ),
    (
        "oauth2 with a password mechanism",
        OAUTH2_AUTH.replace("xoauth2", "plain") + "      oauth2: {token_file: /etc/hostname}\n",
        [
            "modules.m.auth (line 5): oauth2 logs in with mechanism: xoauth2 or oauthbearer, not plain"
        ],
    ),
    (
        "two token sources",
        OAUTH2_AUTH + "      oauth2: {token_file: /etc/hostname, token_command: [helper]}\n",
        [
            "modules.m.auth.oauth2 (line 8): set exactly one token source: client_credentials, "
            "refresh_token, jwt_bearer, token_command, token_file (found token_command and token_file)"
        ],
    ),
    (
        "no token source",
        OAUTH2_AUTH + "      oauth2: {}\n",
        [
            "modules.m.auth.oauth2 (line 8): set exactly one token source: client_credentials, "
            "refresh_token, jwt_bearer, token_command, token_file"
        ],
    ),
    (
        "every problem of a token source at once",
        OAUTH2_AUTH + "      oauth2:\n        client_credentials:\n"
        "          token_url: http://login.example.com/t\n          client_id: ''\n"
        "          client_secret: hunter2\n",
        [
            "modules.m.auth.oauth2.client_credentials.token_url (line 10): token_url must use "
            "https:// (http:// only to a loopback address such as 127.0.0.1)",
            "modules.m.auth.oauth2.client_credentials.client_id (line 11): String should have at "
            "least 1 character",
            "modules.m.auth.oauth2.client_credentials.scope (line 9): required key is missing",
            "modules.m.auth.oauth2.client_credentials.client_secret (line 12): unknown key: "
            "secrets never go in the config; use client_secret_file or client_secret_env",
        ],
    ),
    (
        "token_url with a password",
        OAUTH2_AUTH + "      oauth2: {client_credentials: {"
        "token_url: 'https://app:pw@login.example.com/t', client_id: c, scope: s, "
        "client_secret_env: HOME}}\n",
        [
            "modules.m.auth.oauth2.client_credentials.token_url (line 8): token_url must not hold "
            "a user, a password or a #fragment"
        ],
    ),
    (
        "token_url with a control character",
        OAUTH2_AUTH + "      oauth2: {client_credentials: {"
        'token_url: "https://login.example.com/t\\e[2J", client_id: c, scope: s, '
        "client_secret_env: HOME}}\n",
        [
            "modules.m.auth.oauth2.client_credentials.token_url (line 8): token_url must be "
            "printable and at most 2048 characters"
        ],
    ),
    (
        "client credentials without a credential",
        OAUTH2_AUTH + f"      oauth2: {{client_credentials: {{{CLIENT}}}}}\n",
        [
            "modules.m.auth.oauth2.client_credentials (line 8): set one of client_secret_file, "
            "client_secret_env, or certificate_file with private_key_file"
        ],
    ),
    (
        "client credentials with a secret and a certificate",
        OAUTH2_AUTH + f"      oauth2: {{client_credentials: {{{CLIENT}, client_secret_env: HOME, "
        "certificate_file: /etc/hostname, private_key_file: /etc/hostname}}\n",
        [
            "modules.m.auth.oauth2.client_credentials (line 8): set one of client_secret_file, "
            "client_secret_env, or certificate_file with private_key_file"
        ],
    ),
    (
        "a certificate without its key",
        OAUTH2_AUTH + f"      oauth2: {{client_credentials: {{{CLIENT}, "
        "certificate_file: /etc/hostname}}\n",
        [
            "modules.m.auth.oauth2.client_credentials (line 8): certificate_file and "
            "private_key_file go together"
        ],
    ),
    (
        "missing client secret file",
        OAUTH2_AUTH + f"      oauth2: {{client_credentials: {{{CLIENT}, "
        "client_secret_file: /nonexistent/secret}}\n",
        [
            "modules.m.auth.oauth2.client_credentials (line 8): client_secret_file "
            "'/nonexistent/secret' cannot be read: No such file or directory"
        ],
    ),
    (
        "unset client secret variable",
        OAUTH2_AUTH + f"      oauth2: {{client_credentials: {{{CLIENT}, "
        "client_secret_env: MAIL_EXPORTER_TEST_UNSET}}\n",
        [
            "modules.m.auth.oauth2.client_credentials (line 8): environment variable "
            "MAIL_EXPORTER_TEST_UNSET is not set"
        ],
    ),
    (
        "certificate file that holds no certificate",
        OAUTH2_AUTH + f"      oauth2: {{client_credentials: {{{CLIENT}, "
        "certificate_file: /etc/hostname, private_key_file: /etc/hostname}}\n",
        [
            "modules.m.auth.oauth2.client_credentials (line 8): certificate_file holds no PEM "
            "certificate"
        ],
    ),
    (
        "missing refresh token file",
        OAUTH2_AUTH + "      oauth2: {refresh_token: {token_url: https://h/t, client_id: c, "
        "refresh_token_file: /nonexistent/refresh}}\n",
        [
            "modules.m.auth.oauth2.refresh_token (line 8): refresh_token_file "
            "'/nonexistent/refresh' cannot be read: No such file or directory"
        ],
    ),
    (
        "refresh token in the config",
        OAUTH2_AUTH + "      oauth2: {refresh_token: {token_url: https://h/t, client_id: c, "
        "refresh_token: 1//0abc}}\n",
        [
            "modules.m.auth.oauth2.refresh_token.refresh_token_file (line 8): required key is missing",
            "modules.m.auth.oauth2.refresh_token.refresh_token (line 8): unknown key: secrets never "
            "go in the config; use refresh_token_file",
        ],
    ),
    (
        "jwt bearer with a key file and a service account",
        OAUTH2_AUTH + "      oauth2: {jwt_bearer: {token_url: https://h/t, scope: s, "
        "service_account_file: /etc/hostname, issuer: me}}\n",
        [
            "modules.m.auth.oauth2.jwt_bearer (line 8): set one of service_account_file, or issuer "
            "with private_key_file"
        ],
    ),
    (
        "service account file that is none",
        OAUTH2_AUTH + "      oauth2: {jwt_bearer: {token_url: https://h/t, scope: s, "
        "service_account_file: /etc/hostname}}\n",
        ["modules.m.auth.oauth2.jwt_bearer (line 8): service_account_file is not JSON"],
    ),
    (
        "private key in the config",
        OAUTH2_AUTH + "      oauth2: {jwt_bearer: {token_url: https://h/t, scope: s, "
        "issuer: me, private_key: x}}\n",
        [
            "modules.m.auth.oauth2.jwt_bearer.private_key (line 8): unknown key: keys never go in "
            "the config; use private_key_file"
        ],
    ),
    (
        "missing token file",
        OAUTH2_AUTH + "      oauth2: {token_file: /nonexistent/token}\n",
        [
            "modules.m.auth.oauth2 (line 8): token_file '/nonexistent/token' cannot be read: "
            "No such file or directory"
        ],
    ),
    (
        "empty token command",
        OAUTH2_AUTH + "      oauth2: {token_command: []}\n",
        [
            "modules.m.auth.oauth2.token_command (line 8): List should have at least 1 item "
            "after validation, not 0"
        ],
    ),
    (
        "access token in the config",
        OAUTH2_AUTH + "      oauth2: {access_token: x}\n",
        [
            "modules.m.auth.oauth2.access_token (line 8): unknown key: tokens never go in the "
            "config; use token_file or token_command"
        ],
    ),
    ("not a mapping", "- a\n- b\n", ["(top level) (line 1): the file must be a mapping of keys"]),
    (
        "broken YAML",
        "global: [\n",
        ["invalid YAML (line 2): expected the node content, but found '<stream end>'"],
    ),
    (
        "imap mailboxes without a login",
        IMAP_MODULE + "    imap: {mailboxes: [{name: INBOX}]}\n",
        ["modules.m (line 2): imap.mailboxes are read after the login: add auth"],
    ),
    (
        "imap mailbox name with a quote",
        IMAP_LOGIN + "    imap: {mailboxes: [{name: 'a\"b'}]}\n",
        [
            "modules.m.imap.mailboxes[0].name (line 6): mailbox name 'a\"b' must be 1 to 255 "
            "printable ASCII characters without quotes or backslashes (modified UTF-7 for "
            "other scripts)"
        ],
    ),
    (
        "imap mailbox name with a line break",
        IMAP_LOGIN + '    imap: {mailboxes: [{name: "a\\r\\nb"}]}\n',
        [
            "modules.m.imap.mailboxes[0].name (line 6): mailbox name 'a\\r\\nb' must be 1 to "
            "255 printable ASCII characters without quotes or backslashes (modified UTF-7 for "
            "other scripts)"
        ],
    ),
    (
        "too many imap mailboxes",
        IMAP_LOGIN
        + "    imap: {mailboxes: ["
        + ", ".join(f"{{name: m{i}}}" for i in range(51))
        + "]}\n",
        [
            "modules.m.imap.mailboxes (line 6): List should have at most 50 items after validation, not 51"
        ],
    ),
    (
        "imap mailbox twice",
        IMAP_LOGIN + "    imap: {mailboxes: [{name: A}, {name: A}]}\n",
        ["modules.m.imap (line 6): mailboxes named more than once: A"],
    ),
    (
        "unknown imap mailbox kind",
        IMAP_LOGIN + "    imap: {mailboxes: [{name: A, kind: backup}]}\n",
        ["modules.m.imap.mailboxes[0].kind (line 6): Input should be 'archive' or 'shared'"],
    ),
    (
        "zero newest_max_age",
        IMAP_LOGIN + "    imap: {mailboxes: [{name: A, newest_max_age: 0s}]}\n",
        [
            "modules.m.imap.mailboxes[0].newest_max_age (line 6): duration '0s' must be greater than zero"
        ],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [(t, e) for _, t, e in INVALID_CONFIGS],
    ids=[name for name, _, _ in INVALID_CONFIGS],
)
def test_invalid_config_message(text: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "test.yml")
    assert raised.value.problems == expected


def test_every_problem_is_listed_at_once() -> None:
    text = textwrap.dedent("""\
        global:
          interval: soon
        modules:
          m: {protocol: smtp, tls: sometimes}
        targets:
          - {name: a, address: nohost, module: missing}
        """)
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "test.yml")
    assert len(raised.value.problems) == 4
    report = str(raised.value)
    assert report.startswith("test.yml: 4 problem(s)")
    for fragment in (
        "global.interval (line 2)",
        "modules.m.tls (line 4)",
        "targets[0].address (line 6)",
        "targets[0].module (line 6)",
    ):
        assert fragment in report


def test_password_from_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "pass"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("PROBE_PASSWORD", "from-env")
    config = parse_config(
        textwrap.dedent(f"""\
        modules:
          a: {{protocol: imap, tls: implicit, auth: {{username: u, password_file: {secret}}}}}
          b: {{protocol: imap, tls: implicit, auth: {{username: u, password_env: PROBE_PASSWORD}}}}
        """)
    )
    assert config.modules["a"].auth is not None and config.modules["a"].auth.password == "s3cret"
    assert config.modules["b"].auth is not None and config.modules["b"].auth.password == "from-env"
    assert "s3cret" not in repr(config)
    assert sorted(config.secrets()) == ["from-env", "s3cret"]


def test_token_sources_read_their_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each token source reads its secrets with the config; /config shows where from, never
    what; a source in two modules is one, named after the first; a reload reads it equal."""
    new_app_certificate(tmp_path, "app")
    new_service_account(tmp_path / "account.json", "probe@project.iam.gserviceaccount.com")
    write_key(tmp_path / "issuer.pem", new_rsa_key())
    for name, content in {"client.secret": "client-s3cret", "refresh.token": "1//refresh-s3cret",
                          "access.token": "access-s3cret"}.items():  # fmt: skip
        (tmp_path / name).write_text(content + "\n")
    monkeypatch.setenv("MAIL_TEST_CLIENT_SECRET", "env-client-s3cret")
    url = "https://login.example.com/tenant/oauth2/v2.0/token"
    sources = {
        "secret": f"client_credentials: {{token_url: '{url}', client_id: app, scope: s, "
        "client_secret_file: client.secret}",
        "from_env": f"client_credentials: {{token_url: '{url}', client_id: app, scope: s, "
        "client_secret_env: MAIL_TEST_CLIENT_SECRET}",
        "certificate": f"client_credentials: {{token_url: '{url}', client_id: app, scope: s, "
        "certificate_file: app.crt, private_key_file: app.key}",
        "refresh": f"refresh_token: {{token_url: '{url}', client_id: app, "
        "refresh_token_file: refresh.token, client_secret_env: MAIL_TEST_CLIENT_SECRET}",
        "google": "jwt_bearer: {token_url: 'https://oauth2.googleapis.com/token', "
        "service_account_file: account.json, subject: probe@example.com, scope: s}",
        "issuer": f"jwt_bearer: {{token_url: '{url}', issuer: me, private_key_file: issuer.pem, "
        "scope: s}",
        "command": "token_command: [helper, --account, probe]",
        "file": "token_file: access.token",
        "same_as_secret": f"client_credentials: {{token_url: '{url}', client_id: app, scope: s, "
        "client_secret_file: client.secret}",
    }
    path = tmp_path / "config.yml"
    path.write_text(
        "modules:\n"
        + "".join(
            f"  {name}:\n    protocol: imap\n    tls: implicit\n    auth:\n"
            f"      username: probe@example.com\n      mechanism: oauthbearer\n"
            f"      oauth2: {{{source}}}\n"
            for name, source in sources.items()
        )
    )
    exporter = Exporter(path, {})
    config = exporter.config
    named = {name: config.modules[name].auth.oauth2.name for name in sources}  # type: ignore[union-attr]
    assert named == {name: name for name in sources} | {"same_as_secret": "secret"}
    assert len(config.token_sources()) == len(sources) - 1
    secrets = config.secrets()
    for secret in ("client-s3cret", "env-client-s3cret", "1//refresh-s3cret", "access-s3cret"):
        assert secret in secrets
    keys = [secret for secret in secrets if "PRIVATE KEY" in secret]
    assert len(keys) == 3  # certificate, google, issuer
    shown = exporter.shown_config()
    assert [secret for secret in secrets if secret in shown] == []
    assert f"client_secret_file: {tmp_path / 'client.secret'}" in shown
    assert "token_command:\n        - helper" in shown
    assert parse_config(shown) == config == load_config(path)  # a reload keeps every module
    samples = {(s.name, s.labels["source"]) for f in exporter.collect() for s in f.samples
               if s.name == "mail_oauth2_token_fetches_total"}  # fmt: skip
    assert samples == {("mail_oauth2_token_fetches_total", name) for name in named.values()}
    exporter.stop()


@pytest.mark.parametrize(
    ("make_key", "problem"),
    [
        (
            lambda: ec.generate_private_key(ec.SECP256R1()),
            "private_key_file is not an RSA key (RS256 needs one)",
        ),
        (
            lambda: new_rsa_key(1024),
            "private_key_file is an RSA key of 1024 bits: RS256 needs 2048+",
        ),
        (
            lambda: new_rsa_key(),
            "private_key_file is not the key of the certificate in certificate_file",
        ),
    ],
    ids=["EC", "short", "another key"],
)
def test_keys_that_cannot_sign(tmp_path: Path, make_key: Any, problem: str) -> None:
    app = new_app_certificate(tmp_path, "app")
    write_key(app.private_key_file, make_key())
    text = (
        "modules:\n  m:\n    protocol: smtp\n    tls: starttls\n    auth:\n      username: u\n"
        "      mechanism: xoauth2\n      oauth2: {client_credentials: {token_url: https://h/t, "
        f"client_id: c, scope: s, certificate_file: {app.certificate_file}, "
        f"private_key_file: {app.private_key_file}}}}}\n"
    )
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "test.yml")
    assert raised.value.problems == [
        f"modules.m.auth.oauth2.client_credentials (line 8): {problem}"
    ]


def test_an_encrypted_key_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "issuer.pem"
    key.write_bytes(
        new_rsa_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    text = (
        "modules:\n  m: {protocol: smtp, tls: starttls, auth: {username: u, mechanism: xoauth2, "
        "oauth2: {jwt_bearer: {token_url: https://h/t, scope: s, issuer: me, "
        f"private_key_file: {key}}}}}}}}}\n"
    )
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "test.yml")
    assert raised.value.problems == [
        "modules.m.auth.oauth2.jwt_bearer (line 2): private_key_file is encrypted: "
        "give the key without a passphrase"
    ]


def test_defaults_and_starttls_requirement() -> None:
    config = parse_config(
        "modules:\n  a: {protocol: smtp, tls: starttls}\n"
        "  b: {protocol: smtp, tls: starttls, require_tls: false}\n"
    )
    assert config.global_.interval == 30.0
    assert config.global_.concurrency == 64
    assert config.modules["a"].timeout_seconds == 10.0
    assert config.modules["a"].starttls_required is True
    assert config.modules["b"].starttls_required is False


def test_tls_scan_is_a_switch_or_a_section() -> None:
    config = parse_config(
        "modules:\n  a: {protocol: smtp, tls: starttls, tls_scan: true}\n"
        "  b: {protocol: imap, tls: implicit, tls_scan: {interval: 15m}}\n"
        "  c: {protocol: pop3, tls: implicit, tls_scan: false}\n  d: {protocol: pop3}\n"
    )
    scans = {name: module.tls_scan for name, module in config.modules.items()}
    assert scans["a"] is not None and scans["a"].interval == 3600.0
    assert scans["b"] is not None and scans["b"].interval == 900.0
    assert scans["c"] is None and scans["d"] is None


def test_each_protocol_has_its_module_class_and_section(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(
        "modules:\n  s: {protocol: smtp, smtp: {ehlo_name: monitor.example.com}}\n"
        "  i: {protocol: imap}\n  p: {protocol: pop3}\n"
    )
    exporter = Exporter(path, {})
    config = exporter.config
    assert [type(config.modules[name]) for name in "sip"] == list(MODULE_TYPES.values())
    smtp = config.modules["s"]
    assert isinstance(smtp, SMTPModule) and smtp.smtp.ehlo_name == "monitor.example.com"
    # The page of the running config shows each module's section, and reads back the same.
    shown = exporter.shown_config()
    assert "ehlo_name: monitor.example.com" in shown
    assert parse_config(shown) == config
    exporter.stop()
    assert type(ModuleConfig(protocol="pop3")) is MODULE_TYPES["pop3"]  # built in code too


def test_one_list_of_protocols() -> None:
    """The command line, the module classes and the probe table are keyed by PROTOCOLS."""
    probe_command = main.commands["probe"]
    choices = next(p.type for p in probe_command.params if p.name == "protocol")
    assert isinstance(choices, click.Choice) and tuple(choices.choices) == PROTOCOLS
    assert tuple(MODULE_TYPES) == tuple(PROTOCOL_PROBES) == PROTOCOLS == ("smtp", "imap", "pop3")


def test_cleartext_login_is_a_written_choice() -> None:
    auth = "auth: {username: u, password_env: HOME}"
    config = parse_config(
        f"modules:\n  plain: {{protocol: pop3, allow_plaintext_auth: true, {auth}}}\n"
        "  optional: {protocol: smtp, tls: starttls, require_tls: false, "
        f"allow_plaintext_auth: true, {auth}}}\n"
        f"  withheld: {{protocol: smtp, tls: starttls, require_tls: false, {auth}}}\n"
    )
    assert config.modules["plain"].allow_plaintext_auth is True
    assert config.modules["optional"].allow_plaintext_auth is True
    assert config.modules["withheld"].allow_plaintext_auth is False


def test_builtin_default_watches_the_standard_ports() -> None:
    config = default_config()
    ports = sorted(int(t.address.rsplit(":", 1)[1]) for t in config.targets)
    assert ports == [25, 110, 143, 587, 993, 995]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path / "missing.yml")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("2d", 172800.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.5, "500ms"), (30.0, "30s"), (300.0, "5m"), (7200.0, "2h"), (90.0, "90s")],
)
def test_format_durations(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_relative_paths_are_read_beside_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "secret.pass").write_text("s3cret\n")
    (tmp_path / "config.yml").write_text(
        "modules:\n  a: {protocol: imap, tls: implicit, auth: {username: u, password_file: secret.pass}}\n"
    )
    auth = load_config(tmp_path / "config.yml").modules["a"].auth
    assert auth is not None and auth.password == "s3cret"
    assert auth.password_file == tmp_path / "secret.pass"


def test_anchors_aliases_and_merge_keys_still_work() -> None:
    config = parse_config(
        textwrap.dedent("""\
        modules:
          plain: &plain {protocol: smtp, tls: starttls, timeout: 5s}
          quick:
            <<: *plain
            timeout: 2s
        targets:
          - &mx {name: mx1, address: "mx1.example.com:25", module: quick}
          - {<<: *mx, name: mx2, address: "mx2.example.com:25"}
        """)
    )
    assert config.modules["quick"].tls == "starttls"
    assert config.modules["quick"].timeout_seconds == 2.0
    assert [(t.name, t.module) for t in config.targets] == [("mx1", "quick"), ("mx2", "quick")]


def test_unexpected_error_while_reading_is_a_failed_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yml"
    path.write_text("modules:\n  first: {protocol: smtp}\n")
    exporter = Exporter(path, {})

    def broken(path: Path) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(exporter_module, "load_config", broken)
    with pytest.raises(ConfigError) as raised:
        asyncio.run(exporter.reload())
    assert raised.value.problems == ["unexpected error while reading: RuntimeError('a bug')"]
    assert exporter.reload_successful is False
    assert set(exporter.config.modules) == {"first"}
    monkeypatch.undo()
    asyncio.run(exporter.reload())  # the reload lock was released
    assert exporter.reload_successful is True
    exporter.stop()


def test_probes_read_the_ca_file_as_the_config_does(tmp_path: Path) -> None:
    """A CA file replaced by a FIFO after loading is refused at once, not waited on."""
    fifo = tmp_path / "ca.pem"
    os.mkfifo(fifo)
    answer: list[str | None] = []
    reader = threading.Thread(
        target=lambda: answer.append(tls_facts.verify_chain([], "h", str(fifo)))
    )
    reader.start()
    reader.join(30)
    if reader.is_alive():  # free the reader (the open for writing returns once it waits)
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(30)
    assert answer == [f"cannot load CA file {fifo}: not a regular file (a FIFO)"]
