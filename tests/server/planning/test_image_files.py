"""The input as image files: certified offline on validation data (codecs.json), offered by the planner to
QPART and to the server_only_codec baseline, encoded by a device and decoded by the server over gRPC."""
import numpy as np
import pytest

from qpart.common import images, messages, profiles
from qpart.common.costmodel import DeviceProfile, LinkProfile
from qpart.common.errors import FailedPrecondition
from qpart.device.agent import DeviceAgent, RunReport
from qpart.device.cache import HeadCache
from qpart.server.calibration import image_files as measuring
from qpart.server.calibration.accuracy import Evaluator
from qpart.server.planning import image_files
from qpart.server.planning.planner import PlanRequest
from qpart.server.planning.served import ServedModels
from qpart.v1 import service_pb2 as spb


def test_settings_are_certified_on_validation_data_and_read_back(repo, catalogs):
    model = repo.get("lenet")
    found = image_files.load(model)
    assert found is not None and found.samples == 3000 and found.confidence > 0.95
    by_name = {(s.coding, s.quality): s for s in found.settings}
    png = by_name[("png", 0)]
    assert png.bytes < 28 * 28 + 4 and png.drop_ucb >= png.drop                 # lossless, smaller than raw 8-bit
    assert all(s.encode_s > 0 and s.decode_s > 0 for s in found.settings)
    text = image_files.path(model).read_text()
    try:
        image_files.path(model).write_text(text.replace('"png"', '"gif"'))
        with pytest.raises(FailedPrecondition, match="is corrupt"):
            image_files.load(model)
    finally:
        image_files.path(model).write_text(text)


def _request(**fields) -> PlanRequest:
    base = dict(model="lenet", device=profiles.load_device("rpi4"), link=LinkProfile(rate_bps=1e6, rtt_s=0.01),
                accuracy_budget=1.0, inferences_per_head=100)
    return PlanRequest(**{**base, **fields})


def test_server_only_codec_sends_the_cheapest_certified_image_the_device_can_encode(repo, catalogs):
    planner = ServedModels(repo)
    found = image_files.load(repo.get("lenet"))
    device = profiles.load_device("rpi4")
    for budget in (0.25, 1.0, 2.0):      # (0.1 points: 3,000 images certify no setting, docs/certification.md)
        plan = planner.plan(_request(policy="server_only_codec", accuracy_budget=budget, explain=True))
        chosen = plan.chosen
        setting = next(s for s in found.settings if (s.code, s.quality) == (chosen.coding, chosen.quality))
        assert chosen.kind == "codec" and chosen.spec.split.cut == 0
        assert chosen.accuracy_drop == setting.drop_ucb <= budget
        assert chosen.work.uplink_bytes == pytest.approx(setting.bytes + 16)
        # its device time is the measured encoding, converted at the measuring machine's MAC rate
        assert chosen.costs.device_time_s == pytest.approx(setting.encode_s * found.mac_rate / device.mac_rate)
        eligible = [c for c in plan.candidates if not c.rejected]
        assert {c.kind for c in plan.candidates} == {"codec"} and len(plan.candidates) == len(found.settings)
        assert chosen.costs.objective == min(c.costs.objective for c in eligible)
        assert all(c.accuracy_drop > budget for c in plan.candidates if c.rejected)
    png_only = DeviceProfile(**{**profiles.load_device("rpi4").__dict__, "image_codings": frozenset({images.PNG})})
    assert planner.plan(_request(policy="server_only_codec", device=png_only)).chosen.coding == images.PNG
    none = DeviceProfile(**{**profiles.load_device("rpi4").__dict__, "image_codings": frozenset()})
    with pytest.raises(FailedPrecondition, match="no certified image coding the device can encode"):
        planner.plan(_request(policy="server_only_codec", device=none))
    assert planner.plan(_request(device=none)).chosen.kind != "codec"         # QPART plans without them


def test_qpart_weighs_the_image_codings_too(repo, catalogs):
    planner = ServedModels(repo)
    for rate in (1e6, 20e6):
        qpart = planner.plan(_request(link=LinkProfile(rate_bps=rate, rtt_s=0.01))).chosen
        codec = planner.plan(_request(link=LinkProfile(rate_bps=rate, rtt_s=0.01), policy="server_only_codec")).chosen
        assert qpart.costs.objective <= codec.costs.objective * (1 + 1e-12)


def test_a_device_sends_image_coded_inputs_and_gets_the_answers_of_the_decoded_images(repo, catalogs, client,
                                                                                      model_inputs):
    model = repo.get("lenet")
    x, _ = model_inputs("lenet", 16)
    agent = DeviceAgent(client, HeadCache(None))
    found = image_files.load(model)
    params = measuring.input_quantizer(model)
    for setting in found.settings:
        plan = agent.plan(spb.PlanRequest(model="lenet", policy=spb.SERVER_ONLY_CODEC, accuracy_budget=100,
                                          device=messages.device_to_pb(DeviceProfile(image_codings={setting.code}))))
        assert plan.cut == 0 and plan.activations[0].coding == setting.code
        assert plan.activations[0].quality == setting.quality
        before = client.bytes["Infer"].sent
        scores = agent.classify(plan, None, x, RunReport.for_plan(plan), batch_size=4)
        sent = client.bytes["Infer"].sent - before
        decoded, size, _, _ = measuring.roundtrip(x, params, setting.code, setting.quality)
        expected = Evaluator(model, decoded, np.zeros(len(x), np.int64), cache_bytes=0).float_logits.numpy()
        assert np.array_equal(scores.argmax(1), expected.argmax(1))
        assert size < sent < size + 16 * 40                                 # the files and little framing


def test_the_server_refuses_image_codings_inside_the_network(client):
    agent = DeviceAgent(client, HeadCache(None))
    plan = agent.plan(spb.PlanRequest(model="lenet", policy=spb.FIXED, fixed=spb.FixedPlan(
        cut=3, weight_bits=[8], activation_bits=[8])))
    stub_batch = spb.ActivationBatch(request_ids=[0], tensors=[spb.TensorBatch(
        name=plan.activations[0].name, sample_shape=plan.activations[0].sample_shape, bits=8,
        coding=spb.CODING_PNG, data=b"\x00" * 8)])
    with pytest.raises(Exception, match="image codings carry"):
        list(client.stub.Infer(iter([spb.InferRequest(plan_id=plan.plan_id, batch=stub_batch)]), timeout=30))
