"""Conversions between the cost-model dataclasses and their protobuf messages (both peers use them)."""
from qpart.common import lossless, images
from qpart.common.costmodel import DeviceProfile, LinkProfile, Objective
from qpart.common.errors import InvalidArgument
from qpart.common.preprocess import Preprocessing
from qpart.v1 import service_pb2 as spb


MAX_IMAGE_CODINGS = 8


def device_to_pb(device: DeviceProfile) -> spb.DeviceCapabilities:
    return spb.DeviceCapabilities(
        name=device.name, clock_hz=device.clock_hz, cycles_per_mac=device.cycles_per_mac,
        macs_per_second=device.macs_per_second, energy_coefficient=device.energy_coefficient,
        tx_power_w=device.tx_power_w, memory_bytes=device.memory_bytes,
        image_codings=sorted(images.available() if device.image_codings is None else device.image_codings),
        head_codings=sorted(device.head_codings or ()), seconds_per_node=device.seconds_per_node,
        max_draft_tokens=device.max_draft_tokens)


def device_from_pb(msg: spb.DeviceCapabilities) -> DeviceProfile:
    codings = list(msg.image_codings)
    if len(codings) > MAX_IMAGE_CODINGS or not set(codings) <= set(images.FORMATS):
        raise InvalidArgument(f"image_codings must list at most {MAX_IMAGE_CODINGS} of {sorted(images.FORMATS)} "
                              f"(CODING_PNG, CODING_JPEG, CODING_WEBP), got {codings[:MAX_IMAGE_CODINGS + 1]}")
    if len(msg.head_codings) > MAX_IMAGE_CODINGS:
        raise InvalidArgument(f"head_codings must list at most {MAX_IMAGE_CODINGS} values, got {len(msg.head_codings)}")
    heads = lossless.allowed(msg.head_codings) if len(msg.head_codings) else None
    return DeviceProfile(
        name=msg.name or "device", clock_hz=msg.clock_hz, cycles_per_mac=msg.cycles_per_mac,
        macs_per_second=msg.macs_per_second, energy_coefficient=msg.energy_coefficient,
        tx_power_w=msg.tx_power_w, memory_bytes=msg.memory_bytes, image_codings=frozenset(codings),
        head_codings=heads, seconds_per_node=msg.seconds_per_node, max_draft_tokens=msg.max_draft_tokens)


def link_to_pb(link: LinkProfile) -> spb.LinkCapabilities:
    return spb.LinkCapabilities(
        rate_bps=link.rate_bps, downlink_rate_bps=link.downlink_rate_bps, bandwidth_hz=link.bandwidth_hz,
        snr_db=link.snr_db, rayleigh_fading=link.rayleigh_fading, rtt_s=link.rtt_s)


def link_from_pb(msg: spb.LinkCapabilities) -> LinkProfile:
    return LinkProfile(
        rate_bps=msg.rate_bps, downlink_rate_bps=msg.downlink_rate_bps, bandwidth_hz=msg.bandwidth_hz,
        snr_db=msg.snr_db, rayleigh_fading=msg.rayleigh_fading, rtt_s=msg.rtt_s)


def objective_to_pb(objective: Objective) -> spb.ObjectiveWeights:
    return spb.ObjectiveWeights(time=objective.time, energy=objective.energy, cost=objective.cost)


def objective_from_pb(msg: spb.ObjectiveWeights) -> Objective:
    defaults = Objective()
    return Objective(
        time=msg.time if msg.HasField("time") else defaults.time,
        energy=msg.energy if msg.HasField("energy") else defaults.energy,
        cost=msg.cost if msg.HasField("cost") else defaults.cost)


def preprocessing_to_pb(p: Preprocessing) -> spb.Preprocessing:
    return spb.Preprocessing(channels=p.channels, resize_h=p.resize[0], resize_w=p.resize[1], crop_h=p.crop[0],
                             crop_w=p.crop[1], scale=p.scale, mean=p.mean, std=p.std)


def preprocessing_from_pb(msg: spb.Preprocessing) -> Preprocessing:
    return Preprocessing(channels=msg.channels, resize=(msg.resize_h, msg.resize_w), crop=(msg.crop_h, msg.crop_w),
                         scale=msg.scale, mean=tuple(msg.mean), std=tuple(msg.std))
