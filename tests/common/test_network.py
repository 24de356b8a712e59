import pytest

from qpart.common import network
from qpart.common.errors import InvalidArgument
from qpart.server import export, zoo
from qpart.v1 import network_pb2 as pb


@pytest.fixture(scope="module")
def specs():
    return {name: export.export(entry.build().eval(), (1, 28, 28))[0] for name, entry in zoo.ZOO.items()}


def test_zoo_profiles(specs):
    fc6 = network.analyze(specs["fc6"])
    assert fc6.num_layers == 6 and fc6.num_classes == 10
    assert [layer.macs for layer in fc6.layers] == [784 * 512, 512 * 256, 256 * 128, 128 * 64, 64 * 32, 32 * 10]
    assert fc6.layers[0].weight_count == 784 * 512 + 512
    lenet = network.analyze(specs["lenet"])
    assert lenet.num_layers == 5
    # conv2 (eq 2 with the output size): 16 * 6 * 5 * 5 * 10 * 10
    assert lenet.layers[1].macs == 16 * 6 * 25 * 100 and lenet.layers[1].output_shape == (16, 10, 10)
    assert network.analyze(specs["vgg8"]).num_layers >= 8


def test_cut_positions_and_activation_shapes(specs):
    lenet = network.analyze(specs["lenet"])
    assert lenet.cut_position(1) == 0 and lenet.activation_shape(1) == (1, 28, 28)   # raw input
    assert lenet.activation_shape(2) == (6, 14, 14)     # after conv1, relu, pool run on the device
    assert lenet.activation_shape(3) == (400,)          # flatten ran on the device
    assert lenet.activation_shape(6) == (10,)           # p = L+1: everything on the device
    for bad in (0, 7, -1, 2.0, True):
        with pytest.raises(InvalidArgument, match="partition point"):
            lenet.check_partition_point(bad)


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
