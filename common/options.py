"""Command-line options both the device agent and the operator's tool take: device, link, plan."""
import argparse
import dataclasses

from qpart.common import policies, profiles, quant
from qpart.common.costmodel import DeviceProfile, LinkProfile, Objective
from qpart.common.errors import InvalidArgument


def add_device_options(parser: argparse.ArgumentParser, default_profile: str = "paper-table2") -> None:
    g = parser.add_argument_group("device")
    g.add_argument("--profile", "--device", dest="profile", default=default_profile,
                   help=f"device profile: a TOML file or one of {', '.join(profiles.bundled())} (default %(default)s)")
    g.add_argument("--macs-per-second", type=float, default=0.0, help="measured device MAC rate (overrides the profile)")
    g.add_argument("--memory-mb", type=float, help="memory for the head and activations, MiB (overrides the profile)")


def device_from_args(args) -> DeviceProfile:
    device = profiles.load_device(args.profile)
    if args.macs_per_second:
        device = dataclasses.replace(device, macs_per_second=args.macs_per_second)
    if args.memory_mb is not None:
        device = dataclasses.replace(device, memory_bytes=int(args.memory_mb * 2**20))
    return device


def add_link_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("link")
    g.add_argument("--rate-mbps", type=float, default=200.0, help="uplink rate, Mbit/s (default %(default)s, Table II)")
    g.add_argument("--downlink-mbps", type=float, default=0.0, help="downlink rate, Mbit/s (0: as the uplink)")
    g.add_argument("--bandwidth-mhz", type=float, default=0.0,
                   help="channel bandwidth, MHz (with --snr-db, instead of a rate; eq 13)")
    g.add_argument("--snr-db", type=float, default=0.0, help="mean SNR, dB (eq 12)")
    g.add_argument("--rayleigh", action="store_true", help="expected rate under Rayleigh fading (eq 11)")
    g.add_argument("--rtt-ms", type=float, default=0.0, help="round-trip time, ms")


def link_from_args(args) -> LinkProfile:
    return LinkProfile(rate_bps=args.rate_mbps * 1e6 if not args.bandwidth_mhz else 0.0,
                       downlink_rate_bps=args.downlink_mbps * 1e6, bandwidth_hz=args.bandwidth_mhz * 1e6,
                       snr_db=args.snr_db, rayleigh_fading=args.rayleigh, rtt_s=args.rtt_ms / 1e3)


def add_plan_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("plan")
    g.add_argument("--budget", type=float, default=1.0, help="largest accepted accuracy drop, points: top-1 (a language "
                   "model: next-token agreement with its float model) (default %(default)s)")
    g.add_argument("--w-time", type=float, default=1.0, help="objective weight on seconds (ω_T)")
    g.add_argument("--w-energy", type=float, default=1.0, help="objective weight on joules (ω_E)")
    g.add_argument("--w-cost", type=float, default=1.0, help="objective weight on server cost (ω_C)")
    g.add_argument("--reuse", type=int, help="inferences that will reuse the head (qpart plan: 1; qpart-device: --count)")
    g.add_argument("--policy", default=policies.QPART, choices=policies.NAMES,
                   help="how the plan is chosen (default %(default)s): " + "; ".join(
                       f"{name}: {what}" for name, (_, what) in policies.POLICIES.items()))


def objective_from_args(args) -> Objective:
    return Objective(args.w_time, args.w_energy, args.w_cost)


def bit_widths(text: str) -> list[int]:
    """argparse type: one bit width or a comma-separated list, each 1..16 or 32."""
    try:
        return [quant.check_bits(int(b), "bit width") for b in text.split(",")]
    except (ValueError, InvalidArgument) as e:
        raise argparse.ArgumentTypeError(f"{text!r}: give bit widths 1..16 or 32, one or comma-separated ({e})") from None


def add_fixed_options(parser) -> None:
    """--cut, --weight-bits, --activation-bits, --per-channel: a fixed plan (qpart-device and qpart plan)."""
    g = parser.add_argument_group("fixed plan")
    g.add_argument("--cut", type=int, help="fixed plan: run nodes[0:CUT] on the device (implies --policy fixed; "
                                           "`qpart profile MODEL` lists the cuts)")
    g.add_argument("--weight-bits", type=bit_widths, default=[8],
                   help="fixed plan: bits per device-side weight node, one value for all or comma-separated")
    g.add_argument("--activation-bits", type=bit_widths, default=[8],
                   help="fixed plan: bits per tensor crossing the cut, one value for all or comma-separated")
    g.add_argument("--per-channel", action="store_true", help="fixed plan: per-output-channel weight scales")
