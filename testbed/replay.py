"""Replay load: many device sessions sending pre-encoded Infer messages, so that the load generator's own
cost per answer is its gRPC client's alone (no head, no quantization per input).

    python -m qpart.testbed.replay --target HOST:PORT --messages FILE.npz --sessions 64 --mode device
                                   --start-at T0 --until T1 [--echo]

FILE.npz (written by `record`, read without pickle): `tensors` the serialized ActivationBatch.tensors part
of each recorded input (uint8, concatenated; `offsets` where each starts), `labels` the top-1 qpart's
whole path gave each, and `plan_id`. Every message is built from those bytes with a fresh request id:
the ActivationBatch's field 1 (the id, packed) put before the recorded tensors, wrapped as
InferRequest.batch; the first message of a stream carries the plan id. Sessions are asyncio tasks on
grpc.aio, each on a connection of its own; a session sends a message, waits for its answer, sends the
next (a device's ping-pong). --mode device: one stream per session for the whole run; --mode request:
a stream per message. --echo: the target is qpart.testbed.echo (answers are not parsed).

Prints one JSON object: answers in the timed period [T0, T1) (CLOCK_MONOTONIC, as time.monotonic()),
their latency p50/p99, errors by status, lost (sent, never answered, not refused), doubled (an id answered
twice), wrong (an answer whose request id or top-1 is not the input's), and this process's CPU seconds in
the period.
"""
import argparse
import asyncio
import collections
import json
import sys
import time

import grpc
import numpy as np

from qpart.testbed.echo import PATH as ECHO_PATH

INFER_PATH = "/qpart.v1.SplitInference/Infer"


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def message(request_id: int, tensors: bytes, plan_id: bytes = b"") -> bytes:
    """InferRequest{plan_id, batch: ActivationBatch{request_ids: [request_id], tensors}} on the wire."""
    ids = varint(request_id)
    batch = b"\x0a" + varint(len(ids)) + ids + tensors
    head = b"\x0a" + varint(len(plan_id)) + plan_id if plan_id else b""
    return head + b"\x12" + varint(len(batch)) + batch


def record(path, plan_id: str, encoded: list[list], labels: list[int]) -> None:
    """Write the replay file: `encoded` each input's TensorBatch list (DeviceAgent.encode), `labels` its
    top-1 as answered through qpart."""
    from qpart.v1 import service_pb2 as spb
    parts = [spb.ActivationBatch(tensors=t).SerializeToString() for t in encoded]
    offsets = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
    np.savez(path, tensors=np.frombuffer(b"".join(parts), np.uint8), offsets=offsets,
             labels=np.asarray(labels, np.int64), plan_id=np.frombuffer(plan_id.encode(), np.uint8))


def load(path) -> tuple[list[bytes], np.ndarray, bytes]:
    with np.load(path, allow_pickle=False) as f:
        data, offsets = f["tensors"].tobytes(), f["offsets"]
        return ([data[a:b] for a, b in zip(offsets[:-1], offsets[1:])], f["labels"].copy(),
                f["plan_id"].tobytes())


class Tally:
    def __init__(self, start_at: float, until: float):
        self.start_at, self.until = start_at, until
        self.latency: list[float] = []
        self.errors: collections.Counter = collections.Counter()
        self.lost = self.doubled = self.wrong = 0

    def answered(self, sent_at: float, now: float) -> None:
        if self.start_at <= sent_at and now < self.until:
            self.latency.append(now - sent_at)


def check(reply: bytes, request_id: int, label: int, seen: set, tally: Tally, parse) -> None:
    if parse is None:
        return
    response = parse(reply)
    for r in response.results:
        if r.request_id in seen:
            tally.doubled += 1
        seen.add(r.request_id)
    if [r.request_id for r in response.results] != [request_id] or response.results[0].label != label:
        tally.wrong += 1


async def session(index: int, args, inputs, labels, plan_id: bytes, tally: Tally, parse) -> None:
    channel = grpc.aio.insecure_channel(args.target, options=[("grpc.use_local_subchannel_pool", 1)])
    call_of = channel.stream_stream(args.path)
    seen: set[int] = set()
    request_id = index << 32
    k = (index * 7919) % len(inputs)
    try:
        await channel.channel_ready()
        await asyncio.sleep(max(args.start_at - 1.0 - time.monotonic(), 0) * (index / max(args.sessions, 1)))
        call = None
        while time.monotonic() < args.until:
            k = (k + 1) % len(inputs)
            request_id += 1
            first = call is None
            if first:
                call = call_of()
            data = message(request_id, inputs[k], plan_id if first else b"")
            sent_at = time.monotonic()
            try:
                await call.write(data)
                if args.mode == "request":
                    await call.done_writing()
                reply = await call.read()
            except grpc.aio.AioRpcError as e:
                tally.errors[e.code().name] += 1
                call = None
                continue
            if reply is grpc.aio.EOF:
                tally.lost += 1
                call = None
                continue
            now = time.monotonic()
            tally.answered(sent_at, now)
            check(reply, request_id, int(labels[k]), seen, tally, parse)
            if args.mode == "request":
                await call.code()                    # the stream's end (its status)
                call = None
        if call is not None:
            await call.done_writing()
            await call.code()
    except grpc.aio.AioRpcError as e:
        tally.errors[e.code().name] += 1
    finally:
        await channel.close()


async def run(args) -> dict:
    inputs, labels, plan_id = load(args.messages)
    parse = None
    if not args.echo:
        from qpart.v1 import service_pb2 as spb
        parse = spb.InferResponse.FromString
    tally = Tally(args.start_at, args.until)
    tasks = [asyncio.create_task(session(i, args, inputs, labels, plan_id, tally, parse))
             for i in range(args.sessions)]
    await asyncio.sleep(max(args.start_at - time.monotonic(), 0))
    cpu = time.process_time()
    await asyncio.sleep(max(args.until - time.monotonic(), 0))
    cpu = time.process_time() - cpu
    await asyncio.gather(*tasks)
    latency = sorted(tally.latency)
    pick = (lambda q: 1e3 * latency[min(int(q * len(latency)), len(latency) - 1)]) if latency else (lambda q: None)
    return {"sessions": args.sessions, "mode": args.mode, "answered": len(latency),
            "seconds": args.until - args.start_at, "p50_ms": pick(0.5), "p99_ms": pick(0.99),
            "errors": dict(tally.errors), "lost": tally.lost, "doubled": tally.doubled, "wrong": tally.wrong,
            "cpu_s": cpu}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qpart.testbed.replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--messages", required=True, help="the replay file (record)")
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--mode", choices=("device", "request"), default="device",
                        help="device: one stream per session; request: a stream per message")
    parser.add_argument("--start-at", type=float, required=True, help="time.monotonic() the timed period starts")
    parser.add_argument("--until", type=float, required=True, help="time.monotonic() it ends")
    parser.add_argument("--echo", action="store_true", help="the target is qpart.testbed.echo")
    args = parser.parse_args(argv)
    args.path = ECHO_PATH if args.echo else INFER_PATH
    json.dump(asyncio.run(run(args)), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
