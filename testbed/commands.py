"""The harness's command groups for the `qpart` tool: testbed, bench and demo (added through the
`qpart.commands` entry point, so the tool itself never imports the harness)."""
import argparse
import dataclasses
import json
import pathlib
import sys

from qpart.cli.common import command


def cmd_testbed(args) -> None:
    from qpart.testbed import netns
    bed = netns.Testbed()
    if args.action == "up":
        state = bed.up(netns.LinkShape(args.rate or 0.0, args.delay or 0.0, args.jitter or 0.0, args.loss or 0.0))
        mode = "netem" if state["netem"] else "tbf for the rate; delay and serialization from `qpart testbed relay`"
        print(f"testbed up: {netns.SERVER_NS} {netns.SERVER_IP} <-> {netns.DEVICE_NS} {netns.DEVICE_IP} ({mode})")
        if not state["netem"]:
            print(f"start the relay in the server namespace: ip netns exec {netns.SERVER_NS} qpart testbed relay "
                  f"--listen {netns.SERVER_IP}:{netns.RELAY_PORT} --to 127.0.0.1:50051; devices connect to "
                  f"{netns.SERVER_IP}:{netns.RELAY_PORT}")
    elif args.action == "shape":   # only what is given changes; the rest of the current shape stays
        given = {"rate_mbit": args.rate, "delay_ms": args.delay, "jitter_ms": args.jitter, "loss_pct": args.loss}
        print(json.dumps(bed.reshape(**{k: v for k, v in given.items() if v is not None})["shape"]))
    elif args.action == "fade":
        bed.fade(args.bandwidth_mhz, args.snr_db, args.coherence_ms, args.duration, args.delay or 0.0, args.seed)
    elif args.action == "status":
        print(json.dumps(bed.state(), indent=1))
    elif args.action == "down":
        bed.down()
        print("testbed down")
    elif args.action == "relay":
        from qpart.testbed import relay
        sys.setswitchinterval(0.0002)   # threads waiting to release a chunk get the interpreter promptly
        listen, to = args.listen.rsplit(":", 1), args.to.rsplit(":", 1)
        r = relay.Relay((listen[0], int(listen[1])), (to[0], int(to[1])), relay.ShapeSource(args.state))
        print(f"relay {args.listen} -> {args.to}, shape from {args.state}", flush=True)
        r.serve_forever()


def cmd_bench(args) -> None:
    from qpart.testbed import bench, bench_report
    config = bench.GRIDS["reduced" if args.reduced else args.grid]
    if args.only:
        config = dataclasses.replace(config, models=tuple(args.only))
    results = bench.run(config, args.models, args.data)
    command_line = ("qpart bench" + (" --reduced" if args.reduced else f" --grid {args.grid}" if args.grid != "full" else "")
                    + f" --models {args.models}"
                    + (f" --only {' '.join(args.only)}" if args.only else "") + f" --out {args.out}")
    for path in bench_report.write(results, args.out, command_line):
        print(f"wrote {path}")
    for line in bench_report.summary_lines(results):
        print(line)


def cmd_demo(args) -> None:
    from qpart.testbed import demo
    demo.run(args.models, args.model, args.count, args.data)


def cmd_demo_text(args) -> None:
    from qpart.testbed import demo_text
    demo_text.run(args.models)


def register(sub) -> None:
    from qpart.testbed import netns
    p = command(sub, "testbed", cmd_testbed, "two network namespaces on a shaped veth (needs root)",
                repository=False, description=netns.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["up", "down", "shape", "fade", "status", "relay"])
    p.add_argument("--rate", type=float, help="Mbit/s each direction (0: unshaped; shape: unchanged if not given)")
    p.add_argument("--delay", type=float, help="one-way delay each direction, ms (shape: unchanged if not given)")
    p.add_argument("--jitter", type=float, help="delay jitter, ms (shape: unchanged if not given)")
    p.add_argument("--loss", type=float, help="loss, percent, netem only (shape: unchanged if not given)")
    p.add_argument("--bandwidth-mhz", type=float, default=1.0, help="fade: channel bandwidth B, MHz")
    p.add_argument("--snr-db", type=float, default=10.0, help="fade: mean SNR, dB")
    p.add_argument("--coherence-ms", type=float, default=200.0, help="fade: time between new fading draws, ms")
    p.add_argument("--duration", type=float, default=60.0, help="fade: seconds to keep fading")
    p.add_argument("--seed", type=int, default=0, help="fade: random seed")
    p.add_argument("--listen", default=f"{netns.SERVER_IP}:{netns.RELAY_PORT}", help="relay: address to listen on")
    p.add_argument("--to", default="127.0.0.1:50051", help="relay: the server's address")
    p.add_argument("--state", type=pathlib.Path, default=netns.STATE_DIR / "state.json",
                   help="relay: the testbed state file to read the shape from")
    p = command(sub, "bench", cmd_bench, "the six policies end to end over the shaped testbed link (needs root)")
    p.add_argument("--reduced", action="store_true", help="the small grid CI runs (as --grid reduced)")
    p.add_argument("--grid", choices=["full", "reduced", "camera"], default="full",
                   help="full: 5 models x 4 devices x 4 rates x 3 budgets (hours); camera: the 3x96x96 models on "
                        "rpi4 and Jetson at 1, 5, 20 Mbit/s (about 20 minutes)")
    p.add_argument("--only", nargs="+", metavar="MODEL", help="these models instead of the grid's")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/benchmarks"), help="where the reports go")
    p = command(sub, "demo", cmd_demo, "server and device as separate processes on 1,000 test images")
    p.set_defaults(models=pathlib.Path("demo-models"))   # its own: a short-schedule model, a catalog for the demo only
    p.add_argument("--model", default="resnet8-96", help="model (trained if absent; default %(default)s)")
    p.add_argument("--count", type=int, default=1000, help="test images (default %(default)s)")
    p = command(sub, "demo-text", cmd_demo_text, "a language model's text generated through a split (server and "
                                                 "device as separate processes)")
    p.set_defaults(models=pathlib.Path("demo-text-models"))   # its own: the short-schedule GPT and its demo catalog
