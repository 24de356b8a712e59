"""`qpart demo-text`: text generated through a split, with server and device as separate processes.

On its first run it trains the zoo's GPT (gpt-fortunes: 4 blocks of width 128, bytes of fortune cookies) on a
short schedule (DEMO_STEPS of the zoo's 4,000 steps; the card and the output say so, with the next-token
figures it measured) and builds a catalog of only what the demo's request can use (its budget; the prompt
sent, the whole model on the device, and the residual stream after each block), then starts qpart-server on a
free local port and runs qpart-device, which asks for a plan for its prompt's generation, fetches the head and
generates. It prints where the cut fell and why, what crossed per token, the time to the first token and per
token, and the text. The link is priced, not shaped: device and server talk over loopback.
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
from qpart.server.calibration import build
from qpart.server.models import repository
from qpart.server.planning import catalog
from qpart.server.training import lm_train
from qpart.testbed.processes import ServerProcess

MODEL = lm_train.TARGET
DEMO_STEPS = 1000           # of the zoo's 4,000: about 4 minutes on 2 cores
DEMO_SAMPLES = dict(calibration_samples=300, search_samples=800, certification_samples=2000)


@dataclass(frozen=True)
class DemoTextRequest:
    """What the demo's device asks for: a board whose memory holds half the model, on a fast local link, next to
    a server whose seconds are dear (one shared by many devices): where a split is the cheapest plan. Its figures
    are priced, not shaped or emulated here; the device's own speed is measured."""
    profile: str = "rpi4"
    memory_mb: float = 4.0          # memory the board gives qpart: the whole model (5.8 MB with its head and cache for
    #                                 this generation) does not fit, its first two blocks do
    rate_mbps: float = 20.0         # uplink the plan is priced for
    rtt_ms: float = 2.0             # round trip the plan is priced for
    server_weight: float = 100.0    # objective weight on server cost (time's is 1): a server shared by many devices
    budget: float = 2.0             # points of next-token agreement with the float model
    prompt: str = "Q: What do you get when you cross a computer with an elephant?\nA:"
    tokens: int = 120
    temperature: float = 0.8        # drawn, seeded: the short-schedule model's greedy text is mostly spaces
    seed: int = 1

    def device_args(self, profile_path: pathlib.Path) -> list[str]:
        return ["--profile", str(profile_path), "--rate-mbps", f"{self.rate_mbps:g}", "--rtt-ms", f"{self.rtt_ms:g}",
                "--w-cost", f"{self.server_weight:g}", "--budget", f"{self.budget:g}", "--prompt", self.prompt,
                "--max-new-tokens", str(self.tokens), "--through-end", "--reuse", "100",
                "--temperature", f"{self.temperature:g}", "--seed", str(self.seed)]

    def write_profile(self, path: pathlib.Path) -> pathlib.Path:
        text = (profiles.PROFILE_DIR / f"{self.profile}.toml").read_text()
        text = "\n".join(line for line in text.splitlines() if not line.startswith("memory_bytes"))
        path.write_text(text + f"\nmemory_bytes = {int(self.memory_mb * 2**20)}   # the demo's board\n")
        return path

    def describe(self) -> str:
        return (f"device priced as {self.profile} with {self.memory_mb:g} MB for qpart (its MAC rate and cost per op "
                f"measured here), uplink {self.rate_mbps:g} Mbit/s, round trip {self.rtt_ms:g} ms, server seconds "
                f"weighted {self.server_weight:g}x, budget {self.budget:g} points of next-token agreement")


REQUEST = DemoTextRequest()


def demo_cuts(model: repository.Model) -> tuple[int, ...]:
    """The prompt sent (0), the residual stream after each block, the whole model."""
    after = [c.cut for c in model.cuts() if len(c.tensors) == 1 and c.tensors[0].endswith("residual_2")]
    return (0, *after, model.num_nodes)


def prepare(models: pathlib.Path, request: DemoTextRequest = REQUEST) -> repository.Model:
    models.mkdir(parents=True, exist_ok=True)
    if not (models / MODEL / repository.NETWORK_FILE).exists():
        print(f"training {MODEL} into {models} (first run only) on the demo's short schedule: {DEMO_STEPS:,} steps "
              f"(the zoo's: {lm_train.LM_ZOO[MODEL].steps:,}; `qpart train {MODEL}`)", flush=True)
        trained = lm_train.train(MODEL, models, lm_train.LMTrainConfig(steps=DEMO_STEPS))
        card = trained.card
        print(f"trained {MODEL} in {card['training']['seconds']:.0f} s: next-token top-1 {card['float_test_top1']:.2f}%, "
              f"perplexity {card['float_test_perplexity']:.2f} on {card['test_tokens']:,} test tokens", flush=True)
    loaded = repository.load_model(models / MODEL)
    if catalog.current(loaded) is None:
        config = build.CatalogConfig(text_budgets=(request.budget,), cuts=demo_cuts(loaded), **DEMO_SAMPLES)
        print(f"building the demo's catalog of {MODEL}: budget {request.budget:g} points of next-token agreement, cuts "
              f"{', '.join(map(str, config.cuts))}, {config.certification_samples:,} certification positions "
              f"(`qpart catalog {MODEL}` builds the full one)", flush=True)
        started = time.perf_counter()
        catalog.save(loaded, build.build(loaded, config=config, progress=False))
        print(f"catalog built in {time.perf_counter() - started:.0f} s", flush=True)
    return loaded


def run(models: pathlib.Path, request: DemoTextRequest = REQUEST) -> dict:
    started = time.perf_counter()
    prepare(models, request)
    with ServerProcess(models) as server, tempfile.TemporaryDirectory() as tmp:
        print(f"server process {server.pid} is SERVING on {server.target}; {request.describe()}", flush=True)
        out = pathlib.Path(tmp) / "report.json"
        command = [sys.executable, "-m", "qpart.device.main", "--server", server.target, "--model", MODEL,
                   "--json", str(out), "--cache", str(pathlib.Path(tmp) / "cache"),
                   *request.device_args(request.write_profile(pathlib.Path(tmp) / "device.toml"))]
        if subprocess.run(command).returncode != 0:
            raise FailedPrecondition("the device run failed (see above)")
        result = json.loads(out.read_text())
    print(f"demo wall time {time.perf_counter() - started:.0f} s")
    return result
