#!/bin/sh
# Tools some tests use beyond Python: iproute2 (ip, tc, ss) and docker-compose (to validate the compose file).
# Installed with apt-get when running as root; otherwise those tests say what is missing.
set -u
[ "$(id -u)" = 0 ] || exit 0
command -v apt-get >/dev/null 2>&1 || exit 0
missing=""
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
[ -n "$missing" ] || exit 0
echo "installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $missing >/dev/null; } \
    || echo "could not install$missing; the tests that need it will say so" >&2
exit 0
