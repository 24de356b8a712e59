from qpart.v1 import network_pb2 as _network_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Policy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POLICY_UNSPECIFIED: _ClassVar[Policy]
    QPART: _ClassVar[Policy]
    SERVER_ONLY: _ClassVar[Policy]
    DEVICE_ONLY: _ClassVar[Policy]
    FLOAT_SPLIT: _ClassVar[Policy]
    UNIFORM_INT8: _ClassVar[Policy]
    FIXED: _ClassVar[Policy]
    SERVER_ONLY_CODEC: _ClassVar[Policy]
    SPECULATIVE: _ClassVar[Policy]

class Coding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CODING_RAW: _ClassVar[Coding]
    CODING_ZLIB: _ClassVar[Coding]
    CODING_PNG: _ClassVar[Coding]
    CODING_JPEG: _ClassVar[Coding]
    CODING_WEBP: _ClassVar[Coding]
POLICY_UNSPECIFIED: Policy
QPART: Policy
SERVER_ONLY: Policy
DEVICE_ONLY: Policy
FLOAT_SPLIT: Policy
UNIFORM_INT8: Policy
FIXED: Policy
SERVER_ONLY_CODEC: Policy
SPECULATIVE: Policy
CODING_RAW: Coding
CODING_ZLIB: Coding
CODING_PNG: Coding
CODING_JPEG: Coding
CODING_WEBP: Coding

class ListModelsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ServerLimits(_message.Message):
    __slots__ = ("max_message_bytes", "max_batch_inputs", "max_batch_elements", "max_chunk_bytes", "min_chunk_bytes", "max_tail_elements", "max_cut_tensors", "max_generation_sessions", "max_generation_sessions_per_client", "max_generation_positions", "max_session_cache_bytes", "max_generation_cache_bytes", "generation_idle_s", "max_draft_tokens", "stream_idle_s")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_INPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MIN_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_TAIL_ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_CUT_TENSORS_FIELD_NUMBER: _ClassVar[int]
    MAX_GENERATION_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_GENERATION_SESSIONS_PER_CLIENT_FIELD_NUMBER: _ClassVar[int]
    MAX_GENERATION_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSION_CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_GENERATION_CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    GENERATION_IDLE_S_FIELD_NUMBER: _ClassVar[int]
    MAX_DRAFT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STREAM_IDLE_S_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_batch_inputs: int
    max_batch_elements: int
    max_chunk_bytes: int
    min_chunk_bytes: int
    max_tail_elements: int
    max_cut_tensors: int
    max_generation_sessions: int
    max_generation_sessions_per_client: int
    max_generation_positions: int
    max_session_cache_bytes: int
    max_generation_cache_bytes: int
    generation_idle_s: float
    max_draft_tokens: int
    stream_idle_s: float
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_batch_inputs: _Optional[int] = ..., max_batch_elements: _Optional[int] = ..., max_chunk_bytes: _Optional[int] = ..., min_chunk_bytes: _Optional[int] = ..., max_tail_elements: _Optional[int] = ..., max_cut_tensors: _Optional[int] = ..., max_generation_sessions: _Optional[int] = ..., max_generation_sessions_per_client: _Optional[int] = ..., max_generation_positions: _Optional[int] = ..., max_session_cache_bytes: _Optional[int] = ..., max_generation_cache_bytes: _Optional[int] = ..., generation_idle_s: _Optional[float] = ..., max_draft_tokens: _Optional[int] = ..., stream_idle_s: _Optional[float] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "limits")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    limits: ServerLimits
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., limits: _Optional[_Union[ServerLimits, _Mapping]] = ...) -> None: ...

