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
exec sh "$(dirname "$0")/apt-install.sh" fortunes "the language models' text" "QPART_TEXT to a directory of *.txt documents"
