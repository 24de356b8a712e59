"""`qpart calibrate | catalog | plan`: the accuracy model, the offline catalog, and plans priced offline."""
import dataclasses

from qpart.cli.common import command
from qpart.common import options, policies, quant, table, tensors
from qpart.common.errors import InvalidArgument
from qpart.common.table import BITS_WIDTH, Column


def cmd_calibrate(args) -> None:
    from qpart.server.calibration import build, noise
    from qpart.server.calibration.accuracy import Evaluator
    from qpart.server.models import datasets
    from qpart.server.models.repository import ModelRepository
    model = ModelRepository(args.models).get(args.model)
    x, y = datasets.model_split(model, "validation", args.data, limit=args.samples)
    cuts = [c for c in build.catalog_cuts(model) if model.profile.cut(c).runs_tail]
    am = noise.calibrate(Evaluator(model, x, y), cuts, args.granularity)
    bits = noise.SWEEP_BITS
    print(f"{model.name}: accuracy model on {am.samples} validation images ({am.granularity} weight scales)")
    print(f"alpha = {am.alpha:.3f} per bit (ln 4 = 1.386 for uniform noise), fitted on bits {noise.FIT_BITS}")
    print("W: a node's weights alone quantized; A c: a tensor alone quantized where it crosses cut c")
    print(f"{'what':<34} {'elements':>9} {'q (0 bits)':>11} {'t':>6}  E||r||^2 at bits {bits}   drop (points)")
    for prof in list(am.weights.values()) + list(am.activations.values()):
        name = f"W {prof.name}" if prof.kind == "weight" else f"A {prof.cut} {prof.name}"
        energy = " ".join(f"{prof.energy[b]:.2e}" for b in bits)
        drops = " ".join(f"{prof.drop[b]:5.2f}" for b in bits)
        print(f"{table.fit(name, 34):<34} {prof.elements:>9,} {prof.q:>11.3g} {prof.t:>6.2f}  {energy}  {drops}")
    print("additivity (all weights quantized at once vs the sum of single layers):")
    for a in am.additivity:
        print(f"  {a['bits']} bits: E||r||^2 all {a['energy_all']:.3g} vs sum {a['energy_sum']:.3g} "
              f"(ratio {a['energy_all'] / a['energy_sum']:.2f}); measured drop {a['drop_all']:.2f}, "
              f"predicted {a['predicted_drop']:.2f} points")
    print("noise budget C(a) for accuracy budgets a: " +
          ", ".join(f"C({a:g})={am.noise_budget(a):.3g}" for a in (0.1, 0.25, 0.5, 1, 2)))


def cmd_catalog(args) -> None:
    from qpart.server.calibration import build
    from qpart.server.models.repository import ModelRepository
    from qpart.server.planning import catalog
    repo = ModelRepository(args.models)
    for name in args.model:
        model = repo.get(name)
        upgraded = 0 if args.force else catalog.upgrade(model)
        if upgraded:
            print(f"{name}: upgraded the format-{upgraded} catalog to format {catalog.CATALOG_VERSION} "
                  "(its heads rebuilt; splits and certification kept)")
        built = None if args.force else catalog.current(model)
        if built is None:
            config = build.CatalogConfig(search_samples=args.search_samples,
                                         certification_samples=args.certification_samples)
            if args.ray:
                from qpart.server.calibration import distributed
                built = distributed.build_on_ray(model, args.data, config, args.ray, progress=not args.no_progress)
            else:
                built = build.build(model, args.data, config, progress=not args.no_progress)
            catalog.save(model, built)
            print(f"{name}: built in {built.build_seconds} s, {built.evaluations} evaluations -> {model.catalog_path}")
        else:
            print(f"{name}: the catalog is current for version {model.version} (--force rebuilds it)")
        print_catalog(model, built)
        if model.profile.sequence is not None:
            print(f"{name}: a language model: no coding.json or codecs.json (its hidden states travel raw, its input "
                  "is token ids, not an image)")
            measure_drafts(model, repo, args.force)
        elif args.coding:
            measure_coding(model, built, args.data)
            measure_codecs(model, built, args.data)


def measure_drafts(model, repo, force: bool = False) -> None:
    """drafts.json: each draft's acceptance by the target on validation text, measured unless current."""
    from qpart.server.calibration import drafts as measuring
    from qpart.server.planning import drafting
    found = measuring.ensure(model, repo, force)
    if found is None:
        print(f"drafts: none (no smaller language model with {model.name}'s tokenizer in this repository)")
        return
    print(f"drafts: acceptance on {found.positions} validation positions in {found.seconds} s -> "
          f"{drafting.path(model)}: {measuring.describe(found)}")


