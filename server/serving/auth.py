"""Who may call: a bearer token per device and, with mutual TLS, the client certificate's name.

Devices are listed in a TOML file; tokens are never stored, only their SHA-256:

    [[device]]
    id = "pi-kitchen"               # names the device in logs and metrics
    token_sha256 = "9f86d0818..."   # hex SHA-256 of the device's bearer token (`qpart token` makes one)
    models = ["fc6", "lenet"]       # models it may use; ["*"] for every model
    certificate_cn = "pi-kitchen"   # optional, with mutual TLS: its client certificate's common name

Every qpart.v1 RPC carries `authorization: Bearer <token>` metadata. No token, a malformed one or an
unknown one gets UNAUTHENTICATED. A known token used for a model the device may not use, or on a TLS
connection whose client certificate names another device, gets PERMISSION_DENIED. Health checks and
reflection need no token.

A devices file that binds an entry to a certificate name needs mutual TLS: without it the name could
not be checked and the entry would be served on its token alone, so the server refuses to start.
"""
import hashlib
import os
import pathlib
import secrets
from dataclasses import dataclass

from qpart.common.config import tomllib
from qpart.common.errors import InvalidArgument, PermissionDenied, Unauthenticated

TOKEN_HEADER = "authorization"
MAX_TOKEN_LENGTH = 512


@dataclass(frozen=True)
class Identity:
    device_id: str
    models: frozenset                   # model names it may use; "*" for all
    certificate_cn: str | None = None   # the client certificate name it must present, with mutual TLS

    def authorize(self, model: str) -> None:
        if "*" not in self.models and model not in self.models:
            raise PermissionDenied(f"device {self.device_id!r} may not use model {model!r}")


ANYONE = Identity("anonymous", frozenset({"*"}))   # when authentication is off


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh random bearer token and its SHA-256 for the devices file."""
    token = secrets.token_urlsafe(32)
    return token, token_digest(token)


class Authenticator:
    """Turns a call's metadata and TLS peer into an Identity, or raises."""

    def __init__(self, devices: dict[str, Identity] | None, mutual_tls: bool = False):
        self.devices = devices        # token digest -> Identity; None: authentication off
        self.mutual_tls = mutual_tls  # client certificates are verified: certificate_cn is enforced

    @classmethod
    def from_file(cls, path: str | os.PathLike | None, mutual_tls: bool = False) -> "Authenticator":
        if path is None:
            return cls(None, mutual_tls)
        try:
            entries = tomllib.loads(pathlib.Path(path).read_text()).get("device", [])
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise InvalidArgument(f"cannot read the devices file {path}: {e}") from None
        devices = {}
        for entry in entries:
            digest = str(entry.get("token_sha256", "")).lower()
            if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest) or "id" not in entry:
                raise InvalidArgument(f"devices file {path}: every [[device]] needs an id and a 64-hex token_sha256")
            devices[digest] = Identity(str(entry["id"]), frozenset(entry.get("models", ["*"])),
                                       entry.get("certificate_cn"))
        bound = sorted(i.device_id for i in devices.values() if i.certificate_cn is not None)
        if bound and not mutual_tls:
            raise InvalidArgument(
                f"devices file {path}: {len(bound)} device(s) ({', '.join(bound[:3])}{', ...' if len(bound) > 3 else ''}) "
                f"are bound to a client certificate (certificate_cn), which only mutual TLS can check: give "
                f"--tls-cert, --tls-key and --tls-client-ca, or remove certificate_cn")
        return cls(devices, mutual_tls)

    def stream_owner(self, identity: Identity, peer: str, peer_common_names: list[str] | None = None) -> str:
        """Whom an open stream counts against (StreamGuard's per-client bound): an authenticated device by its
        id, a verified client certificate by its name, and only an anonymous client by its address (all the
        devices behind one NAT share that)."""
        if identity is not ANYONE:
            return f"device {identity.device_id}"
        if self.mutual_tls and peer_common_names:
            return f"certificate {peer_common_names[0]}"
        host = peer.rsplit(":", 1)[0] if peer.startswith(("ipv4:", "ipv6:")) else peer
        return f"address {host}"

    def identify(self, metadata, peer_common_names: list[str] | None = None) -> Identity:
        """metadata: (key, value) pairs of the call; peer_common_names: the TLS client certificate's CNs."""
        if self.devices is None:
            return ANYONE
        values = [v for k, v in metadata or () if k == TOKEN_HEADER]
        if len(values) != 1:
            raise Unauthenticated("this server needs exactly one `authorization: Bearer <token>` header")
        value = values[0] if isinstance(values[0], str) else values[0].decode("utf-8", "replace")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated("the authorization header must be `Bearer <token>`")
        identity = self.devices.get(token_digest(token.strip()))
        if identity is None:
            raise Unauthenticated("unknown device token")
        if self.mutual_tls and identity.certificate_cn is not None and identity.certificate_cn not in (peer_common_names or []):
            raise PermissionDenied(f"device {identity.device_id!r} must connect with its own client certificate "
                                   f"(common name {identity.certificate_cn!r})")
        return identity
