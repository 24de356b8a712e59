from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Activation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTIVATION_UNSPECIFIED: _ClassVar[Activation]
    RELU: _ClassVar[Activation]
    RELU6: _ClassVar[Activation]
    HARDSWISH: _ClassVar[Activation]
    HARDSIGMOID: _ClassVar[Activation]
    SIGMOID: _ClassVar[Activation]
    SILU: _ClassVar[Activation]
    GELU: _ClassVar[Activation]
    GELU_TANH: _ClassVar[Activation]

class Granularity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRANULARITY_UNSPECIFIED: _ClassVar[Granularity]
    PER_TENSOR: _ClassVar[Granularity]
    PER_CHANNEL: _ClassVar[Granularity]

class TensorCoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TENSOR_CODING_DENSE: _ClassVar[TensorCoding]
    TENSOR_CODING_ZLIB: _ClassVar[TensorCoding]
    TENSOR_CODING_LZMA2: _ClassVar[TensorCoding]
    TENSOR_CODING_LZMA2_BYTES: _ClassVar[TensorCoding]
ACTIVATION_UNSPECIFIED: Activation
RELU: Activation
RELU6: Activation
HARDSWISH: Activation
HARDSIGMOID: Activation
SIGMOID: Activation
SILU: Activation
GELU: Activation
GELU_TANH: Activation
GRANULARITY_UNSPECIFIED: Granularity
PER_TENSOR: Granularity
PER_CHANNEL: Granularity
TENSOR_CODING_DENSE: TensorCoding
TENSOR_CODING_ZLIB: TensorCoding
TENSOR_CODING_LZMA2: TensorCoding
TENSOR_CODING_LZMA2_BYTES: TensorCoding

class LinearOp(_message.Message):
    __slots__ = ("in_features", "out_features", "bias")
    IN_FEATURES_FIELD_NUMBER: _ClassVar[int]
    OUT_FEATURES_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    in_features: int
    out_features: int
    bias: bool
    def __init__(self, in_features: _Optional[int] = ..., out_features: _Optional[int] = ..., bias: _Optional[bool] = ...) -> None: ...

class Conv2dOp(_message.Message):
    __slots__ = ("in_channels", "out_channels", "kernel_h", "kernel_w", "stride_h", "stride_w", "padding_h", "padding_w", "dilation_h", "dilation_w", "groups", "bias")
    IN_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    OUT_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_H_FIELD_NUMBER: _ClassVar[int]
    KERNEL_W_FIELD_NUMBER: _ClassVar[int]
    STRIDE_H_FIELD_NUMBER: _ClassVar[int]
    STRIDE_W_FIELD_NUMBER: _ClassVar[int]
    PADDING_H_FIELD_NUMBER: _ClassVar[int]
    PADDING_W_FIELD_NUMBER: _ClassVar[int]
    DILATION_H_FIELD_NUMBER: _ClassVar[int]
    DILATION_W_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    in_channels: int
    out_channels: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    padding_h: int
    padding_w: int
    dilation_h: int
    dilation_w: int
    groups: int
    bias: bool
    def __init__(self, in_channels: _Optional[int] = ..., out_channels: _Optional[int] = ..., kernel_h: _Optional[int] = ..., kernel_w: _Optional[int] = ..., stride_h: _Optional[int] = ..., stride_w: _Optional[int] = ..., padding_h: _Optional[int] = ..., padding_w: _Optional[int] = ..., dilation_h: _Optional[int] = ..., dilation_w: _Optional[int] = ..., groups: _Optional[int] = ..., bias: _Optional[bool] = ...) -> None: ...

class BatchNormOp(_message.Message):
    __slots__ = ("channels",)
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    channels: int
    def __init__(self, channels: _Optional[int] = ...) -> None: ...

class ActivationOp(_message.Message):
    __slots__ = ("function",)
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    function: Activation
    def __init__(self, function: _Optional[_Union[Activation, str]] = ...) -> None: ...