def measure_coding(model, built, data=None) -> None:
    """coding.json: the zlib-coded size of each QPART split's message, measured unless current for every split."""
    from qpart.server.calibration import activation_coding as measuring
    from qpart.server.planning import activation_coding
    found = measuring.ensure(model, built, data)
    smaller = [(raw, coded) for raw, coded in found.sizes.values() if coded < raw]
    share = f"{100 * sum(c for _, c in smaller) / sum(r for r, _ in smaller):.0f}%" if smaller else "-"
    print(f"coding: {len(found.sizes)} split(s) measured on {found.images} validation images in {found.seconds} s "
          f"-> {activation_coding.path(model)}; zlib shrinks {len(smaller)} of them (to {share} of their raw bytes): the planner "
          "also offers those coded")


def measure_codecs(model, built, data=None) -> None:
    """codecs.json: the input as PNG, JPEG and WebP files, bytes and certified drop, measured unless current."""
    from qpart.server.calibration import image_files as measuring
    from qpart.server.planning import image_files
    found = measuring.ensure(model, built, data)
    if found is None:
        print("codecs: none (the input is not a 1- or 3-channel image, or Pillow is missing)")
        return
    print(f"codecs: {len(found.settings)} image setting(s) certified on {found.samples} validation images "
          f"({found.confidence:.2%} each) in {found.seconds} s -> {image_files.path(model)}: {measuring.describe(found)}")


def print_catalog(model, built) -> None:
    print(f"cuts {built.cuts} of {model.num_nodes} nodes; bits: the device's weight nodes, then the crossing tensors")
    rows = []
    for e in built.entries:
        s = e.split
        float32 = 4 * model.profile.cut(s.cut).device_parameters
        rows.append([str(s.cut), e.kind, f"{e.budget:g}" if e.budget is not None else "-", table.bits(s.weight_bits),
                     table.bits(s.activation_bits), f"{e.certified_drop:.2f}", f"{e.head_bytes:,}",
                     f"{100 * e.head_bytes / float32:.1f}" if float32 else "-"])
    columns = [Column("cut", ">"), Column("kind"), Column("budget", ">"), Column("weight bits", max_width=BITS_WIDTH),
               Column("act bits", max_width=BITS_WIDTH), Column("certified", ">"), Column("head bytes", ">"),
               Column("% float32", ">")]
    for line in table.render(columns, rows):
        print(line)
    print(f"certification: {built.certification}")


def cmd_plan(args) -> None:
    from qpart.server.models.heads import HeadStore
    from qpart.server.models.repository import ModelRepository
    from qpart.server.planning.planner import PlanRequest
    from qpart.server.planning.served import ServedModels
    policy, fixed = fixed_plan(args)
    models = ServedModels(ModelRepository(args.models))
    if args.measure_server:
        from qpart.server.serving import speed
        model = models.repository.get(args.model)

        def cuts_of(m):
            catalog = models.get(m.name).catalog
            return list(catalog.cuts) if catalog else []
        profile = speed.measure([model], cuts_of)
        models.set_speed(*speed.priced_with(profile, [model], cuts_of, models.server.mac_rate), profile)
        from qpart.server.serving.speed_profile import describe
        tails = ", ".join(f"cut {c}: {t.describe()}" for c, t in sorted(profile.tails_for(model).items()))
        print(f"server speed: {describe(profile)}; tails {tails or 'none timed'}")
    from qpart.server.planning.generation import Shape
    device = dataclasses.replace(options.device_from_args(args), max_draft_tokens=args.draft_tokens)
    request = PlanRequest(args.model, device, options.link_from_args(args), args.budget,
                          options.objective_from_args(args), args.reuse or 1, policy=policy, fixed=fixed, explain=True,
                          generation=Shape(temperature=args.temperature) if args.temperature else None)
    plan = models.plan(request, heads=HeadStore())
    device, link = request.device, request.link
    print(f"{args.model}: device {device.name} ({device.mac_rate / 1e6:.0f} MMAC/s), uplink {link.uplink_bps / 1e6:g} "
          f"Mbit/s, rtt {link.rtt_s * 1e3:g} ms, budget {args.budget:g} points, head reuse {args.reuse or 1}, "
          f"policy {policy}")
    print("legend: * chosen, x not eligible; cut: nodes on the device; bits of the device's weight nodes and of the "
          "crossing tensors (+z: sent zlib-coded; codec: the input as an image file); bytes per inference; objective = weighted time s + energy J + cost")
    for line in candidate_table(plan.candidates):
        print(line)
    print(f"why: {plan.reason}")
    if args.measure_server:
        print("server part: timed here as qpart-server times it at start-up (the tail from each cut after 10 ms idle, "
              "the activation codec): on the server's machine this gives the live server's answer")
    else:
        print(f"server part: priced at the server profile's {models.server.mac_rate / 1e9:g} GMAC/s; a live qpart-server "
              "times its own tail and codec at start-up, so its answer can differ (--measure-server times them here)")
    chosen, s = plan.chosen, plan.chosen.spec.split
    drop = f"certified drop {chosen.accuracy_drop:.2f} points" if chosen.accuracy_drop is not None else "drop not measured"
    print(f"chosen: cut {s.cut} of {models.repository.get(args.model).num_nodes} nodes, "
          f"{chosen.kind}, weight bits {list(s.weight_bits)}, activation bits {list(s.activation_bits)}"
          f"{' sent ' + tensors.coding_label(chosen.coding, chosen.quality) if chosen.coding else ''}, predicted "
          f"{chosen.costs.total_time_s * 1e3:.3f} ms, {drop}")


