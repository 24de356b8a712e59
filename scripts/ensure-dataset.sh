#!/bin/sh
# Make Fashion-MNIST available: $QPART_DATA if set, else the Debian package dataset-fashion-mnist.
set -eu
dir="${QPART_DATA:-/usr/share/datasets/fashion-mnist}"
if ls "$dir"/t10k-images-idx3-ubyte* >/dev/null 2>&1; then
    exit 0
fi
if [ -n "${QPART_DATA:-}" ]; then
    echo "QPART_DATA=$QPART_DATA holds no MNIST-format IDX files (t10k-images-idx3-ubyte[.gz], ...)" >&2
    exit 1
fi
if [ "$(id -u)" = 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
else
    echo "Fashion-MNIST is missing: run 'apt-get install dataset-fashion-mnist' as root," >&2
    echo "or set QPART_DATA to a directory of MNIST-format IDX files." >&2
    exit 1
fi
echo "installing the Debian package dataset-fashion-mnist" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; }
