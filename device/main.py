"""qpart-device: run split inference against a qpart server.

    qpart-device --server 127.0.0.1:50051 --model fc6 --profile rpi4 --rate-mbps 20 --budget 1 --count 1000
    qpart-device serve --config /etc/qpart/device.toml     (the daemon: see qpart.device.daemon)

The device asks the server for a plan (or gives one with --cut and bit widths), fetches the head
unless its cache holds it, runs the head on local test images (Fashion-MNIST, or --data) put through
the model's preprocessing, streams the packed activations and prints predictions, accuracy, bytes
each way and timings. For a language model it generates a continuation of --prompt through the split.
"""
import argparse
import dataclasses
import json
import logging
import os
import pathlib
import sys
import time

# gRPC core's own log lines (a failed TLS handshake, say) would reach the user beside our message that says
# what went wrong; GRPC_VERBOSITY=ERROR in the environment brings them back
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import numpy as np  # noqa: E402

from qpart.common import data, datasets, messages, options, policies, runtime, table
from qpart.common.errors import QpartError
from qpart.device import backends, compute, generate_run, probe
from qpart.device.agent import DeviceAgent, RunReport
from qpart.device.report import json_ready
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient, TlsSettings
from qpart.v1 import network_pb2 as npb
from qpart.v1 import service_pb2 as spb

DEFAULT_CACHE = pathlib.Path.home() / ".cache" / "qpart" / "heads"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qpart-device", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="127.0.0.1:50051",
                        help="server address host:port, or several separated by commas (replicas, tried in turn)")
    parser.add_argument("--model", default="fc6", help="model to run (default %(default)s)")
    options.add_device_options(parser)
    parser.add_argument("--no-measure-compute", dest="measure_compute", action="store_false",
                        help="price the head with the profile's speed instead of this device's MAC rate, which is "
                             "measured by default (except with --emulate-speed) for the backend that will run the head")
    parser.add_argument("--backend", choices=backends.NAMES, default="auto",
                        help="head executor: numpy, torch, onnxruntime (image models' heads only; the onnxruntime "
                             "extra), or auto (the fastest installed of numpy and torch, timed before the plan)")
    parser.add_argument("--deadline-ms", type=float, default=0.0,
                        help="each batch's answer is of use only this long after the server reads it, ms; the server "
                             "sheds what cannot make it (DEADLINE_EXCEEDED) instead of answering late (0: none)")
    parser.add_argument("--emulate-speed", action="store_true",
                        help="emulate the profile's board: stretch each head run to its MAC count / the profile's "
                             "MAC rate (reported as emulated; a real board runs at its own speed)")
    options.add_link_options(parser)
    parser.add_argument("--measure-link", action="store_true",
                        help="probe the link to the server and send the measured rates")
    options.add_plan_options(parser)
    generate_run.add_options(parser)
    parser.add_argument("--explain", action="store_true", help="print every candidate the planner weighed")
    parser.add_argument("--adapt", action="store_true",
                        help="follow the link: watch this run's own traffic (and probe when the plan sends nothing) "
                             "and plan again when the rate changes lastingly (qpart.device.adaptive); prints one line "
                             "per plan used")
    options.add_fixed_options(parser)
    g = parser.add_argument_group("inputs")
    g.add_argument("--data", help="the test images: a data spec (fashion-mnist, a directory of MNIST IDX files, a "
                                  f".npz of x and y, an image folder; default Fashion-MNIST from ${data.DATA_ENV} or "
                                  f"{data.DEFAULT_DATA_DIR})")
    g.add_argument("--count", type=int, default=100, help="test images to classify (default %(default)s)")
    g.add_argument("--offset", type=int, default=0, help="first test image")
    g.add_argument("--batch-size", type=int, default=1, help="inputs per activation message")
    g.add_argument("--window", type=int, default=1, help="batches in flight at once (1: one answer before the next send)")
    g = parser.add_argument_group("runtime")
    g.add_argument("--cache", type=pathlib.Path, default=DEFAULT_CACHE, help="head cache directory")
    g.add_argument("--no-cache", action="store_true", help="always download the head (nothing is cached)")
    g.add_argument("--max-head-mb", type=float, default=256.0, help="refuse heads larger than this, MiB")
    g.add_argument("--timeout", type=float, default=30.0, help="deadline of each call, seconds")
    g.add_argument("--retries", type=int, default=6,
                   help="attempts after the first when a server is unavailable (exponential backoff, next replica)")
    g = parser.add_argument_group("security")
    g.add_argument("--token", default=os.environ.get("QPART_TOKEN"),
                   help="bearer token sent with every call (default $QPART_TOKEN)")
    g.add_argument("--tls-ca", type=pathlib.Path, help="CA certificate (PEM) to trust for the server: use TLS")
    g.add_argument("--tls-cert", type=pathlib.Path, help="this device's certificate (PEM), for mutual TLS")
    g.add_argument("--tls-key", type=pathlib.Path, help="this device's private key (PEM)")
    g.add_argument("--tls-server-name", help="name the server certificate must carry, if not the host's")
    g.add_argument("--compare-unsplit", action="store_true",
                   help="also classify the same images with the whole float model on the server")
    g.add_argument("--json", type=pathlib.Path, help="write the full report here as JSON")
    g.add_argument("--scores", action="store_true",
                   help="with --json: every input's model output too (a classifier's logits), fixed plans included")
    g.add_argument("--quiet", action="store_true", help="print only the summary lines")
    return parser.parse_args(argv)


