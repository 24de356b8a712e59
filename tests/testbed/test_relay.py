"""The user-space link emulation (delay, jitter, serialization), on loopback: no root needed."""
import socket
import statistics
import threading
import time

import pytest

from qpart.testbed.relay import Relay, Shape, ShapeSource


@pytest.fixture
def echo_server():
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=lambda c=conn: [c.sendall(d) for d in iter(lambda: c.recv(65536), b"")],
                             daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def echo_seconds(s: socket.socket, size: int) -> float:
    """Send size bytes through the relay to the echo server and time until all have come back."""
    started = time.perf_counter()
    s.sendall(b"x" * size)
    got = 0
    while got < size:
        got += len(s.recv(65536))
    return time.perf_counter() - started


def round_trip(port: int, size: int) -> float:
    with connect(port) as s:
        echo_seconds(s, 1)                    # warm the connection through the relay
        return echo_seconds(s, size)


def test_delay_and_serialization(echo_server):
    relay = Relay(("127.0.0.1", 0), ("127.0.0.1", echo_server), ShapeSource(fixed=Shape(rate_bps=2e6, delay_s=0.02))).start()
    try:
        small = min(round_trip(relay.port, 100) for _ in range(3))
        assert 0.040 <= small < 0.052        # two one-way delays, plus 2 x 100 B at 2 Mbit/s = 0.8 ms
        bulk = round_trip(relay.port, 200_000)
        ideal = 0.040 + 200_000 * 8 / 2e6     # the echo streams back while the rest still arrives
        assert ideal * 0.97 <= bulk <= ideal * 1.25
    finally:
        relay.close()


def test_live_reshaping_from_the_state_file(echo_server, tmp_path):
    state = tmp_path / "state.json"
    state.write_text('{"rate_mbit": 0, "delay_ms": 5}')
    relay = Relay(("127.0.0.1", 0), ("127.0.0.1", echo_server), ShapeSource(state)).start()
    try:
        assert 0.010 <= min(round_trip(relay.port, 10) for _ in range(3)) < 0.020
        state.write_text('{"rate_mbit": 0, "delay_ms": 25}')
        time.sleep(0.2)
        assert 0.050 <= min(round_trip(relay.port, 10) for _ in range(3)) < 0.065
    finally:
        relay.close()


def test_jitter_keeps_order(echo_server):
    relay = Relay(("127.0.0.1", 0), ("127.0.0.1", echo_server),
                  ShapeSource(fixed=Shape(delay_s=0.01, jitter_s=0.008)), seed=3).start()
    try:
        with socket.create_connection(("127.0.0.1", relay.port)) as s:
            payload = bytes(range(256)) * 40
            for i in range(0, len(payload), 100):
                s.sendall(payload[i:i + 100])
            got = b""
            while len(got) < len(payload):
                got += s.recv(65536)
        assert got == payload
    finally:
        relay.close()


def test_short_messages_serialize_in_full_at_high_rates(echo_server):
    """At 100 Mbit/s a 3.2 KB message takes 0.19 ms longer than an 0.85 KB one, each way; a relay that
    only slept would hide most of it in time.sleep's late wake-ups (measured ~0.23 of 0.38 ms here). Up to
    three rounds of 21 pairs: a busy machine can squeeze one round's medians (0.25 of 0.38 ms once, with the
    whole suite on 2 cores), a relay that only sleeps falls short in every round."""
    relay = Relay(("127.0.0.1", 0), ("127.0.0.1", echo_server), ShapeSource(fixed=Shape(rate_bps=100e6, delay_s=0.002))).start()
    expected = 2 * (3202 - 851) * 8 / 100e6                          # both directions: 0.376 ms
    try:
        rounds = []
        with connect(relay.port) as s:
            while len(rounds) < 3 and not any(m >= 0.8 * expected for m in rounds):
                times = {851: [], 3202: []}
                for size in [851, 3202] * 21:
                    time.sleep(0.003)
                    times[size].append(echo_seconds(s, size))
                rounds.append(statistics.median(times[3202]) - statistics.median(times[851]))
        assert max(rounds) >= 0.8 * expected, (rounds, expected)
    finally:
        relay.close()
