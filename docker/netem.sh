#!/bin/sh
# Shape this container's egress with tc netem from the environment, then exec the given command.
#   NETEM_RATE (e.g. 20mbit)  NETEM_DELAY (e.g. 20ms)  NETEM_JITTER (e.g. 2ms)  NETEM_LOSS (e.g. 0.1%)
#   NETEM_DEV (default eth0). Needs the NET_ADMIN capability. Nothing set: no shaping.
set -eu
dev="${NETEM_DEV:-eth0}"
args=""
if [ -n "${NETEM_DELAY:-}" ]; then args="$args delay ${NETEM_DELAY} ${NETEM_JITTER:-}"; fi
if [ -n "${NETEM_LOSS:-}" ]; then args="$args loss ${NETEM_LOSS}"; fi
if [ -n "${NETEM_RATE:-}" ]; then args="$args rate ${NETEM_RATE}"; fi
if [ -n "$args" ]; then
    tc qdisc replace dev "$dev" root netem $args
    echo "qpart-netem: $dev shaped with netem$args" >&2
fi
exec "$@"