def measured_device(args) -> tuple:
    """(DeviceProfile the plan is priced with, what was measured): the backend that runs the head (for auto the
    fastest installed one, qpart.device.compute) and its MAC rate, unless emulating a profile or told not to."""
    device = options.device_from_args(args)
    if not args.measure_compute or args.emulate_speed:
        return device, {}
    found = compute.measure(args.backend)
    if found.warning:
        print(f"qpart-device: warning: {found.warning}; the plan is priced with the profile's rate", file=sys.stderr)
    measured = {"macs_per_second": found.macs_per_second, "backend": found.backend, "spread": found.spread,
                "rates": found.rates, "described": found.describe()}
    if found.macs_per_second:
        device = dataclasses.replace(device, macs_per_second=found.macs_per_second,
                                     seconds_per_node=found.seconds_per_node)
    return device, measured


def build_request(args, client: ServerClient) -> tuple[spb.PlanRequest, dict]:
    device, measured = measured_device(args)
    if args.measure_link:
        before = client.bytes["Probe"].sent + client.bytes["ProbeStream"].sent
        link = probe.measure_link(client)
        measured["link"] = {"uplink_bps": link.uplink_bps, "downlink_bps": link.downlink_bps, "rtt_s": link.rtt_s,
                            "probe_bytes_sent": client.bytes["Probe"].sent + client.bytes["ProbeStream"].sent - before}
    else:
        link = options.link_from_args(args)
    request = spb.PlanRequest(
        model=args.model, device=messages.device_to_pb(device), link=messages.link_to_pb(link),
        accuracy_budget=args.budget, weights=messages.objective_to_pb(options.objective_from_args(args)),
        inferences_per_head=args.reuse or args.count, policy=policies.to_enum(args.policy), explain=args.explain)
    if args.cut is not None:
        request.policy = spb.FIXED
        request.fixed.CopyFrom(spb.FixedPlan(
            cut=args.cut, weight_bits=args.weight_bits, activation_bits=args.activation_bits,
            weight_granularity=npb.PER_CHANNEL if args.per_channel else npb.PER_TENSOR))
    return request, measured


def unsplit_request(model: str) -> spb.PlanRequest:
    """The whole float model on the server, float32 input: the unsplit reference."""
    return spb.PlanRequest(model=model, policy=spb.FIXED, fixed=spb.FixedPlan(cut=0, activation_bits=[32]))


