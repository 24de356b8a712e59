"""Speculative drafting for one device: tokens per second, acceptance, bytes and server compute per token, for
each draft model and k, against server-only generation of the same tokens, over an emulated link.

    python bench/drafting.py [--models model-repo] [--model gpt-fortunes] [--drafts draft-fortunes-1,draft-fortunes-2]
                             [--ks 1,2,4,6,auto] [--rate 20] [--rtt 10] [--tokens 64] [--prompts 4] [--bits 8]
                             [--markdown docs/benchmarks/drafting.md]

qpart-server runs as its own process (1 torch thread); the link is a delay relay on loopback (serialization at
the rate, half the round trip each way); the device is this process, drafting with numpy (the draft whole on
the device at --bits weight bits, its head shipped by the server). Greedy decoding: every drafted run must
give exactly server-only generation's tokens (checked, printed). Board speeds are not emulated: the device
drafts at this machine's speed.

Then the planner's own choice (policy speculative, and qpart with the device able to draft, under a time-only
objective and with server seconds priced at --w-cost): the device's MAC rate and cost per op measured here
(numpy), the link as emulated, the server timed at its start and observing the rounds above; the chosen draft
and k run as a device runs a plan (qpart.device.speculative.planned), predicted against measured. The target
needs drafts.json beside it (`qpart catalog TARGET` measures it).
"""
import argparse
import dataclasses
import pathlib
import statistics
import sys
import time

from qpart.common import messages
from qpart.common.costmodel import DeviceProfile, LinkProfile, Objective
from qpart.device import compute, speculative
from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.device.generation import SplitGeneration
from qpart.device.speculative import SpeculativeGeneration
from qpart.server.models.repository import ModelRepository
from qpart.testbed.processes import ServerProcess
from qpart.v1 import service_pb2 as spb

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from generation import prompts, start_link  # noqa: E402  (the same prompts and relay as the split-decoding bench)


def cut_zero(client: ServerClient, model: str) -> spb.PlanResponse:
    return client.plan(spb.PlanRequest(model=model, policy=spb.FIXED,
                                       fixed=spb.FixedPlan(cut=0, weight_bits=[32], activation_bits=[32])))


def draft_head(client: ServerClient, draft: str, bits: int):
    info = client.list_models(draft)[0]
    plan = client.plan(spb.PlanRequest(model=draft, policy=spb.FIXED,
                                       fixed=spb.FixedPlan(cut=len(info.nodes), weight_bits=[bits])))
    head, _ = DeviceAgent(client, HeadCache(None), backend="numpy").obtain_head(plan)
    return head, info, plan


def run(generator, inputs, tokens: int) -> dict:
    generator.generate(inputs[0], tokens)                    # warm-up: the stream, the first runs' allocations
    outs = [generator.generate(p, tokens) for p in inputs]
    total = [o.first_token_s + sum(o.token_s) for o in outs]
    made = sum(len(o.tokens) for o in outs)
    drafted = sum(o.drafted for o in outs)
    return {"tokens": [o.tokens for o in outs], "total": statistics.median(total),
            "per_s": made / sum(total), "acceptance": sum(o.accepted for o in outs) / drafted if drafted else None,
            "per_draft": sum(o.accepted for o in outs) / max(sum(o.examined for o in outs), 1),
            "per_round": made / max(sum(o.rounds for o in outs), 1),
            "k": statistics.median(k for o in outs for k in o.ks) if any(o.ks for o in outs) else 0,
            "up": sum(sum(o.sent_bytes) for o in outs) / made,
            "server_ms": 1e3 * sum(o.server_s for o in outs) / made,
            "device_ms": 1e3 * sum(o.device_s for o in outs) / made}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--model", default="gpt-fortunes")
    parser.add_argument("--drafts", default="draft-fortunes-1,draft-fortunes-2")
    parser.add_argument("--ks", default="1,2,4,6,auto",
                        help="drafts per round, comma-separated; auto: 3 first, then chosen from what is observed")
    parser.add_argument("--rate", type=float, default=20.0, help="Mbit/s")
    parser.add_argument("--rtt", type=float, default=10.0, help="round trip, ms")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--bits", type=int, default=8, help="the draft's weight bits on the device")
    parser.add_argument("--w-cost", type=float, default=100.0,
                        help="the planner rows' weight on server seconds (time's is 1; price 1 a second)")
    parser.add_argument("--markdown", type=pathlib.Path)
    args = parser.parse_args()
    inputs = prompts(ModelRepository(args.models).get(args.model), args.prompts)
    started, rows = time.perf_counter(), []
    with ServerProcess(args.models, 0, "--torch-threads", "1", "--remeasure-speed") as server:
        proc, address = start_link(server, args.rate, args.rtt)
        try:
            with ServerClient(address, timeout_s=120) as client:
                info, target = client.list_models(args.model)[0], cut_zero(client, args.model)
                base = run(SplitGeneration(client, target, None, info), inputs, args.tokens)
                rows.append(("server_only", "", base))
                print(_row(rows[-1], base), flush=True)
                for draft in [d.strip() for d in args.drafts.split(",")]:
                    head, draft_info, _ = draft_head(client, draft, args.bits)
                    for k in args.ks.split(","):               # "auto": from 3, then AdaptiveK
                        spec = SpeculativeGeneration(client, target, info, head, draft_info,
                                                     3 if k == "auto" else int(k), adapt=k == "auto")
                        found = run(spec, inputs, args.tokens)
                        rows.append((draft, k, found))
                        print(_row(rows[-1], base), flush=True)
                chosen = planned(client, args, info, inputs, base)
        finally:
            proc.terminate()
    lines = [f"## Speculative drafting, one device: {args.model}, {args.tokens} tokens after {len(inputs[0])}-token "
             f"prompts", "",
             f"`python bench/drafting.py {' '.join(sys.argv[1:])}` on {sys.platform}, 2 cores, "
             f"{(time.perf_counter() - started) / 60:.0f} minutes. Link: a relay on loopback, {args.rate:g} Mbit/s, "
             f"{args.rtt:g} ms round trip. Server: 1 torch thread, the target whole (cut 0). Device: this machine's "
             f"numpy, the draft whole at {args.bits}-bit weights. Greedy decoding; {len(inputs)} prompts, the median "
             f"generation's time; rates over all of them.", "",
             "| draft | k | ms per generation | tokens/s | drafts kept of sent | acceptance a (of examined) | "
             "tokens per round | bytes up per token | server ms per token | device ms per token | "
             "same tokens as server_only |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r, base) for r in rows]
    lines += ["", f"The planner's choice for this device (numpy here: MAC rate and cost per op measured) and link, "
                  f"{args.tokens} new tokens after {len(inputs[0])}: predicted against measured (median generation).",
              "", "| policy | objective, device memory | plan | predicted ms | measured ms | error | acceptance a: planned / observed |",
              "|---|---|---|---|---|---|---|"] + chosen
    print("\n".join(lines))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(lines) + "\n")
    return 0


