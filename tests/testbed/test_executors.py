"""The numpy executor against the torch and the onnxruntime executors: the same top-1 through the server's tail
at every cut of every zoo model (16-bit weights). bench/device_executors.py does the same on 1,000 images of
every model and prints times and memory; here the costly models use fewer images to keep `make test` short."""
import numpy as np
import pytest

from qpart.common.errors import FailedPrecondition
from qpart.testbed.executors import agreement_at_cuts
from tests.conftest import ZOO_NAMES

IMAGES = {"resnet8": 300, "mobilenetv2": 200, "resnet8-96": 200, "mobilenetv2-96": 100}


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_numpy_torch_and_onnxruntime_executors_agree_at_every_cut(name, repo, model_inputs):
    model = repo.get(name)
    x, _ = model_inputs(name, IMAGES.get(name, 1000))
    agreement = agreement_at_cuts(model, x, others=("torch", "onnxruntime"))
    for backend, cuts in agreement.items():
        assert len(cuts) == len(model.cuts())
        low = {cut: a for cut, a in cuts.items() if a < 0.999}
        assert not low, f"{name}: numpy and {backend} differ at cuts {low}"


def test_device_memory_is_measured_without_torch(repo):
    from qpart.server.models.heads import build_head
    from qpart.server.models.split import uniform
    from qpart.testbed.executors import peak_rss
    model = repo.get("vgg8")
    rss = peak_rss(build_head(model, uniform(model.profile, model.num_nodes, 8)))
    float32 = sum(n.weight_count for n in model.profile.nodes) * 4
    assert not rss["torch"] and rss["after_kib"] >= rss["before_kib"] > 10_000
    assert rss["before_kib"] < 200_000        # the device process's own peak, not this (torch) process's
    assert float32 / 4 <= rss["weight_bytes"] < float32 / 3          # one byte per 8-bit code, plus scales


def test_onnxruntime_runs_every_op_an_image_head_has_and_refuses_a_language_models():
    from qpart.common import network
    from qpart.common.tensors import CompactTensor
    from qpart.device import backends, compute
    from qpart.v1 import network_pb2 as pb
    rng = np.random.default_rng(0)
    spec = pb.NetworkSpec(format_version=network.FORMAT_VERSION, input_shape=[4, 7, 5], input="x")
    params = {}

    def add(name, inputs, weights=None, **op):
        spec.nodes.add(name=name, inputs=inputs, **op)
        params[name] = {k: CompactTensor(shape, values=rng.normal(0, 0.5, shape).astype(np.float32))
                        for k, shape in (weights or {}).items()}
        return name
    conv = dict(kernel_h=3, kernel_w=3, stride_h=1, stride_w=1, padding_h=1, padding_w=1, dilation_h=1, dilation_w=1)
    c = add("c", ["x"], {"weight": (6, 2, 3, 3), "bias": (6,)}, conv2d=pb.Conv2dOp(in_channels=4, out_channels=6,
                                                                                  groups=2, bias=True, **conv))
    d = add("d", ["c"], {"weight": (6, 1, 3, 3)}, conv2d=pb.Conv2dOp(in_channels=6, out_channels=6, groups=6, **conv))
    b = add("bn", [d], {"scale": (6,), "shift": (6,)}, batch_norm=pb.BatchNormOp(channels=6))
    acts = [add(f"a{f}", [b], activation=pb.ActivationOp(function=f)) for f in range(1, 9)]
    s = add("sum", [acts[0], acts[1]], add=pb.AddOp())
    for a in acts[2:]:
        s = add(f"m{a}", [s, a], mul=pb.MulOp()) if a.endswith(("3", "5")) else add(f"s{a}", [s, a], add=pb.AddOp())
    cat = add("cat", [s, c], concat=pb.ConcatOp(axis=0))                                       # [12, 7, 5]
    mp = add("mp", [cat], max_pool2d=pb.Pool2dOp(kernel_h=3, kernel_w=3, stride_h=2, stride_w=2, padding_h=1,
                                                 padding_w=1))                                 # [12, 4, 3]
    ap = add("ap", [cat], avg_pool2d=pb.Pool2dOp(kernel_h=2, kernel_w=2, stride_h=1, stride_w=1, padding_h=1,
                                                 padding_w=1))                                 # [12, 8, 6]
    aa = add("aa", [ap], adaptive_avg_pool2d=pb.AdaptiveAvgPool2dOp(out_h=3, out_w=4))        # uneven cells
    ag = add("ag", [mp], adaptive_avg_pool2d=pb.AdaptiveAvgPool2dOp(out_h=1, out_w=1))
    pm = add("pm", [aa], permute=pb.PermuteOp(dims=[1, 2, 0]))                                # [3, 4, 12]
    sl = add("sl", [pm], slice=pb.SliceOp(axis=2, start=2, stop=10))                          # [3, 4, 8]
    ln = add("ln", [sl], {"weight": (5, 8), "bias": (5,)}, linear=pb.LinearOp(in_features=8, out_features=5,
                                                                                bias=True))     # [3, 4, 5]
    rs = add("rs", [ln], reshape=pb.ReshapeOp(shape=[60]))
    fl = add("fl", [ag], flatten=pb.FlattenOp())
    fc = add("fc", [add("id", [rs], identity=pb.IdentityOp())], {"weight": (3, 60)},
             linear=pb.LinearOp(in_features=60, out_features=3))
    spec.outputs.extend([fc, fl, "x"])                         # an output may be the input itself
    profile = network.analyze(spec)
    x = rng.normal(0, 1, (5, 4, 7, 5)).astype(np.float32)
    reference = backends.make(spec, profile, params, "numpy").tensors(x)
    onnx = backends.make(spec, profile, params, "onnxruntime")
    every = onnx.tensors(x)
    assert sorted(every) == sorted(reference)
    for name, value in reference.items():
        np.testing.assert_allclose(every[name], value, rtol=1e-4, atol=1e-4, err_msg=name)
    for got, want in zip(onnx.run(x), [reference[o] for o in spec.outputs]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    lm, lm_params = compute.step_benchmark()
    with pytest.raises(FailedPrecondition, match="language model"):
        backends.make(lm, network.analyze(lm), lm_params, "onnxruntime")
    assert backends.make(lm, network.analyze(lm), lm_params, "auto").name != "onnxruntime"   # auto skips it there
