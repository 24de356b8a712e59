"""Plan ids: an opaque, self-contained token naming model, version and split, signed by the server.

The signature (HMAC-SHA256 under the plan key) means only a server holding the key issued the id:
a made-up id, which would make the server build any head it names, is refused before anything is
built. Replicas that share the key (the model repository's `.qpart-plan-key`, or --plan-key-file)
serve each other's plans, and a restarted server keeps serving the plans it handed out. Each id
carries its expiry (unix seconds, under the signature): past it the id is refused with
FAILED_PRECONDITION and the device plans again, so a leaked id or a rotated key stops working; an Infer
stream opened before the expiry is refused from its first message after it (`check_expiry`). Tokens
and expiries are parsed strictly, even under a valid signature, and checked against the model before use.
"""
import hashlib
import hmac
import logging
import os
import pathlib
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qpart.common import lossless, quant
from qpart.common.errors import FailedPrecondition, InvalidArgument
from qpart.common.names import check_name, shown
from qpart.server.models.split import Split

if TYPE_CHECKING:
    from qpart.server.models.repository import Model

log = logging.getLogger("qpart.server.plans")
TOKEN_VERSION = "p3"
KEY_FILE = ".qpart-plan-key"   # in the model repository, made on first start
MAC_CHARS = 32                 # hex characters of the HMAC kept in the id (128 bits)
MAX_TOKEN_LENGTH = 1024
DEFAULT_TTL_S = 86400.0        # how long a plan id is served after the Plan call that issued it
MAX_TTL_S = 10 * 365 * 86400   # the longest lifetime a plan id may be given
EXPIRY_DIGITS = 12             # unix seconds of an expiry: up to 12 decimal digits
_GRANULARITY_CODES = {quant.PER_TENSOR: "t", quant.PER_CHANNEL: "c"}
_MALFORMED = "plan id is malformed; use the plan_id a Plan call returned"


@dataclass(frozen=True)
class PlanSpec:
    model: str
    version: str
    split: Split
    head_codings: frozenset | None = None   # the head codings the device decodes (None: every one)

    def token(self) -> str:
        s = self.split
        fields = [TOKEN_VERSION, self.model, self.version, str(s.cut), _widths(s.weight_bits),
                  _widths(s.activation_bits), _GRANULARITY_CODES[s.granularity]]
        if self.head_codings is not None:
            fields.append("h" + "".join(str(c) for c in sorted(self.head_codings)))
        return ":".join(fields)

    @classmethod
    def parse(cls, token: str) -> "PlanSpec":
        if not token:
            raise InvalidArgument("plan id is empty; call Plan first")
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidArgument(f"plan id is longer than {MAX_TOKEN_LENGTH} characters")
        parts = token.split(":")
        if len(parts) not in (7, 8) or parts[0] != TOKEN_VERSION:
            raise InvalidArgument(_MALFORMED)
        _, model, version, cut, weights, acts, gran = parts[:7]
        codings = _codings(parts[7]) if len(parts) == 8 else None
        granularity = {v: k for k, v in _GRANULARITY_CODES.items()}.get(gran)
        if granularity is None:
            raise InvalidArgument("plan id names an unknown weight granularity")
        try:
            return cls(check_name(model), version, Split(_number(cut), _parse(weights), _parse(acts), granularity),
                       codings)
        except ValueError:
            raise InvalidArgument(_MALFORMED) from None

    def check(self, model: "Model") -> "PlanSpec":
        """Raise unless this plan fits the model as the server holds it now."""
        if self.version != model.version:
            raise FailedPrecondition(f"the plan is for version {shown(self.version)} of model {model.name!r}, "
                                     f"the server holds version {model.version}; ask for a new plan")
        s = self.split
        cut = model.profile.cut(model.profile.check_cut(s.cut))
        if len(s.weight_bits) != len(cut.weight_nodes):
            raise InvalidArgument(f"cut {s.cut} has {len(cut.weight_nodes)} weight node(s) on the device, the plan "
                                  f"gives {len(s.weight_bits)} weight bit width(s)")
        if len(s.activation_bits) != len(cut.tensors):
            raise InvalidArgument(f"{len(cut.tensors)} tensor(s) cross cut {s.cut}, the plan gives "
                                  f"{len(s.activation_bits)} activation bit width(s)")
        for index, bits in zip(cut.weight_nodes, s.weight_bits):
            quant.check_bits(bits, f"weight bit width of node {model.profile.nodes[index].name!r}")
        for name, bits in zip(cut.tensors, s.activation_bits):
            quant.check_bits(bits, f"activation bit width of tensor {name!r}")
        return self


def _widths(bits: tuple[int, ...]) -> str:
    return ",".join(str(b) for b in bits) or "-"


def _number(text: str, digits: int = 6) -> int:
    """A non-negative decimal integer of at most `digits` ASCII digits (int() would also take '+7', ' 7', '7_0',
    other scripts' digits and thousands of digits); ValueError otherwise."""
    if not (0 < len(text) <= digits and text.isascii() and text.isdigit()):
        raise ValueError(text)
    return int(text)


