"""qpart-device on a language model: plan for the prompt's generation, fetch the head, generate through the split,
print where the cut fell, what crossed per token and the time per token (and write it all with --json)."""
import json
import statistics
import time

from qpart.common import sampling, tokenizer
from qpart.common.errors import FailedPrecondition
from qpart.device import speculative
from qpart.device.generation import SplitGeneration
from qpart.device.report import json_ready
from qpart.v1 import service_pb2 as spb


def add_options(parser) -> None:
    g = parser.add_argument_group("language models (ModelInfo.task language-model)")
    g.add_argument("--prompt", default="Q: What is the meaning of life?\nA:", help="the text to continue")
    g.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate (default %(default)s)")
    g.add_argument("--temperature", type=float, default=0.0, help="0: greedy; above 0: drawn with --seed")
    g.add_argument("--seed", type=int, default=0, help="seeds the draws (see qpart.v1.Sampling)")
    g.add_argument("--through-end", action="store_true", help="keep generating past the end-of-document token")
    g.add_argument("--draft-tokens", type=int, default=speculative.MAX_K,
                   help="most tokens this device drafts per round when the plan drafts (speculative drafting with a "
                        "draft model the server chooses; 0: never draft) (default %(default)s)")


def run(args, agent, info: spb.ModelInfo, request: spb.PlanRequest, measured: dict) -> int:
    if info.tokenizer != tokenizer.KIND:
        raise FailedPrecondition(f"model {info.name!r} names tokenizer {info.tokenizer!r}; this device knows "
                                 f"{tokenizer.KIND!r} only")
    words = tokenizer.ByteTokenizer()
    prompt = words.encode(args.prompt)
    request.generation.CopyFrom(spb.GenerationShape(prompt_tokens=len(prompt), new_tokens=args.max_new_tokens,
                                                    temperature=args.temperature))
    if not 0 <= args.draft_tokens <= speculative.MAX_K:
        raise FailedPrecondition(f"--draft-tokens must be 0 to {speculative.MAX_K}, got {args.draft_tokens}")
    request.device.max_draft_tokens = args.draft_tokens
    request.inferences_per_head = args.reuse or 1
    started = time.perf_counter()
    plan = agent.plan(request)
    executor, head = agent.obtain_head(plan)
    drafts = speculative.planned(agent, plan, info) if plan.HasField("drafting") else None
    ready = time.perf_counter() - started
    out = (drafts or SplitGeneration(agent.client, plan, executor, info)).generate(
        prompt, args.max_new_tokens, sampling.Sampling(args.temperature, args.seed),
        () if args.through_end else (words.end_of_document,))
    text = words.decode(out.tokens)
    where = {0: "the server runs the whole model (the prompt's ids are sent)",
             plan.num_nodes: "the whole model runs on the device"}.get(
        plan.cut, f"cut {plan.cut} of {plan.num_nodes}: {', '.join(a.name for a in plan.activations)} cross")
    per_token = statistics.median(out.token_s) if out.token_s else 0.0
    k = plan.predicted
    lines = [f"plan      {info.name} {spb.Policy.Name(plan.policy).lower()}: {where}; weight bits "
             f"{list(plan.weight_bits)[:12]}, activation bits {[a.bits for a in plan.activations]}",
             f"why       {plan.reason[:300]}",
             f"predicted {1e3 * k.total_time_s:.1f} ms for {len(prompt)} prompt and {args.max_new_tokens} new tokens; "
             f"next-token agreement drop {'%.2f points certified' % k.accuracy_drop if k.HasField('accuracy_drop') else 'not certified (a fixed plan)'}",
             (f"head      {plan.head_bytes:,} bytes ({'cached' if head.cache_hit else 'downloaded'}); plan and head in "
              f"{1e3 * ready:.0f} ms" if executor is not None else f"head      none; planned in {1e3 * ready:.0f} ms")]
    if drafts is not None:
        d = plan.drafting
        lines.append(f"drafting  {d.model} whole here at {d.weight_bits} bits ({d.head_bytes:,}-byte head), k = "
                     f"{d.draft_tokens} planned for acceptance {d.acceptance:.2f} (validation text); observed "
                     f"{out.accepted} of {out.drafted} drafts kept in {out.rounds} rounds, k {min(out.ks or [0])}-"
                     f"{max(out.ks or [0])}")
    elif out.sent_bytes:
        rest = out.sent_bytes[1:] or [0]
        lines.append(f"crossed   prompt {out.sent_bytes[0]:,} bytes in one message, then {statistics.median(rest):,.0f} "
                     f"bytes up per token; each token back in one answer")
    lines += [f"time      first token {1e3 * out.first_token_s:.1f} ms, then {1e3 * per_token:.2f} ms per token "
              f"(median of {len(out.token_s)}); device {1e3 * out.device_s:.1f} ms in all; {len(out.tokens)} tokens "
              f"({out.stopped}); sessions resent {out.resent_contexts}",
              f"text      {args.prompt!r} -> {text!r}"]
    for line in lines:
        print(line)
    if args.json:
        args.json.write_text(json.dumps(json_ready({"schema": 2, "measured": measured, "generation": {
            "model": info.name, "cut": plan.cut, "num_nodes": plan.num_nodes, "policy": spb.Policy.Name(plan.policy),
            "weight_bits": list(plan.weight_bits), "activation_bits": [a.bits for a in plan.activations],
            "prompt_tokens": len(prompt), "tokens": out.tokens, "text": text, "first_token_s": out.first_token_s,
            "token_s": out.token_s, "sent_bytes": out.sent_bytes, "device_s": out.device_s,
            "resent_contexts": out.resent_contexts, "stopped": out.stopped,
            "predicted_total_s": k.total_time_s, "backend": executor.backend.name if executor else "none",
            "drafting": {"model": plan.drafting.model, "planned_k": plan.drafting.draft_tokens,
                         "acceptance": plan.drafting.acceptance, "drafted": out.drafted, "accepted": out.accepted,
                         "rounds": out.rounds, "ks": out.ks} if drafts is not None else None}}), indent=1))
    return 0