def candidate_table(candidates) -> list[str]:
    """The explain table (qpart.common.table: the columns qpart-device --explain prints too)."""
    rows = [table.candidate_row(chosen=c.chosen, rejected=c.rejected, cut=c.spec.split.cut, coding=c.coding,
                                kind=f"draft {c.draft.option.draft.name} k={c.draft.k}" if c.draft else c.kind,
                                quality=c.quality,
                                weight_bits=c.draft.option.split.weight_bits[:1] if c.draft else c.spec.split.weight_bits,
                                activation_bits=c.spec.split.activation_bits, head_bytes=c.work.head_bytes,
                                uplink_bytes=c.work.uplink_bytes, total_time_s=c.costs.total_time_s,
                                energy_j=c.costs.device_energy_j + c.costs.tx_energy_j, server_cost=c.costs.server_cost,
                                objective=c.costs.objective, drop=c.accuracy_drop) for c in candidates]
    return table.candidate_table(rows, [c.rejected for c in candidates])


def fixed_plan(args):
    """(policy, the fixed Split or None): --cut gives a fixed plan and implies --policy fixed, as for qpart-device."""
    from qpart.server.models.split import Split
    if args.cut is None:
        if args.policy == policies.FIXED:
            raise InvalidArgument("--policy fixed prices the split you give: add --cut C (and --weight-bits, "
                                  "--activation-bits; `qpart profile MODEL` lists the cuts)")
        return args.policy, None
    return policies.FIXED, Split(args.cut, tuple(args.weight_bits), tuple(args.activation_bits),
                                 quant.PER_CHANNEL if args.per_channel else quant.PER_TENSOR)


def register(sub) -> None:
    p = command(sub, "calibrate", cmd_calibrate, "fit and print the accuracy model (validation split only)", "one")
    p.add_argument("--samples", type=int, default=1000, help="validation images to use (default %(default)s)")
    p.add_argument("--granularity", choices=["channel", "tensor"], default="channel", help="weight scale sharing")
    p = command(sub, "catalog", cmd_catalog, "build the offline catalog of certified quantization splits")
    p.add_argument("model", nargs="+", help="model name(s)")
    p.add_argument("--force", action="store_true", help="rebuild even when the catalog is current")
    p.add_argument("--search-samples", type=int, default=2000, help="validation images that guide the search")
    p.add_argument("--certification-samples", type=int, default=5000, help="validation images that certify")
    p.add_argument("--ray", metavar="ADDRESS", help="fan the build out as Ray tasks on this cluster (auto: the one "
                   "this machine runs or RAY_ADDRESS names); an interrupted build resumes from its finished units "
                   "(kept beside the model); needs the ray extra")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-coding", dest="coding", action="store_false",
                   help="do not measure the zlib-coded message sizes (coding.json) nor certify the input as image "
                        "files (codecs.json); without them the planner sends raw only")
    p = command(sub, "plan", cmd_plan, "price every candidate for a device and link and mark the choice", "one")
    options.add_device_options(p)
    options.add_link_options(p)
    options.add_plan_options(p)
    options.add_fixed_options(p)
    p.add_argument("--draft-tokens", type=int, default=0, help="a language model: the most tokens the device drafts "
                   "per round (0: it does not draft; above 0 drafting with each measured draft is weighed)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="a language model: the sampling temperature its generations use (0: greedy)")
    p.add_argument("--measure-server", action="store_true", help="time the tail and the codec on this machine, as "
                   "qpart-server does at start-up, instead of the server profile's MAC rate")
