"""The paper's Fig. 5 trend with Table II's parameters: time, energy and server cost per partition point.

    python bench/fig5.py [--models model-repo] [--model fc6] [--budget 1] [--out docs/figures/fig5.png]

Device 200 MHz at 5 cycles/MAC, server 3 GHz at 1.25 cycles/MAC, 1 W transmit power, 200 Mbit/s,
weights 1 on time, energy and cost. At each partition point the cheapest catalog pattern certified
within the budget is priced. As the cut moves toward the output, time and energy grow and server
cost falls.
"""
import argparse
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from qpart.common import profiles  # noqa: E402
from qpart.common.costmodel import LinkProfile, Objective  # noqa: E402
from qpart.server.planning.planner import PlanRequest
from qpart.server.planning.served import ServedModels  # noqa: E402
from qpart.server.models.repository import ModelRepository  # noqa: E402


def per_cut(planner: ServedModels, request: PlanRequest):
    """{cut: cheapest QPART candidate at that cut} over the catalog's splits within the budget."""
    plan = planner.plan(request)
    best = {}
    for c in plan.candidates:
        cut = c.spec.split.cut
        if not c.rejected and c.kind == "qpart" and (cut not in best or c.costs.objective < best[cut].costs.objective):
            best[cut] = c
    return dict(sorted(best.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--model", default="fc6")
    parser.add_argument("--budget", type=float, default=1.0)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/figures/fig5.png"))
    args = parser.parse_args()
    planner = ServedModels(ModelRepository(args.models))
    request = PlanRequest(args.model, profiles.load_device("paper-table2"), LinkProfile(rate_bps=200e6),
                          args.budget, Objective(1.0, 1.0, 1.0), explain=True)
    rows = per_cut(planner, request)
    print(f"{args.model}, Table II parameters, budget {args.budget:g} points")
    print(f"{'cut':>4} {'weight bits':<24} {'act bits':<9} {'time ms':>9} {'energy mJ':>10} {'server cost':>12}")
    for cut, c in rows.items():
        k, s = c.costs, c.spec.split
        print(f"{cut:>4} {str(list(s.weight_bits)):<24} {str(list(s.activation_bits)):<9} {k.total_time_s * 1e3:>9.3f} "
              f"{(k.device_energy_j + k.tx_energy_j) * 1e3:>10.4f} {k.server_cost:>12.3e}")
    points = list(rows)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    series = [("time (ms)", [rows[p].costs.total_time_s * 1e3 for p in points]),
              ("device energy (mJ)", [(rows[p].costs.device_energy_j + rows[p].costs.tx_energy_j) * 1e3 for p in points]),
              ("server cost", [rows[p].costs.server_cost for p in points])]
    for ax, (label, values) in zip(axes, series):
        ax.plot(points, values, marker="o")
        ax.set_xlabel("cut (nodes on the device)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{args.model}: QPART splits within {args.budget:g} points, paper Table II parameters")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
