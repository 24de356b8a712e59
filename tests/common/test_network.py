import pytest

from qpart.common import network
from qpart.common.errors import InvalidArgument
from qpart.v1 import network_pb2 as pb


def _spec(*layers, input_shape=(1, 4, 4)) -> pb.NetworkSpec:
    return pb.NetworkSpec(format_version=1, input_shape=input_shape, layers=list(layers))


@pytest.mark.parametrize("spec, message", [
    (_spec(pb.Layer(name="x")), "no operation"),
    (_spec(pb.Layer(name="fc", linear=pb.LinearOp(in_features=15, out_features=2))), "expects input"),
    (_spec(pb.Layer(name="c", conv2d=pb.Conv2dOp(in_channels=2, out_channels=1, kernel_h=1, kernel_w=1, stride_h=1,
                                                 stride_w=1, dilation_h=1, dilation_w=1, groups=1))), "input channels"),
    (_spec(pb.Layer(name="c", conv2d=pb.Conv2dOp(in_channels=1, out_channels=1, kernel_h=9, kernel_w=1, stride_h=1,
                                                 stride_w=1, dilation_h=1, dilation_w=1, groups=1))), "does not fit"),
    (_spec(pb.Layer(name="c", conv2d=pb.Conv2dOp(in_channels=1, out_channels=1, kernel_h=1, kernel_w=1))), "at least 1"),
    (_spec(pb.Layer(name="p", max_pool2d=pb.Pool2dOp(kernel_h=2, kernel_w=2, stride_h=2, stride_w=2, padding_h=2))),
     "half the window"),
    (_spec(input_shape=(1 << 20, 1 << 20)), "elements"),
    (_spec(input_shape=()), "empty shape"),
    (pb.NetworkSpec(format_version=2, input_shape=(1,)), "version"),
])
def test_invalid_descriptions_are_rejected(spec, message):
    with pytest.raises(InvalidArgument, match=message):
        network.analyze(spec)


@pytest.mark.parametrize("kernel, stride, size", [(2, 2, 28), (2, 2, 7), (3, 2, 9), (3, 1, 5), (2, 3, 8)])
def test_fast_max_pool_equals_torch(kernel, stride, size):
    import torch
    from qpart.common.torchnet import MaxPool2d
    x = torch.randn(3, 4, size, size)
    expected = torch.nn.functional.max_pool2d(x, kernel, stride)
    assert torch.equal(MaxPool2d(kernel, stride)(x), expected)