class TensorInfo(_message.Message):
    __slots__ = ("name", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Preprocessing(_message.Message):
    __slots__ = ("channels", "resize_h", "resize_w", "crop_h", "crop_w", "scale", "mean", "std")
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    RESIZE_H_FIELD_NUMBER: _ClassVar[int]
    RESIZE_W_FIELD_NUMBER: _ClassVar[int]
    CROP_H_FIELD_NUMBER: _ClassVar[int]
    CROP_W_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    channels: int
    resize_h: int
    resize_w: int
    crop_h: int
    crop_w: int
    scale: float
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, channels: _Optional[int] = ..., resize_h: _Optional[int] = ..., resize_w: _Optional[int] = ..., crop_h: _Optional[int] = ..., crop_w: _Optional[int] = ..., scale: _Optional[float] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("name", "op", "inputs", "output_shape", "macs", "weight_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    MACS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    op: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    output_shape: _containers.RepeatedScalarFieldContainer[int]
    macs: int
    weight_count: int
    def __init__(self, name: _Optional[str] = ..., op: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., output_shape: _Optional[_Iterable[int]] = ..., macs: _Optional[int] = ..., weight_count: _Optional[int] = ...) -> None: ...

class CutInfo(_message.Message):
    __slots__ = ("cut", "tensors", "weight_nodes", "device_macs", "in_catalog")
    CUT_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_NODES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_MACS_FIELD_NUMBER: _ClassVar[int]
    IN_CATALOG_FIELD_NUMBER: _ClassVar[int]
    cut: int
    tensors: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    weight_nodes: _containers.RepeatedScalarFieldContainer[str]
    device_macs: int
    in_catalog: bool
    def __init__(self, cut: _Optional[int] = ..., tensors: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., weight_nodes: _Optional[_Iterable[str]] = ..., device_macs: _Optional[int] = ..., in_catalog: _Optional[bool] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "description", "input", "task", "class_names", "outputs", "preprocessing", "nodes", "cuts", "float_test_accuracy", "test_samples", "dataset", "has_catalog", "catalog_budgets", "sequence", "tokenizer")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    CUTS_FIELD_NUMBER: _ClassVar[int]
    FLOAT_TEST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TEST_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    HAS_CATALOG_FIELD_NUMBER: _ClassVar[int]
    CATALOG_BUDGETS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    description: str
    input: TensorInfo
    task: str
    class_names: _containers.RepeatedScalarFieldContainer[str]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    preprocessing: Preprocessing
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    cuts: _containers.RepeatedCompositeFieldContainer[CutInfo]
    float_test_accuracy: float
    test_samples: int
    dataset: str
    has_catalog: bool
    catalog_budgets: _containers.RepeatedScalarFieldContainer[float]
    sequence: _network_pb2.SequenceSpec
    tokenizer: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., description: _Optional[str] = ..., input: _Optional[_Union[TensorInfo, _Mapping]] = ..., task: _Optional[str] = ..., class_names: _Optional[_Iterable[str]] = ..., outputs: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., preprocessing: _Optional[_Union[Preprocessing, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ..., cuts: _Optional[_Iterable[_Union[CutInfo, _Mapping]]] = ..., float_test_accuracy: _Optional[float] = ..., test_samples: _Optional[int] = ..., dataset: _Optional[str] = ..., has_catalog: _Optional[bool] = ..., catalog_budgets: _Optional[_Iterable[float]] = ..., sequence: _Optional[_Union[_network_pb2.SequenceSpec, _Mapping]] = ..., tokenizer: _Optional[str] = ...) -> None: ...

class DeviceCapabilities(_message.Message):
    __slots__ = ("name", "clock_hz", "cycles_per_mac", "macs_per_second", "energy_coefficient", "tx_power_w", "memory_bytes", "image_codings", "head_codings", "seconds_per_node", "max_draft_tokens")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CLOCK_HZ_FIELD_NUMBER: _ClassVar[int]
    CYCLES_PER_MAC_FIELD_NUMBER: _ClassVar[int]
    MACS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ENERGY_COEFFICIENT_FIELD_NUMBER: _ClassVar[int]
    TX_POWER_W_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_CODINGS_FIELD_NUMBER: _ClassVar[int]
    HEAD_CODINGS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_PER_NODE_FIELD_NUMBER: _ClassVar[int]
    MAX_DRAFT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    name: str
    clock_hz: float
    cycles_per_mac: float
    macs_per_second: float
    energy_coefficient: float
    tx_power_w: float
    memory_bytes: int
    image_codings: _containers.RepeatedScalarFieldContainer[Coding]
    head_codings: _containers.RepeatedScalarFieldContainer[_network_pb2.TensorCoding]
    seconds_per_node: float
    max_draft_tokens: int
    def __init__(self, name: _Optional[str] = ..., clock_hz: _Optional[float] = ..., cycles_per_mac: _Optional[float] = ..., macs_per_second: _Optional[float] = ..., energy_coefficient: _Optional[float] = ..., tx_power_w: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., image_codings: _Optional[_Iterable[_Union[Coding, str]]] = ..., head_codings: _Optional[_Iterable[_Union[_network_pb2.TensorCoding, str]]] = ..., seconds_per_node: _Optional[float] = ..., max_draft_tokens: _Optional[int] = ...) -> None: ...

class LinkCapabilities(_message.Message):
    __slots__ = ("rate_bps", "downlink_rate_bps", "bandwidth_hz", "snr_db", "rayleigh_fading", "rtt_s")
    RATE_BPS_FIELD_NUMBER: _ClassVar[int]
    DOWNLINK_RATE_BPS_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_HZ_FIELD_NUMBER: _ClassVar[int]
    SNR_DB_FIELD_NUMBER: _ClassVar[int]
    RAYLEIGH_FADING_FIELD_NUMBER: _ClassVar[int]
    RTT_S_FIELD_NUMBER: _ClassVar[int]
    rate_bps: float
    downlink_rate_bps: float
    bandwidth_hz: float
    snr_db: float
    rayleigh_fading: bool
    rtt_s: float
    def __init__(self, rate_bps: _Optional[float] = ..., downlink_rate_bps: _Optional[float] = ..., bandwidth_hz: _Optional[float] = ..., snr_db: _Optional[float] = ..., rayleigh_fading: _Optional[bool] = ..., rtt_s: _Optional[float] = ...) -> None: ...

class ObjectiveWeights(_message.Message):
    __slots__ = ("time", "energy", "cost")
    TIME_FIELD_NUMBER: _ClassVar[int]
    ENERGY_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    time: float
    energy: float
    cost: float
    def __init__(self, time: _Optional[float] = ..., energy: _Optional[float] = ..., cost: _Optional[float] = ...) -> None: ...

class FixedPlan(_message.Message):
    __slots__ = ("cut", "weight_bits", "activation_bits", "weight_granularity")
    CUT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BITS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_BITS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    cut: int
    weight_bits: _containers.RepeatedScalarFieldContainer[int]
    activation_bits: _containers.RepeatedScalarFieldContainer[int]
    weight_granularity: _network_pb2.Granularity
    def __init__(self, cut: _Optional[int] = ..., weight_bits: _Optional[_Iterable[int]] = ..., activation_bits: _Optional[_Iterable[int]] = ..., weight_granularity: _Optional[_Union[_network_pb2.Granularity, str]] = ...) -> None: ...

class PlanRequest(_message.Message):
    __slots__ = ("model", "device", "link", "accuracy_budget", "weights", "inferences_per_head", "held_heads", "policy", "fixed", "explain", "generation")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_BUDGET_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    INFERENCES_PER_HEAD_FIELD_NUMBER: _ClassVar[int]
    HELD_HEADS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    FIXED_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    model: str
    device: DeviceCapabilities
    link: LinkCapabilities
    accuracy_budget: float
    weights: ObjectiveWeights
    inferences_per_head: int
    held_heads: _containers.RepeatedScalarFieldContainer[str]
    policy: Policy
    fixed: FixedPlan
    explain: bool
    generation: GenerationShape
    def __init__(self, model: _Optional[str] = ..., device: _Optional[_Union[DeviceCapabilities, _Mapping]] = ..., link: _Optional[_Union[LinkCapabilities, _Mapping]] = ..., accuracy_budget: _Optional[float] = ..., weights: _Optional[_Union[ObjectiveWeights, _Mapping]] = ..., inferences_per_head: _Optional[int] = ..., held_heads: _Optional[_Iterable[str]] = ..., policy: _Optional[_Union[Policy, str]] = ..., fixed: _Optional[_Union[FixedPlan, _Mapping]] = ..., explain: _Optional[bool] = ..., generation: _Optional[_Union[GenerationShape, _Mapping]] = ...) -> None: ...

class GenerationShape(_message.Message):
    __slots__ = ("prompt_tokens", "new_tokens", "temperature")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    new_tokens: int
    temperature: float
    def __init__(self, prompt_tokens: _Optional[int] = ..., new_tokens: _Optional[int] = ..., temperature: _Optional[float] = ...) -> None: ...

class ActivationEncoding(_message.Message):
    __slots__ = ("name", "bits", "scale", "zero_point", "sample_shape", "coding", "quality")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ZERO_POINT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_SHAPE_FIELD_NUMBER: _ClassVar[int]
    CODING_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    bits: int
    scale: float
    zero_point: int
    sample_shape: _containers.RepeatedScalarFieldContainer[int]
    coding: Coding
    quality: int
    def __init__(self, name: _Optional[str] = ..., bits: _Optional[int] = ..., scale: _Optional[float] = ..., zero_point: _Optional[int] = ..., sample_shape: _Optional[_Iterable[int]] = ..., coding: _Optional[_Union[Coding, str]] = ..., quality: _Optional[int] = ...) -> None: ...

class PlanPrediction(_message.Message):
    __slots__ = ("device_time_s", "uplink_time_s", "downlink_time_s", "server_time_s", "rtt_time_s", "total_time_s", "device_energy_j", "tx_energy_j", "server_cost", "objective", "accuracy_drop", "head_bytes", "uplink_bytes", "device_memory_bytes")
    DEVICE_TIME_S_FIELD_NUMBER: _ClassVar[int]
    UPLINK_TIME_S_FIELD_NUMBER: _ClassVar[int]
    DOWNLINK_TIME_S_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_S_FIELD_NUMBER: _ClassVar[int]
    RTT_TIME_S_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TIME_S_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ENERGY_J_FIELD_NUMBER: _ClassVar[int]
    TX_ENERGY_J_FIELD_NUMBER: _ClassVar[int]
    SERVER_COST_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_DROP_FIELD_NUMBER: _ClassVar[int]
    HEAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    UPLINK_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    device_time_s: float
    uplink_time_s: float
    downlink_time_s: float
    server_time_s: float
    rtt_time_s: float
    total_time_s: float
    device_energy_j: float
    tx_energy_j: float
    server_cost: float
    objective: float
    accuracy_drop: float
    head_bytes: int
    uplink_bytes: int
    device_memory_bytes: int
    def __init__(self, device_time_s: _Optional[float] = ..., uplink_time_s: _Optional[float] = ..., downlink_time_s: _Optional[float] = ..., server_time_s: _Optional[float] = ..., rtt_time_s: _Optional[float] = ..., total_time_s: _Optional[float] = ..., device_energy_j: _Optional[float] = ..., tx_energy_j: _Optional[float] = ..., server_cost: _Optional[float] = ..., objective: _Optional[float] = ..., accuracy_drop: _Optional[float] = ..., head_bytes: _Optional[int] = ..., uplink_bytes: _Optional[int] = ..., device_memory_bytes: _Optional[int] = ...) -> None: ...

class PlanCandidate(_message.Message):
    __slots__ = ("cut", "weight_bits", "activation_bits", "predicted", "chosen", "rejected_reason", "kind", "coding", "quality", "draft_model", "draft_tokens")
    CUT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BITS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_BITS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_FIELD_NUMBER: _ClassVar[int]
    REJECTED_REASON_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CODING_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    DRAFT_MODEL_FIELD_NUMBER: _ClassVar[int]
    DRAFT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    cut: int
    weight_bits: _containers.RepeatedScalarFieldContainer[int]
    activation_bits: _containers.RepeatedScalarFieldContainer[int]
    predicted: PlanPrediction
    chosen: bool
    rejected_reason: str
    kind: str
    coding: Coding
    quality: int
    draft_model: str
    draft_tokens: int
    def __init__(self, cut: _Optional[int] = ..., weight_bits: _Optional[_Iterable[int]] = ..., activation_bits: _Optional[_Iterable[int]] = ..., predicted: _Optional[_Union[PlanPrediction, _Mapping]] = ..., chosen: _Optional[bool] = ..., rejected_reason: _Optional[str] = ..., kind: _Optional[str] = ..., coding: _Optional[_Union[Coding, str]] = ..., quality: _Optional[int] = ..., draft_model: _Optional[str] = ..., draft_tokens: _Optional[int] = ...) -> None: ...

class PlanResponse(_message.Message):
    __slots__ = ("plan_id", "model", "model_version", "policy", "cut", "num_nodes", "weight_nodes", "weight_bits", "weight_granularity", "activations", "head_hash", "head_bytes", "predicted", "candidates", "reason", "decision_seconds", "max_batch_inputs", "plan_id_expires_at", "server_load", "server_speed", "generation", "drafting")
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CUT_FIELD_NUMBER: _ClassVar[int]
    NUM_NODES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_NODES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BITS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    HEAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DECISION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_INPUTS_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SERVER_LOAD_FIELD_NUMBER: _ClassVar[int]
    SERVER_SPEED_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    DRAFTING_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    model: str
    model_version: str
    policy: Policy
    cut: int
    num_nodes: int
    weight_nodes: _containers.RepeatedScalarFieldContainer[str]
    weight_bits: _containers.RepeatedScalarFieldContainer[int]
    weight_granularity: _network_pb2.Granularity
    activations: _containers.RepeatedCompositeFieldContainer[ActivationEncoding]
    head_hash: str
    head_bytes: int
    predicted: PlanPrediction
    candidates: _containers.RepeatedCompositeFieldContainer[PlanCandidate]
    reason: str
    decision_seconds: float
    max_batch_inputs: int
    plan_id_expires_at: int
    server_load: float
    server_speed: ServerSpeed
    generation: GenerationShape
    drafting: DraftPlan
    def __init__(self, plan_id: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., policy: _Optional[_Union[Policy, str]] = ..., cut: _Optional[int] = ..., num_nodes: _Optional[int] = ..., weight_nodes: _Optional[_Iterable[str]] = ..., weight_bits: _Optional[_Iterable[int]] = ..., weight_granularity: _Optional[_Union[_network_pb2.Granularity, str]] = ..., activations: _Optional[_Iterable[_Union[ActivationEncoding, _Mapping]]] = ..., head_hash: _Optional[str] = ..., head_bytes: _Optional[int] = ..., predicted: _Optional[_Union[PlanPrediction, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[PlanCandidate, _Mapping]]] = ..., reason: _Optional[str] = ..., decision_seconds: _Optional[float] = ..., max_batch_inputs: _Optional[int] = ..., plan_id_expires_at: _Optional[int] = ..., server_load: _Optional[float] = ..., server_speed: _Optional[_Union[ServerSpeed, _Mapping]] = ..., generation: _Optional[_Union[GenerationShape, _Mapping]] = ..., drafting: _Optional[_Union[DraftPlan, _Mapping]] = ...) -> None: ...

class DraftPlan(_message.Message):
    __slots__ = ("model", "model_version", "plan_id", "head_hash", "head_bytes", "weight_bits", "draft_tokens", "acceptance", "tokens_per_round", "measured_positions")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    HEAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BITS_FIELD_NUMBER: _ClassVar[int]
    DRAFT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTANCE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_ROUND_FIELD_NUMBER: _ClassVar[int]
    MEASURED_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    plan_id: str
    head_hash: str
    head_bytes: int
    weight_bits: int
    draft_tokens: int
    acceptance: float
    tokens_per_round: float
    measured_positions: int
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., plan_id: _Optional[str] = ..., head_hash: _Optional[str] = ..., head_bytes: _Optional[int] = ..., weight_bits: _Optional[int] = ..., draft_tokens: _Optional[int] = ..., acceptance: _Optional[float] = ..., tokens_per_round: _Optional[float] = ..., measured_positions: _Optional[int] = ...) -> None: ...

class ServerSpeed(_message.Message):
    __slots__ = ("tail_seconds", "tail_spread", "tail_runs", "tail_refused", "macs_per_second", "macs_spread", "busy_while_timed", "source", "measured_at")
    TAIL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TAIL_SPREAD_FIELD_NUMBER: _ClassVar[int]
    TAIL_RUNS_FIELD_NUMBER: _ClassVar[int]
    TAIL_REFUSED_FIELD_NUMBER: _ClassVar[int]
    MACS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    MACS_SPREAD_FIELD_NUMBER: _ClassVar[int]
    BUSY_WHILE_TIMED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MEASURED_AT_FIELD_NUMBER: _ClassVar[int]
    tail_seconds: float
    tail_spread: float
    tail_runs: int
    tail_refused: int
    macs_per_second: float
    macs_spread: float
    busy_while_timed: float
    source: str
    measured_at: float
    def __init__(self, tail_seconds: _Optional[float] = ..., tail_spread: _Optional[float] = ..., tail_runs: _Optional[int] = ..., tail_refused: _Optional[int] = ..., macs_per_second: _Optional[float] = ..., macs_spread: _Optional[float] = ..., busy_while_timed: _Optional[float] = ..., source: _Optional[str] = ..., measured_at: _Optional[float] = ...) -> None: ...

class FetchHeadRequest(_message.Message):
    __slots__ = ("plan_id", "offset", "max_chunk_bytes")
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    offset: int
    max_chunk_bytes: int
    def __init__(self, plan_id: _Optional[str] = ..., offset: _Optional[int] = ..., max_chunk_bytes: _Optional[int] = ...) -> None: ...

class HeadChunk(_message.Message):
    __slots__ = ("content_hash", "total_bytes", "offset", "data")
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    content_hash: str
    total_bytes: int
    offset: int
    data: bytes
    def __init__(self, content_hash: _Optional[str] = ..., total_bytes: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class TensorBatch(_message.Message):
    __slots__ = ("name", "sample_shape", "bits", "data", "coding")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_SHAPE_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CODING_FIELD_NUMBER: _ClassVar[int]
    name: str
    sample_shape: _containers.RepeatedScalarFieldContainer[int]
    bits: int
    data: bytes
    coding: Coding
    def __init__(self, name: _Optional[str] = ..., sample_shape: _Optional[_Iterable[int]] = ..., bits: _Optional[int] = ..., data: _Optional[bytes] = ..., coding: _Optional[_Union[Coding, str]] = ...) -> None: ...

class ActivationBatch(_message.Message):
    __slots__ = ("request_ids", "tensors")
    REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    request_ids: _containers.RepeatedScalarFieldContainer[int]
    tensors: _containers.RepeatedCompositeFieldContainer[TensorBatch]
    def __init__(self, request_ids: _Optional[_Iterable[int]] = ..., tensors: _Optional[_Iterable[_Union[TensorBatch, _Mapping]]] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("plan_id", "batch", "deadline_s")
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    batch: ActivationBatch
    deadline_s: float
    def __init__(self, plan_id: _Optional[str] = ..., batch: _Optional[_Union[ActivationBatch, _Mapping]] = ..., deadline_s: _Optional[float] = ...) -> None: ...

class OutputValues(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class InferResult(_message.Message):
    __slots__ = ("request_id", "outputs", "label")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    outputs: _containers.RepeatedCompositeFieldContainer[OutputValues]
    label: int
    def __init__(self, request_id: _Optional[int] = ..., outputs: _Optional[_Iterable[_Union[OutputValues, _Mapping]]] = ..., label: _Optional[int] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("results", "server_compute_s", "server_queue_s", "status_code", "status_message")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    SERVER_COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    SERVER_QUEUE_S_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[InferResult]
    server_compute_s: float
    server_queue_s: float
    status_code: int
    status_message: str
    def __init__(self, results: _Optional[_Iterable[_Union[InferResult, _Mapping]]] = ..., server_compute_s: _Optional[float] = ..., server_queue_s: _Optional[float] = ..., status_code: _Optional[int] = ..., status_message: _Optional[str] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("payload", "reply_bytes")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    REPLY_BYTES_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    reply_bytes: int
    def __init__(self, payload: _Optional[bytes] = ..., reply_bytes: _Optional[int] = ...) -> None: ...

class ProbeResponse(_message.Message):
    __slots__ = ("payload", "received_bytes")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    received_bytes: int
    def __init__(self, payload: _Optional[bytes] = ..., received_bytes: _Optional[int] = ...) -> None: ...

class Sampling(_message.Message):
    __slots__ = ("temperature", "seed")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    seed: int
    def __init__(self, temperature: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("plan_id", "session_id", "position", "tensors", "sampling", "max_new_tokens", "stop_tokens", "close", "draft_count", "draft_probabilities")
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    DRAFT_COUNT_FIELD_NUMBER: _ClassVar[int]
    DRAFT_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    session_id: str
    position: int
    tensors: _containers.RepeatedCompositeFieldContainer[TensorBatch]
    sampling: Sampling
    max_new_tokens: int
    stop_tokens: _containers.RepeatedScalarFieldContainer[int]
    close: bool
    draft_count: int
    draft_probabilities: bytes
    def __init__(self, plan_id: _Optional[str] = ..., session_id: _Optional[str] = ..., position: _Optional[int] = ..., tensors: _Optional[_Iterable[_Union[TensorBatch, _Mapping]]] = ..., sampling: _Optional[_Union[Sampling, _Mapping]] = ..., max_new_tokens: _Optional[int] = ..., stop_tokens: _Optional[_Iterable[int]] = ..., close: _Optional[bool] = ..., draft_count: _Optional[int] = ..., draft_probabilities: _Optional[bytes] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("session_id", "position", "token", "server_compute_s", "cache_bytes", "last", "closed", "accepted")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SERVER_COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    position: int
    token: int
    server_compute_s: float
    cache_bytes: int
    last: bool
    closed: bool
    accepted: int
    def __init__(self, session_id: _Optional[str] = ..., position: _Optional[int] = ..., token: _Optional[int] = ..., server_compute_s: _Optional[float] = ..., cache_bytes: _Optional[int] = ..., last: _Optional[bool] = ..., closed: _Optional[bool] = ..., accepted: _Optional[int] = ...) -> None: ...
