"""qpart: the operator's tool.

    qpart train fc6 lenet vgg8          train zoo models into the repository (default ./model-repo)
    qpart models                        list the repository
    qpart profile vgg8                  per-layer weights, MACs and activation sizes (eqs 1-2)
    qpart calibrate fc6                 the accuracy model: noise coefficients, alpha, t_i, additivity
    qpart catalog fc6 lenet vgg8        build the offline catalog of certified patterns (Algorithm 1)
    qpart plan fc6 --device rpi4 --rate-mbps 5 --budget 1     every candidate priced, the choice marked
    qpart demo                          server and device as separate processes on 1,000 test images
    qpart testbed up --rate 5 --delay 10          two network namespaces on a shaped veth (root)
    qpart testbed shape --rate 20 | fade ... | relay ... | status | down
    qpart bench [--reduced]             the five policies end to end on a shaped link (root)
    qpart token DEVICE [--models fc6]   a new bearer token and its entry for the server's devices file
"""
import argparse
import pathlib
import sys

from qpart.common import data
from qpart.common.errors import QpartError

DEFAULT_MODELS = pathlib.Path("model-repo")


def cmd_train(args) -> None:
    from qpart.server import train
    config = train.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                               validation_size=args.validation_size, seed=args.seed, train_limit=args.train_limit,
                               progress=not args.no_progress)
    for name in args.model:
        model = train.train(name, args.models, args.data, config)
        card = model.card
        print(f"{name}: version {model.version}, float test accuracy {card['float_test_accuracy']:.2f}% on "
              f"{card['test_samples']} images, validation {card['float_validation_accuracy']:.2f}%, "
              f"{card['training']['seconds']} s -> {model.directory}")


def cmd_models(args) -> None:
    from qpart.server.repository import ModelRepository
    for model in ModelRepository(args.models):
        weights = sum(layer.weight_count for layer in model.profile.layers)
        print(f"{model.name:<10} {model.version}  L={model.num_layers}  {weights:>9,} parameters  "
              f"test accuracy {model.card.get('float_test_accuracy', 0):.2f}%  {model.card.get('description', '')}")


def cmd_profile(args) -> None:
    from qpart.server.repository import ModelRepository
    model = ModelRepository(args.models).get(args.model)
    print(f"{model.name} ({model.version}): input {list(model.profile.input_shape)}, {model.num_layers} learnable layers")
    print(f"{'i':>3} {'name':<12} {'kind':<7} {'weights':>10} {'MACs':>12} {'input':<16} {'output':<16} {'cut p=i sends':>14}")
    for layer in model.profile.layers:
        sends = 1
        for d in model.profile.activation_shape(layer.index):
            sends *= d
        print(f"{layer.index:>3} {layer.name:<12} {layer.kind:<7} {layer.weight_count:>10,} {layer.macs:>12,} "
              f"{str(list(layer.input_shape)):<16} {str(list(layer.output_shape)):<16} {sends:>14,}")
    total_w = sum(layer.weight_count for layer in model.profile.layers)
    total_m = sum(layer.macs for layer in model.profile.layers)
    print(f"{'':>3} {'total':<12} {'':<7} {total_w:>10,} {total_m:>12,}")


def cmd_calibrate(args) -> None:
    from qpart.server import calibration, train
    from qpart.server.accuracy import Evaluator
    from qpart.server.repository import ModelRepository
    model = ModelRepository(args.models).get(args.model)
    x, y = train.validation_data(model, args.data)
    am = calibration.calibrate(Evaluator(model, x[: args.samples], y[: args.samples]), args.granularity)
    bits = calibration.SWEEP_BITS
    print(f"{model.name}: accuracy model on {am.samples} validation images ({am.granularity} weight scales)")
    print(f"alpha = {am.alpha:.3f} per bit (ln 4 = 1.386 for uniform noise), fitted on bits {calibration.FIT_BITS}")
    print(f"{'what':<6} {'elements':>9} {'q (0 bits)':>11} {'t':>6}  E||r||^2 at bits {bits}   drop (points)")
    for prof in am.weights + am.activations:
        name = f"{'W' if prof.kind == 'weight' else 'A'}{prof.index}"
        energy = " ".join(f"{prof.energy[b]:.2e}" for b in bits)
        drops = " ".join(f"{prof.drop[b]:5.2f}" for b in bits)
        print(f"{name:<6} {prof.elements:>9,} {prof.q:>11.3g} {prof.t:>6.2f}  {energy}  {drops}")
    print("additivity (all weights quantized at once vs the sum of single layers):")
    for a in am.additivity:
        print(f"  {a['bits']} bits: E||r||^2 all {a['energy_all']:.3g} vs sum {a['energy_sum']:.3g} "
              f"(ratio {a['energy_all'] / a['energy_sum']:.2f}); measured drop {a['drop_all']:.2f}, "
              f"predicted {a['predicted_drop']:.2f} points")
    print("noise budget C(a) for accuracy budgets a: " +
          ", ".join(f"C({a:g})={am.noise_budget(a):.3g}" for a in (0.1, 0.25, 0.5, 1, 2)))


