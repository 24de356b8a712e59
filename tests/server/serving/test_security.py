"""TLS, mutual TLS and per-device bearer tokens: wrong credentials get UNAUTHENTICATED or
PERMISSION_DENIED and nothing else. Certificates are generated for each run."""
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qpart.common.errors import PermissionDenied, Unauthenticated
from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient, TlsSettings
from qpart.server.serving.auth import token_digest
from qpart.server.serving.main import RunningServer
from qpart.server.serving.servicer import SERVICE
from tests.conftest import ZOO_NAMES
from qpart.server.serving.settings import ServerSettings
from qpart.v1 import service_pb2 as spb
from tests.certs import Authority

TOKENS = {"device-a": "token-of-a", "device-b": "token-of-b", "device-c": "token-of-c"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca, stranger = Authority("qpart test CA"), Authority("another CA")
    (d / "ca.crt").write_bytes(ca.cert_pem)
    (d / "stranger-ca.crt").write_bytes(stranger.cert_pem)
    files = {"server": ca.issue("localhost", server=True).write(d, "server"),
             "device-a": ca.issue("device-a").write(d, "device-a"),
             "device-c": ca.issue("device-c").write(d, "device-c"),
             "forged-a": stranger.issue("device-a").write(d, "forged-a")}
    devices = d / "devices.toml"
    devices.write_text(
        f'[[device]]\nid = "device-a"\ntoken_sha256 = "{token_digest(TOKENS["device-a"])}"\nmodels = ["*"]\n'
        f'certificate_cn = "device-a"\n\n'
        f'[[device]]\nid = "device-b"\ntoken_sha256 = "{token_digest(TOKENS["device-b"])}"\nmodels = ["fc6"]\n\n'
        f'[[device]]\nid = "device-c"\ntoken_sha256 = "{token_digest(TOKENS["device-c"])}"\nmodels = ["*"]\n'
        f'certificate_cn = "device-c"\n')
    # without mutual TLS no entry may be bound to a certificate (the server refuses to start: test_tls_setup.py)
    unbound = d / "devices-unbound.toml"
    unbound.write_text("".join(line + "\n" for line in devices.read_text().splitlines()
                               if not line.startswith("certificate_cn")))
    return d, files, devices


def start(models_dir, pki, mutual: bool) -> RunningServer:
    d, files, devices = pki
    key, cert = files["server"]
    devices = devices if mutual else d / "devices-unbound.toml"
    return RunningServer(ServerSettings(models=models_dir, port=0, tls_cert=cert, tls_key=key, devices=devices,
                                        tls_client_ca=d / "ca.crt" if mutual else None, measure_speed=False,
                                        warm_heads=False))


@pytest.fixture(scope="module")
def tls_server(models_dir, pki, catalogs):
    server = start(models_dir, pki, mutual=False)
    yield server
    server.stop(0, notice=0)


@pytest.fixture(scope="module")
def mtls_server(models_dir, pki, catalogs):
    server = start(models_dir, pki, mutual=True)
    yield server
    server.stop(0, notice=0)


def client(server, pki, token=None, cert: str | None = None, ca: str = "ca.crt") -> ServerClient:
    d, files, _ = pki
    key, crt = files[cert] if cert else (None, None)
    return ServerClient(f"localhost:{server.port}", timeout_s=10, token=token, retries=0,
                        tls=TlsSettings(d / ca, crt, key))


def raw_calls(channel, metadata):
    """Every method of qpart.v1.SplitInference with an empty request, as raw bytes."""
    for method in SERVICE.methods:
        path = f"/{SERVICE.full_name}/{method.name}"
        kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
                (True, False): channel.stream_unary, (True, True): channel.stream_stream}[
            (method.client_streaming, method.server_streaming)]
        call = kind(path, request_serializer=None, response_deserializer=None)
        request = iter([b""]) if method.client_streaming else b""
        yield method.name, lambda call=call, request=request: list(call(request, timeout=10, metadata=metadata)) \
            if method.server_streaming else call(request, timeout=10, metadata=metadata)


def test_tls_with_a_token_serves_end_to_end(tls_server, pki, test_set):
    c = client(tls_server, pki, TOKENS["device-a"])
    x, labels = test_set
    request = spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(cut=7, weight_bits=[6],
                                                                                 activation_bits=[6]))
    report = DeviceAgent(c, HeadCache(None)).run(request, x[:50], labels[:50], batch_size=10)
    assert report.inputs == 50 and report.accuracy > 50
    c.close()


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer not-a-token"),),
                                      (("authorization", "Basic dXNlcjpwYXNz"),),
                                      (("authorization", "Bearer token-of-a"), ("authorization", "Bearer token-of-b"))])
def test_every_rpc_needs_a_valid_token(tls_server, pki, metadata):
    d = pki[0]
    credentials = grpc.ssl_channel_credentials((d / "ca.crt").read_bytes())
    with grpc.secure_channel(f"localhost:{tls_server.port}", credentials) as channel:
        for name, call in raw_calls(channel, metadata):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, (name, info.value.details())
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING      # probes need no token


def test_a_device_may_use_only_its_models(tls_server, pki):
    c = client(tls_server, pki, TOKENS["device-b"])
    assert [m.name for m in c.list_models()] == ["fc6"]
    c.plan(spb.PlanRequest(model="fc6"))
    with pytest.raises(PermissionDenied, match="may not use model 'lenet'"):
        c.plan(spb.PlanRequest(model="lenet"))
    with pytest.raises(PermissionDenied):
        c.list_models("lenet")
    other = client(tls_server, pki, TOKENS["device-a"]).plan(spb.PlanRequest(
        model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(cut=3, weight_bits=[8], activation_bits=[8])))
    with pytest.raises(PermissionDenied):          # a plan id does not smuggle a forbidden model through
        c.fetch_head(other, max_bytes=1 << 20)
    c.close()


def test_a_plaintext_client_gets_nothing_and_is_told_why(tls_server, mtls_server, server):
    from qpart.device.client import speaks_tls
    for running in (tls_server, mtls_server):
        c = ServerClient(f"localhost:{running.port}", timeout_s=5, token=TOKENS["device-a"], retries=3)
        with pytest.raises(Unauthenticated, match="speaks TLS and this client connects in plaintext: give --tls-ca"):
            c.list_models()          # at once: no retries against a server that will never answer plaintext
        c.close()
    assert not speaks_tls(f"127.0.0.1:{server.port}")     # a plaintext gRPC server
    assert not speaks_tls("127.0.0.1:1") and not speaks_tls("unix:/tmp/x.sock")


def test_mutual_tls(mtls_server, pki):
    ok = client(mtls_server, pki, TOKENS["device-a"], cert="device-a")
    assert len(ok.list_models()) == len(ZOO_NAMES)
    ok.close()
    wrong_pair = client(mtls_server, pki, TOKENS["device-a"], cert="device-c")   # a's token, c's certificate
    with pytest.raises(PermissionDenied, match="its own client certificate"):
        wrong_pair.list_models()
    for cert, ca, match in [("forged-a", "ca.crt", "refused this client's certificate"),
                            (None, "ca.crt", "refused this client's certificate"),
                            ("device-a", "stranger-ca.crt", "server's certificate is not trusted")]:
        bad = client(mtls_server, pki, TOKENS["device-a"], cert=cert, ca=ca)
        with pytest.raises(Unauthenticated, match=match):
            bad.list_models()
        bad.close()
