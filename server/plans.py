"""Plan ids: an opaque, self-contained token naming model, version, cut and bit widths.

Any replica that holds the same model version can serve a plan it did not make, and a restarted
server keeps serving the plans it handed out. Tokens are parsed strictly and checked against the
model before use.
"""
from dataclasses import dataclass

from qpart.common import quant
from qpart.common.errors import FailedPrecondition, InvalidArgument
from qpart.server.repository import Model, check_name

TOKEN_VERSION = "p1"
MAX_TOKEN_LENGTH = 1024
_GRANULARITY_CODES = {quant.PER_TENSOR: "t", quant.PER_CHANNEL: "c"}


@dataclass(frozen=True)
class PlanSpec:
    model: str
    version: str
    partition_point: int           # p: the device runs learnable layers 1..p-1
    weight_bits: tuple[int, ...]   # bits of device layers 1..p-1 (32: float32)
    activation_bits: int           # bits of the activation at the cut (32: float32; 0 when p = L+1)
    granularity: str = quant.PER_TENSOR  # scale sharing of the head's weights

    def token(self) -> str:
        bits = ",".join(str(b) for b in self.weight_bits) or "-"
        return ":".join([TOKEN_VERSION, self.model, self.version, str(self.partition_point), bits,
                         str(self.activation_bits), _GRANULARITY_CODES[self.granularity]])

    @classmethod
    def parse(cls, token: str) -> "PlanSpec":
        if not token:
            raise InvalidArgument("plan id is empty; call Plan first")
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidArgument(f"plan id is longer than {MAX_TOKEN_LENGTH} characters")
        parts = token.split(":")
        if len(parts) != 7 or parts[0] != TOKEN_VERSION:
            raise InvalidArgument("plan id is malformed; use the plan_id a Plan call returned")
        _, model, version, p, bits, act, gran = parts
        granularity = {v: k for k, v in _GRANULARITY_CODES.items()}.get(gran)
        try:
            weight_bits = () if bits == "-" else tuple(int(b) for b in bits.split(","))
            spec = cls(check_name(model), version, int(p), weight_bits, int(act), granularity)
        except ValueError:
            raise InvalidArgument("plan id is malformed; use the plan_id a Plan call returned") from None
        if granularity is None:
            raise InvalidArgument("plan id names an unknown weight granularity")
        return spec

    def check(self, model: Model) -> "PlanSpec":
        """Raise unless this plan fits the model as the server holds it now."""
        if self.version != model.version:
            raise FailedPrecondition(f"the plan is for version {self.version} of model {model.name!r}, "
                                     f"the server holds version {model.version}; ask for a new plan")
        p = model.profile.check_partition_point(self.partition_point)
        if len(self.weight_bits) != p - 1:
            raise InvalidArgument(f"partition point {p} needs {p - 1} weight bit width(s), got {len(self.weight_bits)}")
        for i, bits in enumerate(self.weight_bits, start=1):
            quant.check_bits(bits, f"weight bit width of layer {i}")
        if p == model.num_layers + 1:
            if self.activation_bits != 0:
                raise InvalidArgument("nothing crosses the cut when the whole model runs on the device; "
                                      "activation bits must be 0")
        else:
            quant.check_bits(self.activation_bits, "activation bit width")
        return self

    def activation_params(self, model: Model) -> quant.QuantParams | None:
        """The static quantizer of the activation at the cut (None for float32)."""
        if self.activation_bits == quant.FLOAT_BITS:
            return None
        return model.activation_params(self.partition_point, self.activation_bits)