def cmd_catalog(args) -> None:
    from qpart.server import catalog
    from qpart.server.repository import ModelRepository
    repo = ModelRepository(args.models)
    for name in args.model:
        model = repo.get(name)
        built = catalog.load(model)
        if built is None or args.force:
            config = catalog.CatalogConfig(search_samples=args.search_samples,
                                           certification_samples=args.certification_samples)
            built = catalog.build(model, args.data, config, progress=not args.no_progress)
            catalog.save(model, built)
            print(f"{name}: built in {built.build_seconds} s, {built.evaluations} evaluations -> {model.catalog_path}")
        else:
            print(f"{name}: the catalog is current for version {model.version} (--force rebuilds it)")
        print_catalog(model, built)


def print_catalog(model, built) -> None:
    print(f"{'p':>3} {'kind':<8} {'budget':>6} {'weight bits':<28} {'act':>4} {'certified':>9} {'head bytes':>11} "
          f"{'% float32':>9}")
    for e in built.entries:
        float32 = 4 * sum(layer.weight_count for layer in model.profile.device_layers(e.partition_point))
        share = f"{100 * e.head_bytes / float32:.1f}" if float32 else "-"
        budget = f"{e.budget:g}" if e.budget is not None else "-"
        print(f"{e.partition_point:>3} {e.kind:<8} {budget:>6} {str(e.weight_bits):<28} {e.activation_bits:>4} "
              f"{e.certified_drop:>9.2f} {e.head_bytes:>11,} {share:>9}")
    print(f"certification: {built.certification}")


def cmd_plan(args) -> None:
    from qpart.common import cli
    from qpart.server.heads import HeadStore
    from qpart.server.planner import Planner, PlanRequest
    from qpart.server.repository import ModelRepository
    planner = Planner(ModelRepository(args.models), HeadStore())
    request = PlanRequest(args.model, cli.device_from_args(args), cli.link_from_args(args), args.budget,
                          cli.objective_from_args(args), args.reuse, policy=args.policy, explain=True)
    plan = planner.plan(request)
    device, link = request.device, request.link
    print(f"{args.model}: device {device.name} ({device.mac_rate / 1e6:.0f} MMAC/s), uplink {link.uplink_bps / 1e6:g} "
          f"Mbit/s, rtt {link.rtt_s * 1e3:g} ms, budget {args.budget:g} points, head reuse {args.reuse}, "
          f"policy {args.policy}")
    print(f"{'':1} {'p':>3} {'kind':<8} {'weight bits':<26} {'act':>4} {'head B':>10} {'up B':>7} {'time ms':>9} "
          f"{'energy J':>9} {'cost':>9} {'objective':>10} {'drop':>5}")
    for c in plan.candidates:
        k = c.costs
        mark = "*" if c.chosen else ("x" if c.rejected else " ")
        drop = f"{c.accuracy_drop:5.2f}" if c.accuracy_drop is not None else "    -"
        print(f"{mark} {c.spec.partition_point:>3} {c.kind:<8} {str(list(c.spec.weight_bits)):<26} "
              f"{c.spec.activation_bits:>4} {int(c.work.head_bytes):>10,} {int(c.work.uplink_bytes):>7,} "
              f"{k.total_time_s * 1e3:>9.3f} {k.device_energy_j + k.tx_energy_j:>9.3g} {k.server_cost:>9.3g} "
              f"{k.objective:>10.4g} {drop}" + (f"  ({c.rejected})" if c.rejected else ""))
    chosen = plan.chosen
    print(f"chosen: p={chosen.spec.partition_point} {chosen.kind} weight bits {list(chosen.spec.weight_bits)} "
          f"activation {chosen.spec.activation_bits} bits, predicted {chosen.costs.total_time_s * 1e3:.3f} ms, "
          f"certified drop {chosen.accuracy_drop if chosen.accuracy_drop is not None else float('nan'):.2f} points")