def test_inputs(spec, offset: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw test images (uint8) of a data spec and their labels; the agent preprocesses them as it runs."""
    images, labels = datasets.open_data(spec).part("test")
    return images[offset:offset + count], labels[offset:offset + count]


def _drop(p: dict) -> str:
    return (f"certified drop {p['accuracy_drop']:.2f} points" if p.get("accuracy_drop") is not None
            else "accuracy drop not measured")


def measured_lines(measured: dict, request: spb.PlanRequest) -> list[str]:
    lines = []
    if "macs_per_second" in measured:
        lines.append(f"measured  compute {measured['described']}: the head runs there and the plan is priced with it")
    if "link" in measured:
        link = measured["link"]
        lines.append(f"measured  link up {link['uplink_bps'] / 1e6:.2f} Mbit/s, down {link['downlink_bps'] / 1e6:.2f} "
                     f"Mbit/s, round trip {link['rtt_s'] * 1e3:.1f} ms ({link['probe_bytes_sent']:,} probe bytes sent)")
    lines.append(f"reuse     the head is priced for {request.inferences_per_head} inference(s) (--reuse; default: --count)")
    return lines


def summary(report: RunReport) -> list[str]:
    p = report.predicted
    head = report.head
    lines = [f"plan      {report.model} policy={report.policy} cut {report.cut} of {report.num_nodes} nodes on the device, "
             f"weight bits {report.weight_bits}, activation bits {report.activation_bits}",
             f"predicted {p['total_time_s'] * 1e3:.3f} ms/inference (device {p['device_time_s'] * 1e3:.3f}, uplink "
             f"{p['uplink_time_s'] * 1e3:.3f}, downlink {p['downlink_time_s'] * 1e3:.3f}, server {p['server_time_s'] * 1e3:.3f}, "
             f"rtt {p['rtt_time_s'] * 1e3:.3f}), energy {p['device_energy_j'] + p['tx_energy_j']:.3g} J, "
             f"{_drop(p)}"]
    if report.reason:
        lines.append(f"why       {report.reason}")
    if report.crossing:
        lines.append("sends     " + ", ".join(
            f"{c['name']} {c['shape']} at {c['bits']} bits as {c.get('coding') or 'raw'}: "
            + (f"{c['bytes_per_input']:,.0f} B measured" if c.get("bytes_per_input") is not None else "not sent")
            + f" (packed {c['packed_bytes']:,} B)" for c in report.crossing) + " per input")
    if head.content_hash:
        ratio = 100.0 * head.bytes / head.float32_bytes if head.float32_bytes else 0.0
        how = "from cache" if head.cache_hit else f"downloaded in {head.fetch_s * 1e3:.1f} ms"
        lines.append(f"head      {head.content_hash[:16]} {head.bytes:,} bytes for {head.parameters:,} parameters "
                     f"({ratio:.1f}% of float32), {how}; runs on {head.backend} holding {head.weight_bytes:,} B of weights")
    accuracy = f"; accuracy {report.accuracy:.2f}%" if report.accuracy is not None else ""
    if report.emulated_macs_per_second:
        accuracy += f"; device speed EMULATED at {report.emulated_macs_per_second / 1e6:,.0f} MMAC/s"
    lines.append(f"inputs    {report.inputs} in {report.batches} batch(es){accuracy}")
    sent = sum(v["sent"] for v in report.wire.values())
    received = sum(v["received"] for v in report.wire.values())
    per_rpc = ", ".join(f"{rpc} {v['sent']:,}/{v['received']:,}" for rpc, v in sorted(report.wire.items()))
    lines.append(f"messages  sent {sent:,} B, received {received:,} B (gRPC messages incl. 5-byte frames; {per_rpc})")
    if report.tcp is not None:
        lines.append(f"wire      sent {report.tcp['sent']:,} B, received {report.tcp['received']:,} B "
                     "(TCP payload from the kernel: HTTP/2 framing and control frames included)")
    lines.append(f"time      plan decided in {report.plan_decision_s * 1e3:.2f} ms on the server, Plan RPC "
                 f"{report.plan_s * 1e3:.1f} ms round trip; device compute {report.device_compute_s / max(report.inputs, 1) * 1e3:.3f} "
                 f"ms/input, batch latency p50 {report.latency_percentile(50) * 1e3:.2f} ms p95 "
                 f"{report.latency_percentile(95) * 1e3:.2f} ms, total {report.total_s:.2f} s")
    return lines


def serve(argv) -> int:
    """`qpart-device serve --config FILE`: run the daemon until SIGTERM or SIGINT."""
    import signal
    import threading
    from qpart.device import config, daemon
    parser = argparse.ArgumentParser(prog="qpart-device serve", description=daemon.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=pathlib.Path, required=True, help="the daemon's TOML configuration "
                                                                           "(deploy/device.toml documents every key)")
    args = parser.parse_args(argv)
    try:
        settings = config.load(args.config)
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        running = daemon.RunningDaemon(settings)
    except QpartError as e:
        print(f"qpart-device serve: {e.status}: {e}", file=sys.stderr)
        return 2
    print(f"qpart-device serving {', '.join(settings.models)} on {settings.listen}", flush=True)
    stopping = threading.Event()

    def on_signal(signum, _frame):
        stopping.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping.wait(0.5):     # wakes for signals
        pass
    running.stop()
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tls = None
    if args.tls_ca or args.tls_cert:
        tls = TlsSettings(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    client = ServerClient(args.server, timeout_s=args.timeout, token=args.token, tls=tls, retries=args.retries)
    cache = HeadCache(None if args.no_cache else args.cache)
    try:
        emulate = 0.0
        if args.emulate_speed:
            device = options.device_from_args(args)
            emulate = device.mac_rate
        agent = DeviceAgent(client, cache, max_head_bytes=int(args.max_head_mb * 2**20), emulate_macs_per_second=emulate,
                            backend=args.backend, deadline_s=args.deadline_ms / 1e3)
        info = agent.model_info(args.model)
        if info.task == "language-model":
            request, measured = build_request(args, client)
            agent.backend = measured.get("backend", args.backend)
            return generate_run.run(args, agent, info, request, measured)
        x, y = test_inputs(args.data, args.offset, args.count)
        agent.preprocessing = messages.preprocessing_from_pb(info.preprocessing)   # timed as the device's work
        request, measured = build_request(args, client)
        agent.backend = measured.get("backend", args.backend)     # auto: the backend the plan is priced with
        runtime.freeze_long_lived()
        if args.adapt:
            return run_adaptive(args, agent, request, x, y)
        report = agent.run(request, x, y, args.batch_size, args.window, keep_scores=args.scores)
        result = {"split": report.as_dict(), "measured": measured}
        for line in measured_lines(measured, request) + summary(report):
            print(line)
        if args.explain:
            print(server_speed_line(report.server_speed))
            print_candidates(report)
        if not args.quiet:
            print("predictions", " ".join(str(p) for p in report.predictions[:20]), "..." if len(x) > 20 else "")
        if args.compare_unsplit:
            reference = agent.run(unsplit_request(args.model), x, y, max(args.batch_size, 100), 1)
            agree = 100.0 * float(np.mean(np.array(report.predictions) == np.array(reference.predictions)))
            print(f"unsplit   accuracy {reference.accuracy:.2f}% (whole float model on the server); split "
                  f"{report.accuracy:.2f}%; predictions agree on {agree:.2f}% of inputs")
            result["unsplit"] = reference.as_dict()
            result["agreement"] = agree
        if args.json:
            args.json.write_text(json.dumps(json_ready({"schema": 2, **result}), indent=1))
        return 0
    except QpartError as e:
        print(f"qpart-device: {e.status}: {e}", file=sys.stderr)
        return 2
    finally:
        client.close()


def run_adaptive(args, agent: DeviceAgent, request: spb.PlanRequest, x, y) -> int:
    from qpart.device.adaptive import AdaptiveRun
    link = messages.link_from_pb(request.link)
    print(f"adapting  to the link from {link.uplink_bps / 1e6:.2f} Mbit/s, round trip {link.rtt_s * 1e3:.1f} ms: "
          f"{len(x)} inputs, a new plan at each lasting change", flush=True)
    report = AdaptiveRun(agent, request, link).run(x, y, args.batch_size, args.window)
    start = report.phases[0].detected_at
    for p in report.phases:
        print(f"phase     t={p.ready_at - start:7.2f}s {p.trigger}: link {p.link_mbps:.2f} Mbit/s -> cut {p.cut} of "
              f"{p.num_nodes}, activation bits {p.activation_bits}, {p.up_bytes_per_input:,} B up/input; predicted "
              f"{p.predicted_ms:.1f} ms/input, measured {p.measured_ms:.1f} ms/input over {p.inputs} inputs "
              f"(planned {1e3 * (p.planned_at - p.visible_at):.0f} ms after the change showed, head ready "
              f"{1e3 * (p.ready_at - p.planned_at):.0f} ms later{', cached' if p.head_cache_hit else ''})")
    accuracy = f", accuracy {report.accuracy:.2f}%" if report.accuracy is not None else ""
    print(f"inputs    {report.inputs} of {len(x)} answered once each ({report.resent_inputs} resent, "
          f"{report.duplicates_dropped} duplicate answers dropped){accuracy}")
    if args.json:
        args.json.write_text(json.dumps(json_ready({"schema": 2, "adaptive": report.as_dict()}), indent=1))
    return 0 if report.inputs == len(x) else 1


def server_speed_line(speed: dict) -> str:
    """How the server timed its part (PlanResponse.server_speed): the figures behind predicted server time."""
    if not speed.get("source"):
        return "server    its part priced at its configured MAC rate (the server does not time itself)"
    tail = (f"tail {speed['tail_seconds'] * 1e3:.3f} ms (spread {100 * speed['tail_spread']:.0f}%, "
            f"{speed['tail_runs']} runs, {speed['tail_refused']} refused)" if speed.get("tail_runs") else "no tail")
    busy = speed["busy_while_timed"]
    load = "load unknown" if busy < 0 else f"others used {100 * busy:.0f}% of its CPU" + (
        ", provisional" if busy > 0.25 else "")
    return (f"server    {tail}; MAC rate {speed['macs_per_second'] / 1e9:.2f} GMAC/s (spread "
            f"{100 * speed['macs_spread']:.0f}%); timed {time.time() - speed['measured_at']:.0f} s ago ({load}), "
            f"from the {speed['source']}".replace("from the measured", "at its start"))


def print_candidates(report: RunReport) -> None:
    print("candidates (* chosen, x not eligible; cut: nodes on the device; bits of the device's weight nodes and of "
          "the tensors crossing the cut; bytes per inference; objective = time s + energy J + cost, weighted):")
    rows = []
    for c in report.candidates:
        k = c["predicted"]
        rows.append(table.candidate_row(
            chosen=c["chosen"], rejected=c["rejected_reason"], cut=c["cut"], kind=c["kind"],
            coding=spb.Coding.Value("CODING_" + (c.get("coding") or "raw").upper()), quality=int(c.get("quality", 0)),
            weight_bits=c["weight_bits"], activation_bits=c["activation_bits"], head_bytes=int(k["head_bytes"]),
            uplink_bytes=int(k["uplink_bytes"]), total_time_s=k["total_time_s"],
            energy_j=k["device_energy_j"] + k["tx_energy_j"], server_cost=k["server_cost"], objective=k["objective"],
            drop=k.get("accuracy_drop")))
    for line in table.candidate_table(rows, [c["rejected_reason"] for c in report.candidates]):
        print(line)


if __name__ == "__main__":
    sys.exit(main())
