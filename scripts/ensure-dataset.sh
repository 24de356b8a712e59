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
exec sh "$(dirname "$0")/apt-install.sh" dataset-fashion-mnist "Fashion-MNIST" "QPART_DATA to a directory of MNIST-format IDX files"