def cmd_testbed(args) -> None:
    import json
    from qpart.server import testbed
    bed = testbed.Testbed()
    shape = lambda: testbed.LinkShape(args.rate, args.delay, args.jitter, args.loss)  # noqa: E731
    if args.action == "up":
        state = bed.up(shape())
        mode = "netem" if state["netem"] else "tbf for the rate; delay and serialization from `qpart testbed relay`"
        print(f"testbed up: {testbed.SERVER_NS} {testbed.SERVER_IP} <-> {testbed.DEVICE_NS} {testbed.DEVICE_IP} ({mode})")
        if not state["netem"]:
            print(f"start the relay in the server namespace: ip netns exec {testbed.SERVER_NS} qpart testbed relay "
                  f"--listen {testbed.SERVER_IP}:{testbed.RELAY_PORT} --to 127.0.0.1:50051; devices connect to "
                  f"{testbed.SERVER_IP}:{testbed.RELAY_PORT}")
    elif args.action == "shape":
        print(json.dumps(bed.shape(shape())["shape"]))
    elif args.action == "fade":
        bed.fade(args.bandwidth_mhz, args.snr_db, args.coherence_ms, args.duration, args.delay, args.seed)
    elif args.action == "status":
        print(json.dumps(bed.state(), indent=1))
    elif args.action == "down":
        bed.down()
        print("testbed down")
    elif args.action == "relay":
        from qpart.server import relay
        sys.setswitchinterval(0.0002)   # threads waiting to release a chunk get the interpreter promptly
        listen, to = args.listen.rsplit(":", 1), args.to.rsplit(":", 1)
        r = relay.Relay((listen[0], int(listen[1])), (to[0], int(to[1])), relay.ShapeSource(args.state))
        print(f"relay {args.listen} -> {args.to}, shape from {args.state}", flush=True)
        r.serve_forever()


def cmd_bench(args) -> None:
    from qpart.server import bench, benchreport
    config = bench.REDUCED if args.reduced else bench.BenchConfig()
    results = bench.run(config, args.models, args.data)
    command = "qpart bench" + (" --reduced" if args.reduced else "") + f" --models {args.models} --out {args.out}"
    for path in benchreport.write(results, args.out, command):
        print(f"wrote {path}")
    for objective, s in results["summary"].items():
        print(f"{objective} objective: no baseline significantly below QPART in {s['qpart_lowest']} of {s['cells']} "
              f"cells; strictly lowest in {s['strictly_lowest']}")
    print("median relative error: " + ", ".join(f"{p} {100 * e:.1f} %" for p, e in results["median_relative_error"].items()))
    if args.reduced and any(s["qpart_lowest"] < s["cells"] for s in results["summary"].values()):
        raise SystemExit("qpart bench --reduced: QPART lost to a baseline (see the report)")


def cmd_token(args) -> None:
    from qpart.server.auth import new_token
    token, digest = new_token()
    print(f"# give the device its token (qpart-device --token or $QPART_TOKEN): {token}")
    print("# and add this to the server's devices file (qpart-server --devices FILE):")
    print("[[device]]")
    print(f'id = "{args.device}"')
    print(f'token_sha256 = "{digest}"')
    print("models = [" + ", ".join(f'"{m}"' for m in args.allow) + "]")
    if args.certificate_cn:
        print(f'certificate_cn = "{args.certificate_cn}"')


