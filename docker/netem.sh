#!/bin/sh
# Shape this container's link with tc netem from the environment, both ways, then exec the given command.
#   NETEM_RATE (e.g. 20mbit)  NETEM_DELAY (e.g. 20ms)  NETEM_JITTER (e.g. 2ms)  NETEM_LOSS (e.g. 0.1%)
#   NETEM_DOWN_RATE: the rate towards this container (default NETEM_RATE)
#   NETEM_DEV (default eth0). Needs the NET_ADMIN capability. Nothing set: no shaping.
# Egress gets rate, delay, jitter and loss. Ingress (head downloads, answers) is redirected through an IFB
# device and gets the down rate; the delay stays on egress, so a round trip carries it once. Where the
# kernel has no ifb module the ingress stays unshaped, and this says so.
set -eu
dev="${NETEM_DEV:-eth0}"
args=""
if [ -n "${NETEM_DELAY:-}" ]; then args="$args delay ${NETEM_DELAY} ${NETEM_JITTER:-}"; fi
if [ -n "${NETEM_LOSS:-}" ]; then args="$args loss ${NETEM_LOSS}"; fi
if [ -n "${NETEM_RATE:-}" ]; then args="$args rate ${NETEM_RATE}"; fi
if [ -n "$args" ]; then
    tc qdisc replace dev "$dev" root netem $args
    echo "qpart-netem: $dev egress shaped with netem$args" >&2
fi
down="${NETEM_DOWN_RATE:-${NETEM_RATE:-}}"
if [ -n "$down" ]; then
    ifb="ifb-qpart"
    if ip link add "$ifb" type ifb 2>/dev/null || ip link show "$ifb" >/dev/null 2>&1; then
        ip link set "$ifb" up
        tc qdisc replace dev "$dev" handle ffff: ingress
        tc filter replace dev "$dev" parent ffff: protocol all u32 match u32 0 0 action mirred egress redirect dev "$ifb"
        tc qdisc replace dev "$ifb" root netem rate "$down"
        echo "qpart-netem: $dev ingress shaped with netem rate $down (through $ifb)" >&2
    else
        echo "qpart-netem: WARNING: no ifb device here (modprobe ifb on the host): $dev ingress is NOT shaped" >&2
    fi
fi
exec "$@"
