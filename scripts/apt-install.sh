#!/bin/sh
# apt-install.sh PACKAGE WHAT ENVVAR: install a Debian package the Makefile needs (as root, or with sudo), or say
# how to get it when neither is possible. WHAT names it for the user; ENVVAR is the variable that points qpart
# at a copy of one's own instead.
set -eu
package="$1" what="$2" envvar="$3"
if [ "$(id -u)" = 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
else
    echo "$what is missing: run 'apt-get install $package' as root, or set $envvar (see the README)." >&2
    exit 1
fi
echo "installing the Debian package $package ($what)" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q "$package" >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "$package" >/dev/null; }