def _codings(text: str) -> frozenset:
    """'h01' -> {0, 1}: head codings as strictly increasing digits, DENSE (0) among them, never all of them."""
    digits = text[1:]
    found = frozenset(int(d) for d in digits) if digits.isascii() and digits.isdigit() else frozenset()
    if not (text.startswith("h") and found and "".join(sorted(digits)) == digits and len(found) == len(digits)
            and 0 in found and found < lossless.ALL):
        raise InvalidArgument(_MALFORMED)
    return found


def _parse(text: str) -> tuple[int, ...]:
    if len(text) > MAX_TOKEN_LENGTH // 2:
        raise ValueError(text)
    return () if text == "-" else tuple(_number(b, 3) for b in text.split(","))


def _expiry(text: str) -> int:
    try:
        return _number(text, EXPIRY_DIGITS)
    except ValueError:
        raise InvalidArgument("plan id carries a malformed expiry; use the plan_id a Plan call returned") from None


class PlanSigner:
    """Signs plan ids and verifies them: `sign(token)` appends the expiry and the MAC, `verify(plan_id)` returns
    the token of an id this key signed that has not expired."""

    def __init__(self, key: bytes, ttl_s: float = DEFAULT_TTL_S, clock=time.time):
        if len(key) < 16:
            raise InvalidArgument("the plan key must be at least 16 bytes")
        if not 0 < ttl_s <= MAX_TTL_S:
            raise InvalidArgument(f"the plan id lifetime must be in (0, 10 years] seconds, got {ttl_s}")
        self._key, self.ttl_s, self._clock = key, ttl_s, clock

    @classmethod
    def from_file(cls, path: pathlib.Path, ttl_s: float = DEFAULT_TTL_S) -> "PlanSigner":
        try:
            return cls(bytes.fromhex(path.read_text().strip()), ttl_s)
        except (OSError, ValueError) as e:
            raise InvalidArgument(f"cannot read the plan key {path} (hex, at least 32 characters): {e}") from None

    @classmethod
    def for_repository(cls, directory: pathlib.Path, key_file: pathlib.Path | None = None,
                       ttl_s: float = DEFAULT_TTL_S) -> "PlanSigner":
        """The key in key_file, else the repository's (made now if absent, readable by this user only); where the
        repository cannot be written, a key for this process alone (its plans die with it)."""
        if key_file is not None:
            return cls.from_file(key_file, ttl_s)
        path = pathlib.Path(directory) / KEY_FILE
        if not path.exists():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_hex(32) + "\n")
            except FileExistsError:
                pass               # another replica made it first
            except OSError as e:
                log.warning("cannot write the plan key %s (%s): plan ids are signed with a key for this process "
                            "alone, so replicas and restarts will not accept them; give --plan-key-file", path, e)
                return cls(secrets.token_bytes(32), ttl_s)
        return cls.from_file(path, ttl_s)

    def _mac(self, signed: str) -> str:
        return hmac.new(self._key, signed.encode(), hashlib.sha256).hexdigest()[:MAC_CHARS]

    def sign(self, token: str) -> str:
        signed = f"{token}:{int(self._clock() + self.ttl_s)}"
        return f"{signed}:{self._mac(signed)}"

    @staticmethod
    def unverified_token(plan_id: str) -> str:
        """The token of a plan id without checking its signature or expiry (for log lines only)."""
        return plan_id.rsplit(":", 2)[0]

    @staticmethod
    def expiry(plan_id: str) -> int:
        """Unix seconds after which an id this server signed is refused (InvalidArgument when malformed)."""
        parts = plan_id.rsplit(":", 2)
        if len(parts) != 3:
            raise InvalidArgument(_MALFORMED)
        return _expiry(parts[1])

    def check_expiry(self, expires: int) -> None:
        """Raise FailedPrecondition once `expires` (an id's expiry, as `expiry` returns it) has passed: a cheap
        comparison, made for every message of an open Infer stream."""
        late = self._clock() - expires
        if late > 0:
            raise FailedPrecondition(f"plan id expired {late:.0f} s ago (plan ids are served for {self.ttl_s:g} s); "
                                     f"call Plan again")

    def verify(self, plan_id: str) -> str:
        if not plan_id:
            raise InvalidArgument("plan id is empty; call Plan first")
        if len(plan_id) > MAX_TOKEN_LENGTH:
            raise InvalidArgument(f"plan id is longer than {MAX_TOKEN_LENGTH} characters")
        signed, _, mac = plan_id.rpartition(":")
        token, _, expires = signed.rpartition(":")
        if not token or not hmac.compare_digest(mac.encode(), self._mac(signed).encode()):
            raise InvalidArgument("plan id was not issued by this server or a replica sharing its plan key; use the "
                                  "plan_id a Plan call returned")
        when = _expiry(expires)        # signed by this key, and still checked as strictly as a peer's input
        if when - self._clock() > MAX_TTL_S:
            raise InvalidArgument("plan id expires further ahead than any plan id lifetime; use the plan_id a Plan "
                                  "call returned")
        self.check_expiry(when)
        return token
