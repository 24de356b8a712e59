"""TLS as configured at start and as diagnosed by clients.

- A devices file that binds entries to certificate names is refused without mutual TLS (the names could not
  be checked: such entries were served on their token alone); tokens over plaintext are warned about.
- A TLS client talking to a plaintext server is told the server does not speak TLS (it was told to check its
  certificate); the health check gives the device's diagnoses and no gRPC core log line.
"""
import logging
import subprocess
import sys

import pytest

from qpart.common.errors import InvalidArgument, Unauthenticated
from qpart.device.client import ServerClient, TlsSettings
from qpart.server.serving import main as server_main
from qpart.server.serving.auth import token_digest
from qpart.server.serving.main import RunningServer
from qpart.server.serving.settings import ServerSettings
from tests.certs import Authority


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca, stranger = Authority("setup CA"), Authority("stranger CA")
    (d / "ca.crt").write_bytes(ca.cert_pem)
    (d / "stranger.crt").write_bytes(stranger.cert_pem)
    ca.issue("localhost", server=True).write(d, "server")
    ca.issue("cam-1").write(d, "cam-1")
    bound, plain = d / "bound.toml", d / "plain.toml"
    entry = f'[[device]]\nid = "cam-1"\ntoken_sha256 = "{token_digest("t1")}"\nmodels = ["*"]\n'
    bound.write_text(entry + 'certificate_cn = "cam-1"\n')
    plain.write_text(entry)
    (d / "models").mkdir()
    return d


def settings(pki, tls: str, devices: str | None = None) -> ServerSettings:
    """tls: plaintext, tls or mutual."""
    return ServerSettings(models=pki / "models", port=0, measure_speed=False, warm_heads=False,
                          devices=pki / devices if devices else None,
                          tls_cert=pki / "server.crt" if tls != "plaintext" else None,
                          tls_key=pki / "server.key" if tls != "plaintext" else None,
                          tls_client_ca=pki / "ca.crt" if tls == "mutual" else None)


@pytest.fixture(scope="module")
def plaintext_server(pki):
    running = RunningServer(settings(pki, "plaintext"))
    yield running
    running.stop(0, notice=0)


@pytest.fixture(scope="module")
def mutual_server(pki):
    running = RunningServer(settings(pki, "mutual", "bound.toml"))
    yield running
    running.stop(0, notice=0)


@pytest.mark.parametrize("tls", ["plaintext", "tls"])
def test_certificate_bindings_without_mutual_tls_refuse_to_start(pki, tls):
    with pytest.raises(InvalidArgument, match="bound to a client certificate.*only mutual TLS can check"):
        RunningServer(settings(pki, tls, "bound.toml"))


def test_the_refusal_is_one_clear_line_at_start(pki, capsys, monkeypatch):
    monkeypatch.setattr(server_main, "configure_logging", lambda *args: None)     # leave the test's logging be
    argv = ["--models", str(pki / "models"), "--port", "0", "--no-measure-speed", "--cold-heads",
            "--devices", str(pki / "bound.toml"), "--tls-cert", str(pki / "server.crt"),
            "--tls-key", str(pki / "server.key")]
    assert server_main.main(argv) == 2
    err = capsys.readouterr().err
    assert "qpart-server: INVALID_ARGUMENT: devices file" in err and "--tls-client-ca" in err


@pytest.mark.parametrize("tls, warned", [("plaintext", True), ("tls", False)])
def test_tokens_over_plaintext_are_warned_about(pki, caplog, tls, warned):
    with caplog.at_level(logging.WARNING, logger="qpart.server"):
        running = RunningServer(settings(pki, tls, "plain.toml"))
        running.stop(0, notice=0)
    insecure = [r for r in caplog.records if "INSECURE" in r.getMessage()]
    assert bool(insecure) == warned
    if warned:
        assert insecure[0].levelno == logging.WARNING and "--tls-cert" in insecure[0].getMessage()


def test_mutual_tls_serves_bound_entries(mutual_server, pki):
    c = ServerClient(f"localhost:{mutual_server.port}", timeout_s=10, token="t1", retries=0,
                     tls=TlsSettings(pki / "ca.crt", pki / "cam-1.crt", pki / "cam-1.key"))
    assert c.list_models() == []
    c.close()


def test_a_tls_client_is_told_the_server_does_not_speak_tls(plaintext_server, pki):
    c = ServerClient(f"localhost:{plaintext_server.port}", timeout_s=5, retries=3, tls=TlsSettings(pki / "ca.crt"))
    with pytest.raises(Unauthenticated, match="does not speak TLS") as info:
        c.list_models()                          # at once, not after retries
    assert "certificate" not in str(info.value).split("does not speak TLS")[0]
    c.close()


def health(target: str, *args) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "qpart.common.health", target, "--timeout", "5", *args],
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("server, args, says", [
    ("plaintext", ["--tls-ca", "ca.crt"], "the server does not speak TLS"),
    ("mutual", ["--tls-ca", "ca.crt"], "it refused this client's certificate, or requires one"),
    ("mutual", ["--tls-ca", "stranger.crt", "--tls-cert", "cam-1.crt", "--tls-key", "cam-1.key"],
     "the server's certificate is not trusted"),
    ("mutual", [], "the server speaks TLS and this client connects in plaintext"),
    ("mutual", ["--tls-ca", "ca.crt", "--tls-cert", "cam-1.crt", "--tls-key", "cam-1.key"], "SERVING"),
    ("plaintext", [], "SERVING"),
])
def test_the_health_check_diagnoses_tls_as_the_device_does(plaintext_server, mutual_server, pki, server, args, says):
    running = plaintext_server if server == "plaintext" else mutual_server
    code, out, err = health(f"localhost:{running.port}", *[str(pki / a) if a.endswith((".crt", ".key")) else a
                                                            for a in args])
    assert says in out, (out, err)
    assert code == (0 if says == "SERVING" else 3)
    assert "Socket closed" not in out and "ssl_transport_security" not in err and not err.strip(), err
