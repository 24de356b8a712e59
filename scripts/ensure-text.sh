#!/bin/sh
# Make the language models' text available: $QPART_TEXT if set, else the Debian package fortunes
# (about 15,000 fortune cookies in /usr/share/games/fortunes; qpart.server.models.text).
set -eu
dir="${QPART_TEXT:-/usr/share/games/fortunes}"
if [ -f "$dir/fortunes" ] || ls "$dir"/*.txt >/dev/null 2>&1; then
    exit 0
fi
if [ -n "${QPART_TEXT:-}" ]; then
    echo "QPART_TEXT=$QPART_TEXT holds no fortune files or *.txt documents" >&2
    exit 1
fi
if [ "$(id -u)" = 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
else
    echo "the fortunes text is missing: run 'apt-get install fortunes' as root," >&2
    echo "or set QPART_TEXT to a directory of *.txt documents." >&2
    exit 1
fi
echo "installing the Debian package fortunes (the language models' text)" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q fortunes >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q fortunes >/dev/null; }
