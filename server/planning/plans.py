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

TOKEN_VERSION = "p2"
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
        return ":".join([TOKEN_VERSION, self.model, self.version, str(s.cut), _widths(s.weight_bits),
                         _widths(s.activation_bits), _GRANULARITY_CODES[s.granularity]])

    @classmethod
    def parse(cls, token: str) -> "PlanSpec":
        if not token:
            raise InvalidArgument("plan id is empty; call Plan first")
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidArgument(f"plan id is longer than {MAX_TOKEN_LENGTH} characters")
        parts = token.split(":")
        if len(parts) != 7 or parts[0] != TOKEN_VERSION:
            raise InvalidArgument(_MALFORMED)
        _, model, version, cut, weights, acts, gran = parts
        granularity = {v: k for k, v in _GRANULARITY_CODES.items()}.get(gran)
        if granularity is None:
            raise InvalidArgument("plan id names an unknown weight granularity")
        try:
            return cls(check_name(model), version, Split(int(cut), _parse(weights), _parse(acts), granularity))
        except ValueError:
            raise InvalidArgument(_MALFORMED) from None

    def check(self, model: "Model") -> "PlanSpec":
        """Raise unless this plan fits the model as the server holds it now."""
        if self.version != model.version:
            raise FailedPrecondition(f"the plan is for version {self.version} of model {model.name!r}, "
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


def _parse(text: str) -> tuple[int, ...]:
    if len(text) > MAX_TOKEN_LENGTH // 2:
        raise ValueError(text)
    return () if text == "-" else tuple(int(b) for b in text.split(","))
