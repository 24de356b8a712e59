"""`qpart demo`: the main job on an embedded default, with server and device as separate processes.

On its first run it trains the default model (resnet8-96: a ResNet on Fashion-MNIST resized to 3x96x96, a
camera stand-in) on a short schedule (qpart.server.training.zoo.DEMO_SCHEDULES: a subset, fewer epochs; the
card and the output say so, with the accuracy it measured) and builds a catalog of only what the demo's
request can use (its budget; the input, the end and the cut the request picks), then starts qpart-server on
a free local port, waits for grpc.health.v1 to report SERVING, and runs qpart-device on 1,000 test images
with the unsplit comparison. It prints the plan with the planner's reason, the bytes that crossed the cut
(measured from the Infer messages sent), split vs unsplit accuracy, bytes each way and latency, and stops the
server. The link is priced, not shaped: device and server talk over loopback (`qpart bench` runs over a
shaped link, as root).
"""
import json
import pathlib
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from qpart.common import profiles
from qpart.common.errors import FailedPrecondition
from qpart.server.calibration import activation_coding, build, image_files
from qpart.server.models import repository
from qpart.server.planning import catalog
from qpart.server.training import train, zoo
from qpart.testbed import demo_report
from qpart.testbed.processes import ServerProcess

DEFAULT_MODEL = "resnet8-96"


@dataclass(frozen=True)
class DemoRequest:
    """What the demo's device asks for: chosen so that the planner cuts inside resnet8-96 (the product's point),
    checked against a catalog by tests/testbed/test_demo.py."""
    profile: str = "rpi4"          # priced as this bundled device profile, not this host's speed (a fast host would
    #                                run the whole network "on the device" and the demo would show no split)
    rate_mbps: float = 5.0         # uplink the plan is priced for; NOT shaped here (loopback)
    rtt_ms: float = 10.0           # round trip the plan is priced for
    budget: float = 0.5            # accuracy budget, top-1 points
    reuse: int = 100               # inputs one head download is priced for
    image_codings: bool = False    # whether the device can write PNG/JPEG/WebP (the plain device install, no
    #                                Pillow, cannot; with them the input as a JPEG file can beat the split here)

    def device_args(self, profile_path: pathlib.Path) -> list[str]:
        return ["--profile", str(profile_path), "--no-measure-compute", "--rate-mbps", f"{self.rate_mbps:g}",
                "--rtt-ms", f"{self.rtt_ms:g}", "--budget", f"{self.budget:g}", "--reuse", str(self.reuse), "--explain"]

    def write_profile(self, path: pathlib.Path) -> pathlib.Path:
        """The bundled profile as a file, less its image codings when the device has none."""
        text = (profiles.PROFILE_DIR / f"{self.profile}.toml").read_text()
        if not self.image_codings:
            text += "image_codings = []   # the demo's device writes no image files (qpart-device without Pillow)\n"
        path.write_text(text)
        return path

    def describe(self) -> str:
        encoder = ("it can send the input as a PNG, JPEG or WebP file" if self.image_codings else
                   "no image encoder (as qpart's device install without Pillow: the input cannot travel as a JPEG or "
                   "WebP file, which can beat the split at this rate)")
        return (f"device priced as {self.profile} (its profile, not this host's speed), {encoder}; uplink "
                f"{self.rate_mbps:g} Mbit/s, round trip {self.rtt_ms:g} ms, budget {self.budget:g} points, head reused "
                f"for {self.reuse} inputs")


REQUEST = DemoRequest()
# The catalog cuts the demo certifies for its default model: the input and the whole network on the device (the
# plan's reason line compares the choice with both) and cut 3, after the stride-4 stem and its pool: the one
# the demo's request picks among all the catalog cuts (cut 23, the network less its last layer, is left out).
DEMO_CUTS = {"resnet8-96": (0, 3, 24)}
# Fewer validation images than `qpart catalog`'s default (5,000 certify there): enough to certify the demo's budget.
DEMO_SAMPLES = dict(calibration_samples=500, search_samples=1000, certification_samples=2500)