def planned(client: ServerClient, args, info, inputs, base) -> list[str]:
    """Rows for the plans the server chooses (policy speculative; qpart under time only and with server cost)."""
    found = compute.measure("numpy")
    device = messages.device_to_pb(dataclasses.replace(
        DeviceProfile(name="this machine"), macs_per_second=found.macs_per_second,
        seconds_per_node=found.seconds_per_node, max_draft_tokens=speculative.MAX_K))
    agent, out, small = DeviceAgent(client, HeadCache(None), backend="numpy"), [], None
    for policy, cost, limited in (("speculative", 0.0, False), ("qpart", 0.0, False), ("qpart", args.w_cost, False),
                                  ("qpart", 0.0, True), ("qpart", args.w_cost, True)):
        if limited:     # room for the chosen draft and its cache (1.25x), not for the target whole
            small = small or spb.DeviceCapabilities(memory_bytes=int(1.25 * first.predicted.device_memory_bytes))
            device.memory_bytes = small.memory_bytes
        request = spb.PlanRequest(model=args.model, device=device, policy=getattr(spb, policy.upper()),
                                  link=messages.link_to_pb(LinkProfile(rate_bps=args.rate * 1e6, rtt_s=args.rtt / 1e3)),
                                  weights=messages.objective_to_pb(Objective(1.0, 0.0, cost)), inferences_per_head=10 ** 6,
                                  generation=spb.GenerationShape(prompt_tokens=len(inputs[0]), new_tokens=args.tokens))
        plan = client.plan(request)
        first = first if policy == "qpart" else plan
        if plan.HasField("drafting"):
            d = plan.drafting
            what = f"draft {d.model} at {d.weight_bits} bits, k = {d.draft_tokens}"
            m = run(speculative.planned(agent, plan, info), inputs, args.tokens)
            seen = f"{d.acceptance:.2f} / {m['per_draft']:.2f}"
        else:
            what = "server generates (prompt sent)" if plan.cut == 0 else f"cut {plan.cut}"
            m = run(SplitGeneration(client, plan, agent.obtain_head(plan)[0], info), inputs, args.tokens)
            seen = ""
        predicted = plan.predicted.total_time_s
        same = "" if m["tokens"] == base["tokens"] else " (tokens DIFFER from server_only)"
        memory = f", {device.memory_bytes / 1e6:.2f} MB" if limited else ""
        out.append(f"| {policy} | time{f' + {cost:g} x server s' if cost else ''}{memory} | {what}{same} | "
                   f"{1e3 * predicted:.0f} | {1e3 * m['total']:.0f} | {100 * (predicted / m['total'] - 1):+.1f} % | "
                   f"{seen} |")
        print(out[-1], flush=True)
    return out


def _row(row, base) -> str:
    name, k, m = row
    acceptance = "" if m["acceptance"] is None else f"{100 * m['acceptance']:.0f} % | {100 * m['per_draft']:.0f} %"
    k = f"auto (median {m['k']:g})" if k == "auto" else k
    acceptance = acceptance or " | "
    return (f"| {name} | {k} | {1e3 * m['total']:.0f} | {m['per_s']:.0f} | {acceptance} | {m['per_round']:.2f} | "
            f"{m['up']:.0f} | {m['server_ms']:.2f} | {m['device_ms']:.2f} | {'yes' if m['tokens'] == base['tokens'] else 'NO'} |")


if __name__ == "__main__":
    raise SystemExit(main())
