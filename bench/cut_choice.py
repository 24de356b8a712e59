"""Where the planner cuts: for each model, link rate and budget, the chosen split and why.

    python bench/cut_choice.py [--models model-repo] [--device rpi4] [--rtt-ms 10] [--reuse 100] [--raw] [--markdown FILE]

Prices every catalog split with the cost model (the default objective: time + energy + cost, weights 1)
for one device profile, and reports the chosen cut next to the best plan that sends the input (cut 0)
and the best that runs everything on the device, with each one's objective and what it is made of.
The server part is priced at Table II's MAC rate (no start-up timing here), as `qpart plan` does. Where a
model has coding.json, its zlib-coded splits are weighed too (marked zlib), and with codecs.json the input as
PNG/JPEG/WebP files (marked with the format and quality); --raw leaves both out.
"""
import argparse
import pathlib

from qpart.common import profiles, tensors
from qpart.common.costmodel import LinkProfile, Objective
from qpart.common.errors import FailedPrecondition
from qpart.server.models.repository import ModelRepository
from qpart.server.planning.planner import PlanRequest
from qpart.server.planning.served import ServedModels


def where(model, cut: int) -> str:
    if cut == 0:
        return "input (cut 0)"
    if cut == model.num_nodes:
        return "all on device"
    tensors = model.profile.cut(cut).tensors
    return f"inside: cut {cut} ({', '.join(tensors)})"


def best(plan, model, which) -> tuple[float, str]:
    eligible = [c for c in plan.candidates if not c.rejected and which(c.spec.split.cut)]
    if not eligible:
        return float("nan"), "-"
    c = min(eligible, key=lambda c: c.costs.objective)
    k = c.costs
    return k.objective, (f"{k.objective * 1e3:.1f} (time {k.total_time_s * 1e3:.1f} ms, energy "
                         f"{(k.device_energy_j + k.tx_energy_j) * 1e3:.1f} mJ, up {int(c.work.uplink_bytes):,} B"
                         f"{' ' + tensors.coding_label(c.coding, c.quality) if c.coding else ''})")


def rows(planner: ServedModels, model, device, rates, budgets, rtt_s: float, reuse: int) -> list[str]:
    out = []
    for rate in rates:
        for budget in budgets:
            request = PlanRequest(model.name, device, LinkProfile(rate_bps=rate * 1e6, rtt_s=rtt_s), budget,
                                  Objective(), reuse, explain=True)
            try:
                plan = planner.plan(request)
            except FailedPrecondition as e:
                out.append(f"| {model.name} | {rate:g} | {budget:g} | no plan: {e} | | | |")
                continue
            chosen, s = plan.chosen, plan.chosen.spec.split
            _, server_only = best(plan, model, lambda cut: cut == 0)
            _, device_only = best(plan, model, lambda cut: cut == model.num_nodes)
            out.append(f"| {model.name} | {rate:g} | {budget:g} | {where(model, s.cut)} | w {list(s.weight_bits)[:6]}"
                       f"{'...' if len(s.weight_bits) > 6 else ''} a {list(s.activation_bits)}"
                       f"{' ' + tensors.coding_label(chosen.coding, chosen.quality) if chosen.coding else ''} | "
                       f"{chosen.costs.objective * 1e3:.1f} | {server_only} | {device_only} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--device", default="rpi4")
    parser.add_argument("--rtt-ms", type=float, default=10.0)
    parser.add_argument("--reuse", type=int, default=100)
    parser.add_argument("--rates", default="1,5,20", help="Mbit/s, comma-separated")
    parser.add_argument("--budgets", default="0.5,1,2", help="points, comma-separated")
    parser.add_argument("--markdown", type=pathlib.Path, help="also write the table here")
    parser.add_argument("--raw", action="store_true",
                        help="leave out the zlib-coded splits (coding.json) and the image files (codecs.json)")
    args = parser.parse_args()
    repo = ModelRepository(args.models)
    planner = ServedModels(repo, coding=not args.raw)
    device = profiles.load_device(args.device)
    rates = [float(r) for r in args.rates.split(",")]
    budgets = [float(b) for b in args.budgets.split(",")]
    lines = [f"Device {device.name} ({device.mac_rate / 1e9:.2f} GMAC/s, {device.energy_per_mac * 1e9:.2f} nJ/MAC, "
             f"{device.tx_power_w} W transmitting), round trip {args.rtt_ms:g} ms, head reuse {args.reuse}, objective "
             "time s + energy J + cost (weights 1), shown x 1000.", "",
             "| model | Mbit/s | budget | chosen cut | bits (weights, activations) | objective | best sending the input "
             "| best all on the device |", "|---|---|---|---|---|---|---|---|"]
    for model in repo:
        if planner.get(model.name).catalog is not None:
            lines += rows(planner, model, device, rates, budgets, args.rtt_ms / 1e3, args.reuse)
    print("\n".join(lines))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