def demo_catalog(model: str, request: DemoRequest = REQUEST) -> build.CatalogConfig:
    return build.CatalogConfig(budgets=(request.budget,), cuts=DEMO_CUTS.get(model), **DEMO_SAMPLES)


def prepare(models: pathlib.Path, model: str, data_dir=None, request: DemoRequest = REQUEST) -> repository.Model:
    """The model (trained on the demo's schedule if absent), its catalog (the demo's, if none is current) and the
    measurements its plan can use (coding.json; codecs.json only for a device that writes image files)."""
    models.mkdir(parents=True, exist_ok=True)
    if not (models / model / repository.NETWORK_FILE).exists():
        schedule = zoo.DEMO_SCHEDULES.get(model)
        config = train.TrainConfig.of(schedule) if schedule else train.TrainConfig()
        print(f"training {model} into {models} (first run only) on " + (
            f"the demo's short schedule: {schedule.train_limit:,} training images, {schedule.epochs} epochs "
            f"(the zoo's: {zoo.ZOO[model].epochs} epochs on all 50,000; `qpart train {model}`)" if schedule
            else "the zoo's schedule"), flush=True)
        trained = train.train(model, models, data_dir, config)
        card = trained.card
        print(f"trained {model} in {card['training']['seconds']:.0f} s (+{card['import_seconds']:.0f} s to trace, "
              f"check and measure it): float test accuracy {card['float_test_accuracy']:.2f}% on "
              f"{card['test_samples']:,} test images", flush=True)
    loaded = repository.load_model(models / model)
    if catalog.current(loaded) is None:
        config = demo_catalog(model, request)
        cuts = "cuts " + ", ".join(map(str, config.cuts)) if config.cuts else "every catalog cut"
        print(f"building the demo's catalog of {model}: budget {request.budget:g} points only, {cuts}, "
              f"{config.certification_samples:,} certification images (`qpart catalog {model}` builds the full one: "
              f"budgets {', '.join(f'{b:g}' for b in catalog.BUDGETS)}, every catalog cut, 5,000 images)", flush=True)
        started = time.perf_counter()
        catalog.save(loaded, build.build(loaded, data_dir, config))
        print(f"catalog built in {time.perf_counter() - started:.0f} s", flush=True)
    activation_coding.ensure(loaded, catalog.require(loaded), data_dir)    # zlib-coded sizes: the plan may send coded
    if request.image_codings:
        image_files.ensure(loaded, catalog.require(loaded), data_dir)
    elif image_files.supported(loaded):
        print("left out: codecs.json (the input as PNG/JPEG/WebP files): the demo's device writes no image files",
              flush=True)
    return loaded


def run(models: pathlib.Path, model: str = DEFAULT_MODEL, count: int = 1000, data_dir=None,
        request: DemoRequest = REQUEST) -> dict:
    started = time.perf_counter()
    loaded = prepare(models, model, data_dir, request)
    with ServerProcess(models) as server, tempfile.TemporaryDirectory() as tmp:
        print(f"server process {server.pid} is SERVING on {server.target}", flush=True)
        out = pathlib.Path(tmp) / "report.json"
        command = [sys.executable, "-m", "qpart.device.main", "--server", server.target, "--model", model,
                   "--count", str(count), "--compare-unsplit", "--quiet", "--json", str(out),
                   "--cache", str(pathlib.Path(tmp) / "cache"),
                   *request.device_args(request.write_profile(pathlib.Path(tmp) / "device.toml"))]
        if data_dir:
            command += ["--data", str(data_dir)]
        print("device:", " ".join(command[2:]), flush=True)
        if subprocess.run(command).returncode != 0:
            raise FailedPrecondition("the device run failed (see above)")
        result = json.loads(out.read_text())
    print()
    for line in demo_report.lines(result, loaded.card, request.describe(), request.rate_mbps):
        print(line)
    print(f"demo wall time {time.perf_counter() - started:.0f} s")
    return result
