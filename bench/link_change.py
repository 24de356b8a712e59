"""The link drops and recovers under a running device: re-planning, measured (needs root).

    sudo python bench/link_change.py [--models model-repo] [--model resnet8-96] [--rates 20,1,20]
                                     [--hold 12,15] [--out docs/benchmarks/link_change.md]

A device process (rpi4 profile, speed emulated) classifies Fashion-MNIST test images one at a time over
the testbed's shaped veth with `qpart-device --adapt`; the link is reshaped live with tc on a schedule the
device does not know (qpart.testbed.linkchange). The report gives, for each change, when it showed in
the device's traffic and when the new plan was in hand, and for every plan used: the link it was priced
for, the cut and bits, predicted and measured time per input, and that every input was answered once.
"""
import argparse
import datetime
import json
import pathlib
import platform

from qpart.testbed import linkchange


def markdown(result: dict, command: str) -> str:
    config, device = result["config"], result["device"]
    start = device["phases"][0]["ready_at"]
    lines = [
        "# Re-planning when the link changes", "",
        f"`{command}` on {platform.node()} ({datetime.date.today()}): {config['model']} (Fashion-MNIST resized to "
        "3x96x96, gray repeated over three channels: a camera stand-in), device profile "
        f"{config['profile']} with its speed emulated, budget {config['budget']:g} point(s), heads priced for "
        f"{config['reuse']} inputs, one input per message, testbed veth shaped with tc (tbf rate) and "
        f"{2 * config['delay_ms']:g} ms round trip, changed live: "
        + " -> ".join(f"{r:g}" for r in config["rates_mbit"]) + " Mbit/s. The device is told nothing: it watches "
        "its own answers (round trip less the server's reported time, against what the plan priced) and, "
        "while its plan sends nothing, probes the idle link every 2 s.", "",
        f"Inputs: {device['inputs']} of {config['count']} answered, each once ({device['resent_inputs']} resent, "
        f"{device['duplicates_dropped']} duplicate answers); top-1 {device['accuracy']:.2f}%.", "",
        "## Each change", "",
        "| link now | showed in the traffic after | new plan in hand after | of which after it showed | head ready "
        "(download or cache) | plan before | plan after |",
        "|---|---|---|---|---|---|---|"]
    for pair in result["pairs"]:
        if pair["after"] is None:
            lines.append(f"| {pair['rate_mbit']:g} Mbit/s | not seen | - | - | - | {_plan(pair['before'])} | - |")
            continue
        a = pair["after"]
        head = "cached" if a["head_cache_hit"] else f"{a['head_bytes']:,} B" if a["head_bytes"] else "no head"
        lines.append(f"| {pair['rate_mbit']:g} Mbit/s | {pair['visible_s']:.2f} s | {pair['replanned_s']:.2f} s | "
                     f"{pair['plan_after_visible_s']:.2f} s | {pair['head_s'] * 1e3:.0f} ms ({head}) | "
                     f"{_plan(pair['before'])} | {_plan(a)} |")
    lines += ["", "## Every plan used", "",
              "| from (s) | trigger | priced for | plan | up per input | predicted ms/input | of which head download "
              "| measured ms/input (head download excluded) | inputs |",
              "|---|---|---|---|---|---|---|---|---|"]
    for p in device["phases"]:
        lines.append(f"| {p['ready_at'] - start:.1f} | {p['trigger']} | {p['link_mbps']:.2f} Mbit/s, {p['rtt_ms']:.1f} ms | "
                     f"{_plan(p)} | {p['up_bytes_per_input']:,} B | {p['predicted_ms']:.1f} | {p['predicted_head_ms']:.1f} | "
                     f"{p['measured_ms']:.1f} | "
                     f"{p['inputs']} |")
    lines += ["", "Predicted: the plan's time per input, its head download spread over the inputs it is priced "
              "for (0 when the device holds the head); measured: the phase's wall time over its inputs, the "
              "head's download excluded (the table above gives it), so it compares with the prediction less "
              "that share. The rate a plan is priced for is what the traffic (or the probe) showed, so it is "
              "an estimate, not the tc setting; the small idle-link probe reads low (per-call overhead), which "
              "errs toward keeping work on the device."]
    if not result["still_running"]:
        lines += ["", f"NOTE: the device ran out of inputs less than {config['tail_s']:g} s after the last change."]
    return "\n".join(lines) + "\n"


def _plan(p: dict) -> str:
    if not p["activation_bits"]:
        return f"all {p['num_nodes']} nodes on the device"
    if p["cut"] == 0:
        return f"input at {p['activation_bits']} bits"
    return f"cut {p['cut']} of {p['num_nodes']}, activations {p['activation_bits']} bits"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--model", default="resnet8-96")
    parser.add_argument("--rates", default="20,1,20", help="Mbit/s at the start, then after each change")
    parser.add_argument("--hold", default="12,15", help="seconds each rate but the last is held")
    parser.add_argument("--count", type=int, default=5000, help="inputs the device classifies")
    parser.add_argument("--data", help="data spec of the test images (default Fashion-MNIST)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/benchmarks/link_change.md"))
    parser.add_argument("--json", type=pathlib.Path, help="also write the raw result here")
    args = parser.parse_args()
    config = linkchange.LinkChangeConfig(model=args.model, count=args.count,
                                         rates_mbit=tuple(float(r) for r in args.rates.split(",")),
                                         hold_s=tuple(float(h) for h in args.hold.split(",")))
    result = linkchange.run(config, args.models, args.data)
    command = f"python bench/link_change.py --model {args.model} --rates {args.rates} --hold {args.hold}"
    text = markdown(result, command)
    print(text)
    print("\n".join(result["device_output"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if result["device"]["inputs"] == config.count else 1


if __name__ == "__main__":
    raise SystemExit(main())
