#!/bin/sh
# The user list is written from the environment at start, so the password lives in one place.
set -eu
: "${DB_USER:?}" "${DB_PASSWORD:?}"
umask 077
printf '"%s" "%s"\n' "$DB_USER" "$DB_PASSWORD" > /tmp/userlist.txt
exec pgbouncer /etc/pgbouncer/pgbouncer.ini
