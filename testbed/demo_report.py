"""The demo's summary, from the device's JSON report (`qpart-device --json`) and the model's card.

What crossed the cut is measured: the bytes of the Infer messages the device sent, per input (the tensors as
they travelled, raw, zlib-coded or as image files, plus request ids, tensor names and gRPC framing), beside
what the plan said it would pack (`crossing[].packed_bytes`; `crossing[].bytes_per_input` is each tensor's
measured share, qpart.device.report.RunReport).
"""
from qpart.common import tensors
from qpart.v1 import service_pb2 as spb


def coding(crossing: dict) -> str:
    """'raw', 'zlib', 'webp q75', ...: the report's coding of a crossing tensor, a label or a qpart.v1.Coding name
    (with its quality)."""
    how = str(crossing.get("coding") or "raw")
    if how.startswith("CODING_"):
        return tensors.coding_label(spb.Coding.Value(how), int(crossing.get("quality") or 0))
    return how


def measured_up(report: dict) -> tuple[int, float]:
    """(bytes of the Infer messages the device sent, their mean per input): what really crossed the cut."""
    sent = int(report.get("wire", {}).get("Infer", {}).get("sent", 0))
    return sent, sent / max(int(report.get("inputs") or 0), 1)


def where(report: dict) -> str:
    cut, nodes = report["cut"], report["num_nodes"]
    if cut == 0:
        return "no split: the device sends the input and the server runs the whole model"
    if cut == nodes or not report["crossing"]:
        return "no split: the device runs the whole model"
    return f"split at cut {cut} of {nodes} nodes: the device runs nodes[0:{cut}], the server the rest"


def crossing(report: dict) -> str:
    """The tensors the plan sends, as it codes them, and the bytes measured per input."""
    parts = []
    for c in report["crossing"]:
        how = coding(c)
        if how == "raw":
            parts.append(f"{c['name']} {c['shape']} at {c['bits']} bits, packed ({c['packed_bytes']:,} B)")
        elif how == "zlib":
            parts.append(f"{c['name']} {c['shape']} at {c['bits']} bits, zlib-coded (packed: {c['packed_bytes']:,} B)")
        else:
            parts.append(f"{c['name']} {c['shape']} as {how} files of its 8-bit codes")
    sent, per_input = measured_up(report)
    return (f"crossed the cut: {'; '.join(parts)}; measured {per_input:,.0f} B per input ({sent:,} B of Infer "
            f"messages for {report['inputs']:,} inputs: the tensors plus request ids, names and gRPC framing)")


def model_line(name: str, card: dict) -> str:
    training = card.get("training") or {}
    line = (f"model {name}: float test accuracy {card.get('float_test_accuracy', float('nan')):.2f}% on "
            f"{card.get('test_samples', 0):,} test images")
    if training.get("schedule"):
        line += (f", trained on the {training['schedule']} schedule: {training['train_samples']:,} of "
                 f"{training.get('available_samples', training['train_samples']):,} training images, "
                 f"{training['epochs']} epoch(s) in {training['seconds']:.0f} s (short; `qpart train {name}` trains "
                 "the full schedule)")
    return line


def lines(result: dict, card: dict, request: str, rate_mbps: float) -> list[str]:
    split, unsplit = result["split"], result["unsplit"]
    drop = split["predicted"].get("accuracy_drop")
    out = ["== qpart demo ==", model_line(split["model"], card), f"request: {request}",
           f"link: priced at {rate_mbps:g} Mbit/s, NOT shaped: device and server talk over this host's loopback, so "
           "the times below are loopback's (`sudo qpart bench` runs over a shaped link; root only)",
           f"plan ({split['policy']}): {where(split)}; weight bits {split['weight_bits']}, activation bits "
           f"{split['activation_bits']}, " + (f"certified drop {drop:.2f} points" if drop is not None
                                              else "drop not measured")]
    if split.get("reason"):
        out.append(f"why: {split['reason']}")
    if split["crossing"]:
        out.append(crossing(split))
    _, unsplit_up = measured_up(unsplit)
    out.append(f"unsplit reference: the float32 input to the server, {unsplit_up:,.0f} B per input measured the same way")
    out.append(f"accuracy: split {split['accuracy']:.2f}%  unsplit {unsplit['accuracy']:.2f}%  "
               f"(agreement {result['agreement']:.2f}%)")
    sent = sum(v["sent"] for v in split["wire"].values())
    received = sum(v["received"] for v in split["wire"].values())
    head = split["head"]
    shipped = (f"head {head['bytes']:,} bytes for {head['float32_bytes']:,} float32 bytes" if head["bytes"]
               else "no head shipped")
    out.append(f"bytes (gRPC messages): device -> server {sent:,}, server -> device {received:,} ({shipped})")
    if split.get("tcp"):
        out.append(f"bytes (TCP, from the kernel): device -> server {split['tcp']['sent']:,}, "
                   f"server -> device {split['tcp']['received']:,}")
    latencies = sorted(split["batch_latency_s"])
    if latencies:
        out.append(f"latency per image (loopback, unshaped): p50 {latencies[len(latencies) // 2] * 1e3:.2f} ms, "
                   f"p95 {latencies[int(len(latencies) * 0.95)] * 1e3:.2f} ms; wall {split['total_s']:.2f} s")
    return out
