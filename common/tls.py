"""Why a TLS connection fails, in words: gRPC reports most handshake failures as a closed socket or a
line of OpenSSL, so the handshake is repeated here with Python's ssl and the same files.

Used by the device client (qpart.device.client) and the health check (qpart.common.health), so that
both say the same thing: the server does not speak TLS, the server's certificate is not trusted, or
the server refused this client's certificate (or needs one).
"""
import pathlib
import socket
import ssl

PathLike = str | pathlib.Path | None
NOT_TLS = ("the server does not speak TLS (it answered a TLS handshake in plaintext): connect without --tls-ca, "
           "or serve TLS (qpart-server --tls-cert and --tls-key)")
SPEAKS_TLS = ("the server speaks TLS and this client connects in plaintext: give --tls-ca (and --tls-cert with "
              "--tls-key where the server asks for client certificates)")


def _address(target: str) -> tuple[str, int] | None:
    """(host, port) of a host:port target; None for unix sockets and names gRPC resolves itself."""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit() or target.startswith(("unix:", "dns:")):
        return None
    return host.strip("[]"), int(port)


def speaks_tls(target: str, timeout_s: float = 2.0) -> bool:
    """Whether the server at `target` (host:port) answers a TLS handshake: why a plaintext client sees only
    "Socket closed" (nothing is verified; the handshake is dropped at once)."""
    address = _address(target)
    if address is None:
        return False
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(address, timeout=timeout_s) as raw:
            with context.wrap_socket(raw, server_hostname=address[0] or None):
                return True
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return False           # closed on us: not a TLS server
    except ssl.SSLError as e:
        return e.reason != "WRONG_VERSION_NUMBER"     # an alert: TLS, but not with us; else plaintext bytes came back
    except OSError:
        return False


def diagnose(target: str, ca: PathLike = None, cert: PathLike = None, key: PathLike = None,
             server_name: str | None = None, timeout_s: float = 3.0) -> str | None:
    """Why a TLS connection to `target` with these files fails, if it is TLS; None when TLS is not the problem
    (the server accepts us, or cannot be reached at all). The files must be readable."""
    address = _address(target)
    if address is None:
        return None
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    context.set_alpn_protocols(["h2"])
    try:
        raw = socket.create_connection(address, timeout=timeout_s)
    except OSError:
        return None            # unreachable: not a TLS matter
    try:
        with raw, context.wrap_socket(raw, server_hostname=server_name or address[0]) as conn:
            # TLS 1.3 delivers the server's verdict on our certificate after the handshake: an accepting
            # gRPC server sends its HTTP/2 preface, a refusing one closes the connection
            if conn.recv(1) == b"":
                return ("the server closed the connection after the TLS handshake: it refused this client's "
                        "certificate, or requires one (--tls-cert and --tls-key)")
    except ssl.SSLCertVerificationError as e:
        return f"the server's certificate is not trusted ({e.verify_message}): check --tls-ca"
    except (ssl.SSLError, ConnectionError) as e:     # refused, or not TLS at all: ask the server plainly
        if not speaks_tls(target, timeout_s):
            return NOT_TLS
        reason = getattr(e, "reason", None) or type(e).__name__
        return f"the TLS handshake was refused ({reason}): check this client's certificate (--tls-cert, --tls-key)"
    except OSError:
        return None
    return None
