#!/bin/sh
# Writes the probe account's password file from the probe_password secret (the same file
# the exporter logs in with), then runs Dovecot in the foreground.
set -eu
password=$(cat /run/secrets/probe_password)
umask 027
printf '%s:{PLAIN}%s\n' probe@demo.test "$password" > /etc/dovecot/users
# Read by Dovecot's unprivileged auth processes.
chgrp dovecot /etc/dovecot/users
# A restarted container still holds the pid file of the Dovecot it ran before.
rm -f /run/dovecot/master.pid
exec dovecot -F -c /etc/dovecot/dovecot.conf
