"""The plan policies: their names, what each does, and their enum values in the contract.

The one table every peer and tool reads (planner, RPC conversions, device agent, CLI, benchmark).
"""
from qpart.common.errors import InvalidArgument
from qpart.v1 import service_pb2 as spb

QPART = "qpart"
SPECULATIVE = "speculative"
FIXED = "fixed"
POLICIES = {   # name -> (contract enum value, what it does)
    QPART: (spb.QPART, "joint cut and per-layer bit widths from the certified catalog (QPART, paper Algorithm 2)"),
    "server_only": (spb.SERVER_ONLY, "everything on the server: the raw input, quantized only if the budget allows"),
    "server_only_codec": (spb.SERVER_ONLY_CODEC, "everything on the server: the input as the smallest PNG, JPEG or "
                          "WebP file certified within the budget that the device can encode"),
    "device_only": (spb.DEVICE_ONLY, "everything on the device: the float32 model is shipped"),
    "float_split": (spb.FLOAT_SPLIT, "best cut with float32 weights and activation (Neurosurgeon-style)"),
    "uniform_int8": (spb.UNIFORM_INT8, "best cut with uniform 8-bit weights and activation"),
    FIXED: (spb.FIXED, "the cut and bit widths the device gives, priced but not checked against the budget"),
    SPECULATIVE: (spb.SPECULATIVE, "a language model only: the target on the server verifies tokens a draft model "
                    "drafts on the device (the draft and k chosen from the acceptance measured on validation text)"),
}
NAMES = tuple(POLICIES)
BASELINES = ("server_only", "server_only_codec", "device_only", "float_split", "uniform_int8")   # what QPART is compared with
_BY_ENUM = {enum: name for name, (enum, _) in POLICIES.items()}


def to_enum(name: str) -> int:
    if name not in POLICIES:
        raise InvalidArgument(f"unknown policy {name!r}; use one of {', '.join(NAMES)}")
    return POLICIES[name][0]


def from_enum(value: int) -> str:
    """The policy name of an enum value; POLICY_UNSPECIFIED means QPART."""
    if value == spb.POLICY_UNSPECIFIED:
        return QPART
    if value not in _BY_ENUM:
        raise InvalidArgument(f"unknown policy enum value {value}; use one of {', '.join(NAMES)}")
    return _BY_ENUM[value]
