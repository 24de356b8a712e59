"""The demo shows a split, says why, and reports the bytes that crossed, measured (tests/testbed/test_processes.py
runs it end to end)."""
import dataclasses
import shutil

from qpart.common import images, messages, profiles
from qpart.common.costmodel import LinkProfile
from qpart.server.calibration import activation_coding, build
from qpart.server.models.repository import ModelRepository
from qpart.server.planning.planner import PlanRequest
from qpart.server.planning.served import ServedModels
from qpart.server.training import zoo
from qpart.testbed import demo, demo_report


def _plan(repo, request: demo.DemoRequest, tmp_path):
    """The plan the demo's device would get for resnet8-96 from this repository's catalog."""
    device = profiles.load_device(str(request.write_profile(tmp_path / "device.toml")))
    device = messages.device_from_pb(messages.device_to_pb(device))       # as the server reads it
    asked = PlanRequest("resnet8-96", device, LinkProfile(rate_bps=request.rate_mbps * 1e6, rtt_s=request.rtt_ms / 1e3),
                        request.budget, inferences_per_head=request.reuse)
    return ServedModels(repo).plan(asked)


def test_the_demo_request_cuts_inside_resnet8_96(repo, catalogs, data_dir, tmp_path):
    """Against a catalog of every catalog cut, the demo's request is planned at a cut inside the network, one of
    the cuts the demo's own catalog keeps; the reason names it. As in the demo, the model's coding.json is measured
    (the demo's cut sends its activations zlib-coded); in a copy, so that other tests' plans stay raw."""
    model = repo.get("resnet8-96")
    assert set(catalogs["resnet8-96"].cuts) >= set(demo.DEMO_CUTS["resnet8-96"])
    shutil.copytree(model.directory, tmp_path / "models" / model.name)
    copy = ModelRepository(tmp_path / "models")
    activation_coding.ensure(copy.get(model.name), catalogs["resnet8-96"], data_dir)
    plan = _plan(copy, demo.REQUEST, tmp_path)
    cut = plan.chosen.spec.split.cut
    assert 0 < cut < model.num_nodes and cut in demo.DEMO_CUTS["resnet8-96"], plan.reason
    assert plan.reason.startswith(f"cut {cut} of {model.num_nodes}")


def test_a_faster_device_runs_it_all(repo, catalogs, tmp_path):
    """The check above can fail: priced as a Jetson, the same request runs the whole network on the device."""
    plan = _plan(repo, dataclasses.replace(demo.REQUEST, profile="jetson-orin-nano"), tmp_path)
    assert plan.chosen.spec.split.cut == repo.get("resnet8-96").num_nodes, plan.reason


def test_the_demo_device_lists_no_image_coding(tmp_path):
    """The input cannot travel as an image file (with one, a JPEG or WebP input can beat the split at 5 Mbit/s)."""
    for codings in (False, True):
        request = dataclasses.replace(demo.REQUEST, image_codings=codings)
        device = profiles.load_device(str(request.write_profile(tmp_path / "device.toml")))
        sent = list(messages.device_to_pb(device).image_codings)
        assert sent == (sorted(images.available()) if codings else []) and device.name == demo.REQUEST.profile


def test_the_demo_catalog_keeps_only_what_its_request_uses():
    config = demo.demo_catalog("resnet8-96")
    full = build.CatalogConfig()
    assert config.budgets == (demo.REQUEST.budget,) and config.cuts == demo.DEMO_CUTS["resnet8-96"]
    assert config.certification_samples < full.certification_samples
    schedule = zoo.DEMO_SCHEDULES["resnet8-96"]
    half = schedule.validation_size // 2        # the demo model's validation split feeds search and certification
    assert config.search_samples <= half and config.certification_samples <= half


def _report(coding: str, cut: int = 0, crossing_bytes: int = 27648, infer_sent: int = 961_000) -> dict:
    name, shape = ("x", [3, 96, 96]) if cut == 0 else ("relu_1", [8, 24, 24])
    split = {"model": "resnet8-96", "policy": "qpart", "cut": cut, "num_nodes": 24, "weight_bits": [],
             "activation_bits": [8], "predicted": {"accuracy_drop": 0.3}, "reason": "why not",
             "crossing": [{"name": name, "shape": shape, "bits": 8, "packed_bytes": crossing_bytes, "coding": coding}],
             "inputs": 1000, "wire": {"Plan": {"sent": 300, "received": 900}, "Infer": {"sent": infer_sent,
                                                                                       "received": 80_000}},
             "head": {"bytes": 0, "float32_bytes": 0}, "tcp": None, "batch_latency_s": [0.002] * 1000,
             "accuracy": 88.0, "total_s": 3.0}
    unsplit = dict(split, cut=0, crossing=[], wire={"Infer": {"sent": 110_700_000, "received": 80_000}})
    return {"split": split, "unsplit": unsplit, "agreement": 99.0}


def test_the_report_says_what_really_crossed():
    lines = demo_report.lines(_report("webp q75"), {"float_test_accuracy": 88.0, "test_samples": 10000}, "asked", 5)
    text = "\n".join(lines)
    assert "as webp q75 files" in text and "27,648" not in text      # not the packed size of a raw 8-bit input
    assert "measured 961 B per input" in text and "110,700 B per input" in text
    assert "NOT shaped" in text and "no split" in text and "why: why not" in text


def test_the_report_reads_the_coding_either_way():
    assert demo_report.coding({"coding": "CODING_WEBP", "quality": 75}) == "webp q75"
    assert demo_report.coding({"coding": "CODING_ZLIB", "quality": 0}) == "zlib"
    assert demo_report.coding({"coding": "zlib"}) == "zlib" and demo_report.coding({}) == "raw"


def test_the_report_names_the_split_and_the_schedule():
    card = {"float_test_accuracy": 86.1, "test_samples": 10000,
            "training": {"schedule": "demo", "train_samples": 16000, "available_samples": 50000, "epochs": 2,
                         "seconds": 61.0}}
    text = "\n".join(demo_report.lines(_report("zlib", cut=3, crossing_bytes=4608, infer_sent=1_020_000), card,
                                       "asked", 5))
    assert "split at cut 3 of 24 nodes" in text and "zlib-coded (packed: 4,608 B)" in text
    assert "measured 1,020 B per input" in text
    assert "demo schedule: 16,000 of 50,000 training images, 2 epoch(s)" in text
