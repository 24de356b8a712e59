"""Plan ids: an opaque, self-contained token naming model, version and split.

Any replica that holds the same model version can serve a plan it did not make, and a restarted
server keeps serving the plans it handed out. Tokens are parsed strictly and checked against the
model before use.
"""
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qpart.common import quant
from qpart.common.errors import FailedPrecondition, InvalidArgument
from qpart.common.names import check_name
from qpart.server.models.split import Split

if TYPE_CHECKING:
    from qpart.server.models.repository import Model

TOKEN_VERSION = "p1"
MAX_TOKEN_LENGTH = 1024
_GRANULARITY_CODES = {quant.PER_TENSOR: "t", quant.PER_CHANNEL: "c"}
_MALFORMED = "plan id is malformed; use the plan_id a Plan call returned"


@dataclass(frozen=True)
class PlanSpec:
    model: str
    version: str
    split: Split

    def token(self) -> str:
        s = self.split
        bits = ",".join(str(b) for b in s.weight_bits) or "-"
        return ":".join([TOKEN_VERSION, self.model, self.version, str(s.partition_point), bits,
                         str(s.activation_bits), _GRANULARITY_CODES[s.granularity]])

    @classmethod
    def parse(cls, token: str) -> "PlanSpec":
        if not token:
            raise InvalidArgument("plan id is empty; call Plan first")
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidArgument(f"plan id is longer than {MAX_TOKEN_LENGTH} characters")
        parts = token.split(":")
        if len(parts) != 7 or parts[0] != TOKEN_VERSION:
            raise InvalidArgument(_MALFORMED)
        _, model, version, p, bits, act, gran = parts
        granularity = {v: k for k, v in _GRANULARITY_CODES.items()}.get(gran)
        if granularity is None:
            raise InvalidArgument("plan id names an unknown weight granularity")
        try:
            weight_bits = () if bits == "-" else tuple(int(b) for b in bits.split(","))
            return cls(check_name(model), version, Split(int(p), weight_bits, int(act), granularity))
        except ValueError:
            raise InvalidArgument(_MALFORMED) from None

    def check(self, model: "Model") -> "PlanSpec":
        """Raise unless this plan fits the model as the server holds it now."""
        if self.version != model.version:
            raise FailedPrecondition(f"the plan is for version {self.version} of model {model.name!r}, "
                                     f"the server holds version {model.version}; ask for a new plan")
        s = self.split
        p = model.profile.check_partition_point(s.partition_point)
        if len(s.weight_bits) != p - 1:
            raise InvalidArgument(f"partition point {p} needs {p - 1} weight bit width(s), got {len(s.weight_bits)}")
        for i, bits in enumerate(s.weight_bits, start=1):
            quant.check_bits(bits, f"weight bit width of layer {i}")
        if p == model.num_layers + 1:
            if s.activation_bits != 0:
                raise InvalidArgument("nothing crosses the cut when the whole model runs on the device; "
                                      "activation bits must be 0")
        else:
            quant.check_bits(s.activation_bits, "activation bit width")
        return self
