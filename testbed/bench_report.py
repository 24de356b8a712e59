"""Write a `qpart bench` result as JSON, a markdown report and PNG plots."""
import json
import pathlib
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from qpart.common import policies  # noqa: E402

POLICY_ORDER = (policies.QPART, *policies.BASELINES)


def write(results: dict, out_dir: pathlib.Path, command: str) -> list[pathlib.Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    results = results | {"command": command}
    paths = [out_dir / "e2e.json", out_dir / "e2e.md"]
    paths[0].write_text(json.dumps(results, indent=1))
    paths[1].write_text(markdown(results))
    paths += plots(results, out_dir)
    return paths


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def _act(row: dict) -> str:
    """Activation bits, and how they travelled when not raw (zlib, or the input as an image file)."""
    coded = [c for c in row.get("coding", []) if c != "raw"]
    return f"{row['activation_bits']}" + (f" {', '.join(coded)}" if coded else "")


def explain(verdict: dict, by_policy: dict) -> str:
    ours, theirs = by_policy["qpart"], by_policy[verdict["best_baseline"]]
    pred_gap = theirs["predicted_s"] - ours["predicted_s"]
    return (f"QPART cut {ours['cut']} {ours['weight_bits']}/{_act(ours)} predicted "
            f"{_ms(ours['predicted_s'])} ms, measured {_ms(ours['p50_s'])}; {verdict['best_baseline']} "
            f"cut {theirs['cut']} predicted {_ms(theirs['predicted_s'])}, measured {_ms(theirs['p50_s'])}: "
            f"the predicted margin {_ms(pred_gap)} ms is "
            + ("smaller than the measured spread" if abs(pred_gap) < abs(ours['p50_s'] - theirs['p50_s']) else
               "reversed by a prediction error"))


def _cells(r: dict) -> dict[tuple, dict]:
    rows_by_cell: dict[tuple, dict] = {}
    for row in r["rows"]:
        key = (row["model"], row["device"], row["rate_mbit"], row["budget"], row["reuse"], row["objective_name"])
        rows_by_cell.setdefault(key, {})[row["policy"]] = row
    return rows_by_cell


def _header(r: dict) -> list[str]:
    config, m = r["config"], r["machine"]
    link = ("netem" if r["netem"] else "tbf for the rate, delay and per-message serialization from the user-space "
            "relay (this kernel has no netem)")
    rates = ", ".join(f"{k} {v / 1e9:.2f} GMAC/s" for k, v in r["achievable_macs_per_second"].items())
    return ["# End-to-end benchmark", "",
            f"Command: `{r['command']}`  ",
            f"Machine: {m['cpu']}, {m['cores']} cores, kernel {m['kernel']}, Python {m['python']}, torch {m['torch']}, "
            f"{m['date']}; {r['seconds'] / 60:.1f} minutes.  ",
            f"Link: two network namespaces on a veth, {link}; one-way delay {config['delay_ms']} ms each direction.  ",
            "Device speed is EMULATED: head runs are paced to the profile's MAC rate, capped at half of what this "
            f"machine achieves for the model ({rates}); rows say which were capped. Energy is modelled (device "
            "compute from the profile, transmission as transmit power times kernel-counted bytes over the shaped rate).",
            ""]


def summary_lines(r: dict) -> list[str]:
    """The headline figures, each naming how it was measured."""
    lines = []
    for objective, s in r["summary"].items():
        what = "p50 latency" if objective == "time" else "measured objective (time + energy + cost, weights 1)"
        lines.append(f"- {objective} objective: no baseline's {what} is significantly below QPART's in "
                     f"{s['qpart_lowest']} of {s['cells']} cells ({100 * s['share']:.1f} %); QPART's is the strictly "
                     f"lowest number in {s['strictly_lowest']} (equal plans count as ties). Significance: one-sided "
                     "95 % bootstrap of the difference of medians over the per-inference samples.")
    lines.append("- Predicted vs measured end-to-end time, median absolute relative error: " + ", ".join(
        f"{p} {100 * e:.1f} %" for p, e in r["median_relative_error"].items() if e is not None) + ".")
    lines.append("- Wire efficiency (head downloads of 50 ms and more: time minus one round trip, over kernel-counted "
                 "bits / shaped rate): " + ", ".join(
                     f"{rate} Mbit/s median {w['median']:.3f} (max {w['max']:.3f}, {w['transfers']} transfers)"
                     for rate, w in r["wire_efficiency"].items() if w["median"] is not None) + ".")
    slow = [(rate, t) for rate, w in r["wire_efficiency"].items() for t in w.get("each", []) if t["ratio"] > 1.15]
    if slow:
        lines.append("- Head downloads above 1.15: " + "; ".join(
            f"{rate} Mbit/s, {t['head_bytes']:,} B, repeats " + "/".join(f"{1e3 * s:.0f}" for s in t["seconds"])
            + f" ms ({t['ratio']:.2f})" for rate, t in slow)
            + (". The link was emulated by the user-space relay; see the README's testbed section on late gRPC "
               "downloads through it." if not r.get("netem") else "."))
    return lines


def _losses(r: dict, rows_by_cell: dict) -> list[str]:
    lines = ["", "## Cells where QPART is not the lowest", ""]
    losses = [v for v in r["verdicts"] if not v["strictly_lowest"]]
    if not losses:
        lines.append("None.")
    for v in losses:
        c = v["cell"]
        key = (c["model"], c["device"], c["rate_mbit"], c["budget"], c["reuse"], c["objective"])
        significance = (f"significantly beaten by {', '.join(v['beaten_by'])}" if v["beaten_by"]
                        else "within measurement noise")
        lines.append(f"- {c['model']}, {c['device']}, {c['rate_mbit']:g} Mbit/s, budget {c['budget']:g}, reuse "
                     f"{c['reuse']}, {c['objective']}: QPART {v['qpart']:.4g} vs {v['best_baseline']} "
                     f"{v['baseline_value']:.4g} ({significance}). {explain(v, rows_by_cell[key])}.")
    return lines


def _runs_table(rows_by_cell: dict) -> list[str]:
    lines = ["", "## Every run", "",
             "| model | device | Mbit/s | budget | reuse | objective | policy | cut | weight bits | act bits | p50 ms | p95 ms | "
             "predicted ms | bytes up | bytes down | energy mJ | accuracy % | emulated MMAC/s |",
             "|" + "---|" * 18]
    for key in sorted(rows_by_cell):
        for policy in POLICY_ORDER:
            row = rows_by_cell[key].get(policy)
            if row is None:
                continue
            capped = " (capped)" if row["emulation_capped"] else ""
            lines.append(
                f"| {row['model']} | {row['device']} | {row['rate_mbit']:g} | {row['budget']:g} | {row['reuse']} | "
                f"{row['objective_name']} | {policy} | {row['cut']} | {row['weight_bits']} | "
                f"{_act(row)} | {_ms(row['p50_s'])} | {_ms(row['p95_s'])} | {_ms(row['predicted_s'])} | "
                f"{row['bytes_up']:,.0f} | {row['bytes_down']:,.0f} | {row['energy_j'] * 1e3:.3f} | {row['accuracy']:.1f} | "
                f"{row['emulated_macs_per_second'] / 1e6:,.0f}{capped} |")
    return lines


def markdown(r: dict) -> str:
    rows_by_cell = _cells(r)
    lines = _header(r) + ["## Summary", ""] + summary_lines(r) + _losses(r, rows_by_cell) + _runs_table(rows_by_cell)
    return "\n".join(lines) + "\n"


def _save(fig, path: pathlib.Path) -> pathlib.Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _latency_plot(rows: list, config: dict, reuse: int, out_dir: pathlib.Path) -> pathlib.Path:
    device = "rpi4" if "rpi4" in config["devices"] else config["devices"][0]
    budget = 1.0 if 1.0 in config["budgets"] else config["budgets"][0]
    fig, axes = plt.subplots(1, len(config["models"]), figsize=(4.5 * len(config["models"]), 3.6), squeeze=False)
    for ax, model in zip(axes[0], config["models"]):
        for policy in POLICY_ORDER:
            points = sorted((row["rate_mbit"], row["p50_s"] * 1e3) for row in rows
                            if row["model"] == model and row["device"] == device and row["budget"] == budget
                            and row["reuse"] == reuse and row["objective_name"] == config["objectives"][0]
                            and row["policy"] == policy)
            if points:
                ax.plot(*zip(*points), marker="o", label=policy)
        ax.set(xscale="log", yscale="log", xlabel="link rate (Mbit/s)", ylabel="p50 time per inference (ms)",
               title=f"{model}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"measured p50 per inference: {device} (emulated), budget {budget:g}, head reuse {reuse}")
    return _save(fig, out_dir / f"latency_reuse{reuse}.png")


def _prediction_plot(rows: list, out_dir: pathlib.Path) -> pathlib.Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for policy in POLICY_ORDER:
        xs = [row["predicted_s"] * 1e3 for row in rows if row["policy"] == policy]
        ys = [row["p50_s"] * 1e3 for row in rows if row["policy"] == policy]
        ax.scatter(xs, ys, s=8, label=policy)
    low = min(row["p50_s"] for row in rows) * 1e3 * 0.8
    high = max(row["p50_s"] for row in rows) * 1e3 * 1.2
    for factor, style in ((1.0, "-"), (1.2, ":"), (1 / 1.2, ":")):
        ax.plot([low, high], [low * factor, high * factor], "k" + style, linewidth=0.8)
    ax.set(xscale="log", yscale="log", xlabel="predicted time per inference (ms)", ylabel="measured p50 (ms)",
           title="predicted vs measured (dotted: +-20 %)")
    ax.legend(fontsize=7)
    return _save(fig, out_dir / "predicted_vs_measured.png")


def _payload_plot(rows: list, config: dict, out_dir: pathlib.Path) -> pathlib.Path:
    rate = 5.0 if 5.0 in config["rates_mbit"] else config["rates_mbit"][0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.15
    for i, policy in enumerate(POLICY_ORDER):
        payload, energy = [], []
        for model in config["models"]:
            sel = [row for row in rows if row["model"] == model and row["policy"] == policy and row["rate_mbit"] == rate
                   and row["reuse"] == config["reuse"][0] and row["objective_name"] == config["objectives"][0]]
            payload.append(statistics.fmean(row["bytes_up"] + row["bytes_down"] for row in sel) / 1e3 if sel else 0)
            energy.append(statistics.fmean(row["energy_j"] for row in sel) * 1e3 if sel else 0)
        xs = [j + (i - 2) * width for j in range(len(config["models"]))]
        axes[0].bar(xs, payload, width, label=policy)
        axes[1].bar(xs, energy, width, label=policy)
    for ax, label in zip(axes, ("kB per inference (both ways, head spread over reuse)", "modelled device energy (mJ)")):
        ax.set_xticks(range(len(config["models"])), config["models"])
        ax.set(yscale="log", ylabel=label)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"payload and energy per policy at {rate:g} Mbit/s, head reuse {config['reuse'][0]} "
                 "(mean over devices and budgets)")
    return _save(fig, out_dir / "payload_energy.png")


def plots(r: dict, out_dir: pathlib.Path) -> list[pathlib.Path]:
    rows, config = r["rows"], r["config"]
    return ([_latency_plot(rows, config, reuse, out_dir) for reuse in config["reuse"]]
            + [_prediction_plot(rows, out_dir), _payload_plot(rows, config, out_dir)])