class AddOp(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MulOp(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConcatOp(_message.Message):
    __slots__ = ("axis",)
    AXIS_FIELD_NUMBER: _ClassVar[int]
    axis: int
    def __init__(self, axis: _Optional[int] = ...) -> None: ...

class Pool2dOp(_message.Message):
    __slots__ = ("kernel_h", "kernel_w", "stride_h", "stride_w", "padding_h", "padding_w")
    KERNEL_H_FIELD_NUMBER: _ClassVar[int]
    KERNEL_W_FIELD_NUMBER: _ClassVar[int]
    STRIDE_H_FIELD_NUMBER: _ClassVar[int]
    STRIDE_W_FIELD_NUMBER: _ClassVar[int]
    PADDING_H_FIELD_NUMBER: _ClassVar[int]
    PADDING_W_FIELD_NUMBER: _ClassVar[int]
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    padding_h: int
    padding_w: int
    def __init__(self, kernel_h: _Optional[int] = ..., kernel_w: _Optional[int] = ..., stride_h: _Optional[int] = ..., stride_w: _Optional[int] = ..., padding_h: _Optional[int] = ..., padding_w: _Optional[int] = ...) -> None: ...

class AdaptiveAvgPool2dOp(_message.Message):
    __slots__ = ("out_h", "out_w")
    OUT_H_FIELD_NUMBER: _ClassVar[int]
    OUT_W_FIELD_NUMBER: _ClassVar[int]
    out_h: int
    out_w: int
    def __init__(self, out_h: _Optional[int] = ..., out_w: _Optional[int] = ...) -> None: ...

class FlattenOp(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReshapeOp(_message.Message):
    __slots__ = ("shape",)
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, shape: _Optional[_Iterable[int]] = ...) -> None: ...

class IdentityOp(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PermuteOp(_message.Message):
    __slots__ = ("dims",)
    DIMS_FIELD_NUMBER: _ClassVar[int]
    dims: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dims: _Optional[_Iterable[int]] = ...) -> None: ...

class SliceOp(_message.Message):
    __slots__ = ("axis", "start", "stop")
    AXIS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    axis: int
    start: int
    stop: int
    def __init__(self, axis: _Optional[int] = ..., start: _Optional[int] = ..., stop: _Optional[int] = ...) -> None: ...

class EmbeddingOp(_message.Message):
    __slots__ = ("num_embeddings", "embedding_dim")
    NUM_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    num_embeddings: int
    embedding_dim: int
    def __init__(self, num_embeddings: _Optional[int] = ..., embedding_dim: _Optional[int] = ...) -> None: ...

class PositionEmbeddingOp(_message.Message):
    __slots__ = ("max_positions", "dim")
    MAX_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    max_positions: int
    dim: int
    def __init__(self, max_positions: _Optional[int] = ..., dim: _Optional[int] = ...) -> None: ...

class RotaryOp(_message.Message):
    __slots__ = ("heads", "head_dim", "rotary_dims", "base")
    HEADS_FIELD_NUMBER: _ClassVar[int]
    HEAD_DIM_FIELD_NUMBER: _ClassVar[int]
    ROTARY_DIMS_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    heads: int
    head_dim: int
    rotary_dims: int
    base: float
    def __init__(self, heads: _Optional[int] = ..., head_dim: _Optional[int] = ..., rotary_dims: _Optional[int] = ..., base: _Optional[float] = ...) -> None: ...

class LayerNormOp(_message.Message):
    __slots__ = ("dim", "eps", "bias")
    DIM_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    dim: int
    eps: float
    bias: bool
    def __init__(self, dim: _Optional[int] = ..., eps: _Optional[float] = ..., bias: _Optional[bool] = ...) -> None: ...

class RmsNormOp(_message.Message):
    __slots__ = ("dim", "eps")
    DIM_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    dim: int
    eps: float
    def __init__(self, dim: _Optional[int] = ..., eps: _Optional[float] = ...) -> None: ...

class SoftmaxOp(_message.Message):
    __slots__ = ("axis",)
    AXIS_FIELD_NUMBER: _ClassVar[int]
    axis: int
    def __init__(self, axis: _Optional[int] = ...) -> None: ...

class AttentionOp(_message.Message):
    __slots__ = ("heads", "kv_heads", "head_dim", "scale")
    HEADS_FIELD_NUMBER: _ClassVar[int]
    KV_HEADS_FIELD_NUMBER: _ClassVar[int]
    HEAD_DIM_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    heads: int
    kv_heads: int
    head_dim: int
    scale: float
    def __init__(self, heads: _Optional[int] = ..., kv_heads: _Optional[int] = ..., head_dim: _Optional[int] = ..., scale: _Optional[float] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("name", "inputs", "source", "conv2d", "linear", "batch_norm", "activation", "add", "mul", "concat", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "flatten", "reshape", "identity", "permute", "slice", "embedding", "position_embedding", "rotary", "layer_norm", "rms_norm", "softmax", "attention")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONV2D_FIELD_NUMBER: _ClassVar[int]
    LINEAR_FIELD_NUMBER: _ClassVar[int]
    BATCH_NORM_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    ADD_FIELD_NUMBER: _ClassVar[int]
    MUL_FIELD_NUMBER: _ClassVar[int]
    CONCAT_FIELD_NUMBER: _ClassVar[int]
    MAX_POOL2D_FIELD_NUMBER: _ClassVar[int]
    AVG_POOL2D_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_AVG_POOL2D_FIELD_NUMBER: _ClassVar[int]
    FLATTEN_FIELD_NUMBER: _ClassVar[int]
    RESHAPE_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    PERMUTE_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    POSITION_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    ROTARY_FIELD_NUMBER: _ClassVar[int]
    LAYER_NORM_FIELD_NUMBER: _ClassVar[int]
    RMS_NORM_FIELD_NUMBER: _ClassVar[int]
    SOFTMAX_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    source: str
    conv2d: Conv2dOp
    linear: LinearOp
    batch_norm: BatchNormOp
    activation: ActivationOp
    add: AddOp
    mul: MulOp
    concat: ConcatOp
    max_pool2d: Pool2dOp
    avg_pool2d: Pool2dOp
    adaptive_avg_pool2d: AdaptiveAvgPool2dOp
    flatten: FlattenOp
    reshape: ReshapeOp
    identity: IdentityOp
    permute: PermuteOp
    slice: SliceOp
    embedding: EmbeddingOp
    position_embedding: PositionEmbeddingOp
    rotary: RotaryOp
    layer_norm: LayerNormOp
    rms_norm: RmsNormOp
    softmax: SoftmaxOp
    attention: AttentionOp
    def __init__(self, name: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., source: _Optional[str] = ..., conv2d: _Optional[_Union[Conv2dOp, _Mapping]] = ..., linear: _Optional[_Union[LinearOp, _Mapping]] = ..., batch_norm: _Optional[_Union[BatchNormOp, _Mapping]] = ..., activation: _Optional[_Union[ActivationOp, _Mapping]] = ..., add: _Optional[_Union[AddOp, _Mapping]] = ..., mul: _Optional[_Union[MulOp, _Mapping]] = ..., concat: _Optional[_Union[ConcatOp, _Mapping]] = ..., max_pool2d: _Optional[_Union[Pool2dOp, _Mapping]] = ..., avg_pool2d: _Optional[_Union[Pool2dOp, _Mapping]] = ..., adaptive_avg_pool2d: _Optional[_Union[AdaptiveAvgPool2dOp, _Mapping]] = ..., flatten: _Optional[_Union[FlattenOp, _Mapping]] = ..., reshape: _Optional[_Union[ReshapeOp, _Mapping]] = ..., identity: _Optional[_Union[IdentityOp, _Mapping]] = ..., permute: _Optional[_Union[PermuteOp, _Mapping]] = ..., slice: _Optional[_Union[SliceOp, _Mapping]] = ..., embedding: _Optional[_Union[EmbeddingOp, _Mapping]] = ..., position_embedding: _Optional[_Union[PositionEmbeddingOp, _Mapping]] = ..., rotary: _Optional[_Union[RotaryOp, _Mapping]] = ..., layer_norm: _Optional[_Union[LayerNormOp, _Mapping]] = ..., rms_norm: _Optional[_Union[RmsNormOp, _Mapping]] = ..., softmax: _Optional[_Union[SoftmaxOp, _Mapping]] = ..., attention: _Optional[_Union[AttentionOp, _Mapping]] = ...) -> None: ...

class NetworkSpec(_message.Message):
    __slots__ = ("format_version", "input_shape", "nodes", "input", "outputs", "sequence")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    input: str
    outputs: _containers.RepeatedScalarFieldContainer[str]
    sequence: SequenceSpec
    def __init__(self, format_version: _Optional[int] = ..., input_shape: _Optional[_Iterable[int]] = ..., nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., input: _Optional[str] = ..., outputs: _Optional[_Iterable[str]] = ..., sequence: _Optional[_Union[SequenceSpec, _Mapping]] = ...) -> None: ...

class SequenceSpec(_message.Message):
    __slots__ = ("vocab_size", "max_positions")
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    vocab_size: int
    max_positions: int
    def __init__(self, vocab_size: _Optional[int] = ..., max_positions: _Optional[int] = ...) -> None: ...

class PackedTensor(_message.Message):
    __slots__ = ("name", "shape", "bits", "granularity", "scale", "zero_point", "data", "coding")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ZERO_POINT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CODING_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    bits: int
    granularity: Granularity
    scale: _containers.RepeatedScalarFieldContainer[float]
    zero_point: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    coding: TensorCoding
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., bits: _Optional[int] = ..., granularity: _Optional[_Union[Granularity, str]] = ..., scale: _Optional[_Iterable[float]] = ..., zero_point: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., coding: _Optional[_Union[TensorCoding, str]] = ...) -> None: ...

class Head(_message.Message):
    __slots__ = ("format_version", "model", "model_version", "cut", "network", "parameters")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CUT_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    model: str
    model_version: str
    cut: int
    network: NetworkSpec
    parameters: _containers.RepeatedCompositeFieldContainer[PackedTensor]
    def __init__(self, format_version: _Optional[int] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., cut: _Optional[int] = ..., network: _Optional[_Union[NetworkSpec, _Mapping]] = ..., parameters: _Optional[_Iterable[_Union[PackedTensor, _Mapping]]] = ...) -> None: ...
