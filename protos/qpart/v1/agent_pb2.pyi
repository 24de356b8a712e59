from qpart.v1 import service_pb2 as _service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DaemonState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DAEMON_STATE_UNSPECIFIED: _ClassVar[DaemonState]
    DAEMON_WAITING: _ClassVar[DaemonState]
    DAEMON_READY: _ClassVar[DaemonState]
DAEMON_STATE_UNSPECIFIED: DaemonState
DAEMON_WAITING: DaemonState
DAEMON_READY: DaemonState

class GenerateTextRequest(_message.Message):
    __slots__ = ("model", "prompt", "max_new_tokens", "temperature", "seed", "through_end")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    THROUGH_END_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: str
    max_new_tokens: int
    temperature: float
    seed: int
    through_end: bool
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[str] = ..., max_new_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., seed: _Optional[int] = ..., through_end: _Optional[bool] = ...) -> None: ...

class GenerateTextResponse(_message.Message):
    __slots__ = ("token", "done", "text", "tokens", "first_token_s", "seconds", "cut", "num_nodes", "resent_contexts")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    FIRST_TOKEN_S_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    CUT_FIELD_NUMBER: _ClassVar[int]
    NUM_NODES_FIELD_NUMBER: _ClassVar[int]
    RESENT_CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    token: int
    done: bool
    text: str
    tokens: int
    first_token_s: float
    seconds: float
    cut: int
    num_nodes: int
    resent_contexts: int
    def __init__(self, token: _Optional[int] = ..., done: _Optional[bool] = ..., text: _Optional[str] = ..., tokens: _Optional[int] = ..., first_token_s: _Optional[float] = ..., seconds: _Optional[float] = ..., cut: _Optional[int] = ..., num_nodes: _Optional[int] = ..., resent_contexts: _Optional[int] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("shape", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("model", "image", "pixels", "tensor")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    model: str
    image: bytes
    pixels: Tensor
    tensor: Tensor
    def __init__(self, model: _Optional[str] = ..., image: _Optional[bytes] = ..., pixels: _Optional[_Union[Tensor, _Mapping]] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("label", "class_name", "scores", "cut", "num_nodes", "seconds")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    CUT_FIELD_NUMBER: _ClassVar[int]
    NUM_NODES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    label: int
    class_name: str
    scores: _containers.RepeatedScalarFieldContainer[float]
    cut: int
    num_nodes: int
    seconds: float
    def __init__(self, label: _Optional[int] = ..., class_name: _Optional[str] = ..., scores: _Optional[_Iterable[float]] = ..., cut: _Optional[int] = ..., num_nodes: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelStatus(_message.Message):
    __slots__ = ("model", "plan", "planned_at", "inputs", "request_rate", "expected_reuse", "backend", "plans")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    PLANNED_AT_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_RATE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REUSE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PLANS_FIELD_NUMBER: _ClassVar[int]
    model: str
    plan: _service_pb2.PlanResponse
    planned_at: float
    inputs: int
    request_rate: float
    expected_reuse: int
    backend: str
    plans: int
    def __init__(self, model: _Optional[str] = ..., plan: _Optional[_Union[_service_pb2.PlanResponse, _Mapping]] = ..., planned_at: _Optional[float] = ..., inputs: _Optional[int] = ..., request_rate: _Optional[float] = ..., expected_reuse: _Optional[int] = ..., backend: _Optional[str] = ..., plans: _Optional[int] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("models", "macs_per_second", "uplink_bps", "rtt_s", "state", "waiting_for", "attempts", "next_attempt_s")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MACS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    UPLINK_BPS_FIELD_NUMBER: _ClassVar[int]
    RTT_S_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_S_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelStatus]
    macs_per_second: float
    uplink_bps: float
    rtt_s: float
    state: DaemonState
    waiting_for: str
    attempts: int
    next_attempt_s: float
    def __init__(self, models: _Optional[_Iterable[_Union[ModelStatus, _Mapping]]] = ..., macs_per_second: _Optional[float] = ..., uplink_bps: _Optional[float] = ..., rtt_s: _Optional[float] = ..., state: _Optional[_Union[DaemonState, str]] = ..., waiting_for: _Optional[str] = ..., attempts: _Optional[int] = ..., next_attempt_s: _Optional[float] = ...) -> None: ...
