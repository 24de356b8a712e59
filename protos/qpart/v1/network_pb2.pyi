from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Granularity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRANULARITY_UNSPECIFIED: _ClassVar[Granularity]
    PER_TENSOR: _ClassVar[Granularity]
    PER_CHANNEL: _ClassVar[Granularity]
GRANULARITY_UNSPECIFIED: Granularity
PER_TENSOR: Granularity
PER_CHANNEL: Granularity

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

class ReLUOp(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

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

class FlattenOp(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DropoutOp(_message.Message):
    __slots__ = ("p",)
    P_FIELD_NUMBER: _ClassVar[int]
    p: float
    def __init__(self, p: _Optional[float] = ...) -> None: ...

class Layer(_message.Message):
    __slots__ = ("name", "linear", "conv2d", "relu", "max_pool2d", "avg_pool2d", "flatten", "dropout")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LINEAR_FIELD_NUMBER: _ClassVar[int]
    CONV2D_FIELD_NUMBER: _ClassVar[int]
    RELU_FIELD_NUMBER: _ClassVar[int]
    MAX_POOL2D_FIELD_NUMBER: _ClassVar[int]
    AVG_POOL2D_FIELD_NUMBER: _ClassVar[int]
    FLATTEN_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    linear: LinearOp
    conv2d: Conv2dOp
    relu: ReLUOp
    max_pool2d: Pool2dOp
    avg_pool2d: Pool2dOp
    flatten: FlattenOp
    dropout: DropoutOp
    def __init__(self, name: _Optional[str] = ..., linear: _Optional[_Union[LinearOp, _Mapping]] = ..., conv2d: _Optional[_Union[Conv2dOp, _Mapping]] = ..., relu: _Optional[_Union[ReLUOp, _Mapping]] = ..., max_pool2d: _Optional[_Union[Pool2dOp, _Mapping]] = ..., avg_pool2d: _Optional[_Union[Pool2dOp, _Mapping]] = ..., flatten: _Optional[_Union[FlattenOp, _Mapping]] = ..., dropout: _Optional[_Union[DropoutOp, _Mapping]] = ...) -> None: ...

class NetworkSpec(_message.Message):
    __slots__ = ("format_version", "input_shape", "layers")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    layers: _containers.RepeatedCompositeFieldContainer[Layer]
    def __init__(self, format_version: _Optional[int] = ..., input_shape: _Optional[_Iterable[int]] = ..., layers: _Optional[_Iterable[_Union[Layer, _Mapping]]] = ...) -> None: ...

class PackedTensor(_message.Message):
    __slots__ = ("name", "shape", "bits", "granularity", "scale", "zero_point", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ZERO_POINT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    bits: int
    granularity: Granularity
    scale: _containers.RepeatedScalarFieldContainer[float]
    zero_point: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., bits: _Optional[int] = ..., granularity: _Optional[_Union[Granularity, str]] = ..., scale: _Optional[_Iterable[float]] = ..., zero_point: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Head(_message.Message):
    __slots__ = ("format_version", "model", "model_version", "partition_point", "network", "parameters", "output_shape")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PARTITION_POINT_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    model: str
    model_version: str
    partition_point: int
    network: NetworkSpec
    parameters: _containers.RepeatedCompositeFieldContainer[PackedTensor]
    output_shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, format_version: _Optional[int] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., partition_point: _Optional[int] = ..., network: _Optional[_Union[NetworkSpec, _Mapping]] = ..., parameters: _Optional[_Iterable[_Union[PackedTensor, _Mapping]]] = ..., output_shape: _Optional[_Iterable[int]] = ...) -> None: ...
