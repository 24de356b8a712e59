"""Whom an open stream counts against: an authenticated device by its id, a verified client certificate by its
name, only an anonymous client by its address. An audit held 125 idle streams from one address and locked
out every device behind it (a NAT)."""
import threading

import grpc
import pytest

from qpart.server.serving.auth import ANYONE, Authenticator, Identity, token_digest
from qpart.server.serving.main import RunningServer
from qpart.server.serving.settings import ServerSettings
from qpart.v1 import service_pb2 as spb
from qpart.v1 import service_pb2_grpc
from tests.certs import Authority

LIMIT = 2


def test_stream_owner_is_the_identity_where_there_is_one():
    auth = Authenticator({"0" * 64: Identity("pi-kitchen", frozenset({"*"}))}, mutual_tls=True)
    device = Identity("pi-kitchen", frozenset({"*"}))
    assert auth.stream_owner(device, "ipv4:10.0.0.1:5000", ["cert-a"]) == "device pi-kitchen"
    assert auth.stream_owner(ANYONE, "ipv4:10.0.0.1:5000", ["cert-a"]) == "certificate cert-a"
    assert auth.stream_owner(ANYONE, "ipv4:10.0.0.1:5000") == "address ipv4:10.0.0.1"
    assert auth.stream_owner(ANYONE, "ipv6:[::1]:5000") == "address ipv6:[::1]"
    unverified = Authenticator(None, mutual_tls=False)          # a name nobody verified counts for nothing
    assert unverified.stream_owner(ANYONE, "ipv4:10.0.0.1:5000", ["cert-a"]) == "address ipv4:10.0.0.1"
    # a device named like an address or a certificate does not share their count
    assert auth.stream_owner(Identity("ipv4:10.0.0.1", frozenset()), "ipv4:10.0.0.1:1") != \
        auth.stream_owner(ANYONE, "ipv4:10.0.0.1:1")


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    return tmp_path_factory.mktemp("no-models")      # ProbeStream needs no model


def serve(repository, **settings) -> RunningServer:
    return RunningServer(ServerSettings(models=repository, port=0, max_streams_per_client=LIMIT,
                                        max_streams_per_connection=16, stream_idle_s=0, measure_speed=False,
                                        warm_heads=False, **settings))


class IdleStreams:
    """`count` ProbeStreams on one channel that send nothing until closed."""

    def __init__(self, channel, metadata=()):
        self.stop = threading.Event()
        self.stub = service_pb2_grpc.SplitInferenceStub(channel)
        self.metadata = metadata
        self.calls = []

    def idle(self):
        self.stop.wait(60)
        return
        yield

    def open(self, running, count: int) -> None:
        before = len(running.core.streams._streams)
        self.calls += [self.stub.ProbeStream(self.idle(), timeout=60, metadata=self.metadata) for _ in range(count)]
        for _ in range(500):                              # until the server holds them (or refused one)
            if len(running.core.streams._streams) >= before + count or any(c.done() for c in self.calls):
                break
            self.stop.wait(0.02)
        assert len(running.core.streams._streams) == before + count, [c.details() for c in self.calls if c.done()]

    def close(self):
        self.stop.set()
        for call in self.calls:
            call.cancel()


def probe(channel, metadata=()) -> grpc.StatusCode:
    """One round trip on a new ProbeStream: OK, or the status it was refused with."""
    stub = service_pb2_grpc.SplitInferenceStub(channel)
    try:
        list(stub.ProbeStream(iter([spb.ProbeRequest(reply_bytes=1)]), timeout=30, metadata=metadata))
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def test_devices_behind_one_address_each_get_their_own_streams(repository, tmp_path):
    tokens = {name: f"token-of-{name}" for name in ("a", "b")}
    devices = tmp_path / "devices.toml"
    devices.write_text("".join(f'[[device]]\nid = "{n}"\ntoken_sha256 = "{token_digest(t)}"\nmodels = ["*"]\n\n'
                               for n, t in tokens.items()))
    running = serve(repository, devices=devices)
    auth = {n: (("authorization", f"Bearer {t}"),) for n, t in tokens.items()}
    target = f"127.0.0.1:{running.port}"
    with grpc.insecure_channel(target) as a_channel, grpc.insecure_channel(target) as b_channel:
        hog = IdleStreams(a_channel, auth["a"])
        try:
            hog.open(running, LIMIT)
            assert probe(a_channel, auth["a"]) == grpc.StatusCode.RESOURCE_EXHAUSTED     # a holds its share
            assert probe(b_channel, auth["b"]) == grpc.StatusCode.OK                     # b, same address: served
        finally:
            hog.close()
            running.stop(0, notice=0)


def test_anonymous_clients_share_their_address(repository):
    running = serve(repository)
    target = f"127.0.0.1:{running.port}"
    with grpc.insecure_channel(target) as first, grpc.insecure_channel(target) as second:
        hog = IdleStreams(first)
        try:
            hog.open(running, LIMIT)
            assert probe(second) == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            hog.close()
            running.stop(0, notice=0)


def test_client_certificates_count_apart_without_tokens(repository, tmp_path):
    ca = Authority("stream CA")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    key, cert = ca.issue("localhost", server=True).write(tmp_path, "server")
    running = serve(repository, tls_cert=cert, tls_key=key, tls_client_ca=tmp_path / "ca.crt")
    target = f"localhost:{running.port}"

    def channel(name):
        issued = ca.issue(name)
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(ca.cert_pem, issued.key_pem, issued.cert_pem))
    with channel("cam-1") as one, channel("cam-2") as two, channel("cam-1") as one_again:
        hog = IdleStreams(one)
        try:
            hog.open(running, LIMIT)
            assert probe(one_again) == grpc.StatusCode.RESOURCE_EXHAUSTED       # the same certificate name
            assert probe(two) == grpc.StatusCode.OK
        finally:
            hog.close()
            running.stop(0, notice=0)