def cmd_demo(args) -> None:
    from qpart.server import demo
    demo.run(args.models, args.model, args.count, args.data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qpart", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str, model_arg: str | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        p.add_argument("--models", type=pathlib.Path, default=DEFAULT_MODELS, help="model repository (default %(default)s)")
        p.add_argument("--data", help=f"directory of MNIST-format IDX files (default ${data.DATA_ENV} or {data.DEFAULT_DATA_DIR})")
        if model_arg == "one":
            p.add_argument("model", help="model name")
        return p

    p = command("train", cmd_train, "train zoo models into the repository")
    p.add_argument("model", nargs="+", help="zoo model(s): fc6, lenet, vgg8")
    p.add_argument("--epochs", type=int, help="passes over the training split (default: the zoo's)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, help="Adam learning rate (default: the zoo's)")
    p.add_argument("--validation-size", type=int, default=10000, help="training images held out for calibration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-limit", type=int, default=0, help="train on only this many images (0: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    command("models", cmd_models, "list the repository's models")
    command("profile", cmd_profile, "per-layer MACs, weights and activation sizes", "one")
    p = command("calibrate", cmd_calibrate, "fit and print the accuracy model (validation split only)", "one")
    p.add_argument("--samples", type=int, default=1000, help="validation images to use (default %(default)s)")
    p.add_argument("--granularity", choices=["channel", "tensor"], default="channel", help="weight scale sharing")
    p = command("catalog", cmd_catalog, "build the offline catalog of certified quantization patterns")
    p.add_argument("model", nargs="+", help="model name(s)")
    p.add_argument("--force", action="store_true", help="rebuild even when the catalog is current")
    p.add_argument("--search-samples", type=int, default=2000, help="validation images that guide the search")
    p.add_argument("--certification-samples", type=int, default=5000, help="validation images that certify")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = command("plan", cmd_plan, "price every candidate for a device and link and mark the choice", "one")
    from qpart.common import cli
    cli.add_device_options(p)
    cli.add_link_options(p)
    cli.add_plan_options(p)
    p = sub.add_parser("testbed", help="two network namespaces on a shaped veth (needs root)",
                       description=__import__("qpart.server.testbed", fromlist=["x"]).__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=cmd_testbed)
    p.add_argument("action", choices=["up", "down", "shape", "fade", "status", "relay"])
    p.add_argument("--rate", type=float, default=0.0, help="Mbit/s each direction (0: unshaped)")
    p.add_argument("--delay", type=float, default=0.0, help="one-way delay each direction, ms")
    p.add_argument("--jitter", type=float, default=0.0, help="delay jitter, ms")
    p.add_argument("--loss", type=float, default=0.0, help="loss, percent (netem only)")
    p.add_argument("--bandwidth-mhz", type=float, default=1.0, help="fade: channel bandwidth B, MHz")
    p.add_argument("--snr-db", type=float, default=10.0, help="fade: mean SNR, dB")
    p.add_argument("--coherence-ms", type=float, default=200.0, help="fade: time between new fading draws, ms")
    p.add_argument("--duration", type=float, default=60.0, help="fade: seconds to keep fading")
    p.add_argument("--seed", type=int, default=0, help="fade: random seed")
    p.add_argument("--listen", default=f"10.77.0.1:50052", help="relay: address to listen on")
    p.add_argument("--to", default="127.0.0.1:50051", help="relay: the server's address")
    p.add_argument("--state", type=pathlib.Path, default=pathlib.Path("/run/qpart-testbed/state.json"),
                   help="relay: the testbed state file to read the shape from")
    p = command("bench", cmd_bench, "the five policies end to end over the shaped testbed link (needs root)")
    p.add_argument("--reduced", action="store_true", help="the small grid CI runs; fails if QPART loses a cell")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/benchmarks"), help="where the reports go")
    p = sub.add_parser("token", help="make a device token and its devices-file entry",
                       description="Print a new random bearer token and the [[device]] entry for qpart-server --devices.")
    p.set_defaults(func=cmd_token)
    p.add_argument("device", help="device id (shows in logs and metrics)")
    p.add_argument("--allow", nargs="+", default=["*"], help="models the device may use (default: all)")
    p.add_argument("--certificate-cn", help="with mutual TLS: the common name its client certificate must carry")
    p = command("demo", cmd_demo, "server and device as separate processes on 1,000 test images")
    p.add_argument("--model", default="fc6", help="model (trained if absent; default %(default)s)")
    p.add_argument("--count", type=int, default=1000, help="test images (default %(default)s)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except QpartError as e:
        print(f"qpart {args.command}: {e.status}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
