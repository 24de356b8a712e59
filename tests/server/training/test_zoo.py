"""The zoo's models as the layer description sees them: learnable layers, MACs (eqs 1-2), cuts."""
import pytest

from qpart.common import network
from qpart.common.errors import InvalidArgument
from qpart.server.models import export
from qpart.server.training import zoo


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


