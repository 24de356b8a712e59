"""Generate's refusals over real gRPC: each bad run gets its status before anything is held (no session opened, no
cache reserved), and another client generates meanwhile."""
import time

import grpc
import numpy as np
import pytest

from qpart.common import tokenizer
from qpart.device.client import ServerClient
from qpart.server.serving.auth import token_digest
from qpart.server.serving.main import RunningServer
from qpart.server.serving.settings import ServerSettings
from qpart.v1 import service_pb2 as spb
from qpart.v1 import service_pb2_grpc
from tests.server.serving.test_generation import MODEL, generation

TOKENS = {"pi-a": "token-a-" + "a" * 24, "pi-b": "token-b-" + "b" * 24}
CUT = 15                        # after the first block: [T, 32] hidden states cross, one attention node in the tail
PER_POSITION = 2 * 4 * 32       # the tail's cache per position: keys and values of one node, float32


@pytest.fixture(scope="module")
def limited(lm_models, tmp_path_factory):
    devices = tmp_path_factory.mktemp("devices") / "devices.toml"
    devices.write_text("".join(f'[[device]]\nid = "{name}"\ntoken_sha256 = "{token_digest(token)}"\nmodels = ["*"]\n\n'
                               for name, token in TOKENS.items()))
    running = RunningServer(ServerSettings(
        models=lm_models, port=0, measure_speed=False, warm_heads=False, devices=devices, generation_sessions=3,
        generation_sessions_per_client=2, session_cache_bytes=PER_POSITION * 100,
        generation_cache_bytes=PER_POSITION * 150, generation_positions=200))
    yield running
    running.stop(0, notice=0)


@pytest.fixture(scope="module")
def plans(limited):
    with ServerClient(f"127.0.0.1:{limited.port}", token=TOKENS["pi-a"]) as client:
        return {cut: generation(client, cut, activation_bits=32 if cut == 0 else 16) for cut in (0, CUT)}


def hidden(length: int, width: int = 32, bits: int = 16, name: str = "transformer.h.0.residual_2") -> spb.TensorBatch:
    return spb.TensorBatch(name=name, sample_shape=[length, width], bits=bits, data=bytes(length * width * bits // 8))


def ids(values) -> spb.TensorBatch:
    return spb.TensorBatch(name="tokens", sample_shape=[len(values)], bits=32, data=np.asarray(values, "<f4").tobytes())


def call(server, device: str, *requests: spb.GenerateRequest) -> list[spb.GenerateResponse]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = service_pb2_grpc.SplitInferenceStub(channel)
        return list(stub.Generate(iter(requests), timeout=30,
                                  metadata=(("authorization", f"Bearer {TOKENS[device]}"),)))


def refused(server, device: str, *requests) -> grpc.RpcError:
    generations = server.core.generation
    before = generations.open_sessions, generations.reserved_bytes
    with pytest.raises(grpc.RpcError) as e:
        call(server, device, *requests)
    assert (generations.open_sessions, generations.reserved_bytes) <= before          # nothing held for it
    assert len(e.value.details()) <= 400
    others_still_served(server)
    return e.value


def others_still_served(server):
    with ServerClient(f"127.0.0.1:{server.port}", token=TOKENS["pi-b"]) as client:
        out = generation(client, CUT).generate(tokenizer.ByteTokenizer().encode("Hello"), 3)
    assert len(out.tokens) == 3


def status(error: grpc.RpcError) -> str:
    return error.code().name


def test_each_malformed_run_is_refused_with_its_status(limited, plans):
    plan = plans[CUT].plan.plan_id
    first = dict(plan_id=plan, position=0)
    cases = {
        "INVALID_ARGUMENT": [spb.GenerateRequest(**first, tensors=[hidden(4, width=31)]),        # wrong shape
                             spb.GenerateRequest(**first, tensors=[hidden(4, bits=8)]),          # wrong width
                             spb.GenerateRequest(**first, tensors=[hidden(4, name="x")]),        # wrong tensor
                             spb.GenerateRequest(**first, tensors=[hidden(4)], max_new_tokens=5),   # head must run
                             spb.GenerateRequest(**first, tensors=[spb.TensorBatch(
                                 name="transformer.h.0.residual_2", sample_shape=[4, 32], bits=16, data=b"\0" * 10)]),
                             spb.GenerateRequest(session_id="not-a-session", position=0, tensors=[hidden(1)]),
                             spb.GenerateRequest(plan_id=plans[0].plan.plan_id, tensors=[ids([72, 300])]),  # vocabulary
                             spb.GenerateRequest(plan_id=plans[0].plan.plan_id, tensors=[ids([72, 1.5])]),
                             spb.GenerateRequest(**first, tensors=[hidden(2)],
                                                 sampling=spb.Sampling(temperature=float("nan")))],
        "OUT_OF_RANGE": [spb.GenerateRequest(**first, tensors=[hidden(201)])],                  # past the context
        "NOT_FOUND": [spb.GenerateRequest(session_id="0" * 32, position=0, tensors=[hidden(1)])],
        "FAILED_PRECONDITION": [spb.GenerateRequest(**{**first, "position": 3}, tensors=[hidden(1)])],
        "RESOURCE_EXHAUSTED": [spb.GenerateRequest(**first, tensors=[hidden(101)])],            # session's cache
    }
    for code, requests in cases.items():
        for request in requests:
            assert status(refused(limited, "pi-a", request)) == code, request


def test_a_session_is_its_clients_and_answers_each_position_once(limited, plans):
    plan = plans[CUT].plan.plan_id
    opened = call(limited, "pi-a", spb.GenerateRequest(plan_id=plan, tensors=[hidden(5)]))
    session = opened[0].session_id
    assert opened[0].position == 5 and opened[0].last and opened[0].cache_bytes == 5 * PER_POSITION
    assert limited.core.generation.reserved_bytes == 5 * PER_POSITION
    error = refused(limited, "pi-b", spb.GenerateRequest(session_id=session, position=5, tensors=[hidden(1)]))
    assert status(error) == "PERMISSION_DENIED"
    again = refused(limited, "pi-a", spb.GenerateRequest(session_id=session, position=0, tensors=[hidden(5)]))
    assert status(again) == "FAILED_PRECONDITION" and "holds 5 positions" in again.details()
    # the session outlives its stream: the next run on another stream continues it, then closes it
    more = call(limited, "pi-a", spb.GenerateRequest(session_id=session, position=5, tensors=[hidden(1)], close=True))
    assert more[0].position == 6 and more[0].closed
    assert limited.core.generation.open_sessions == 0 and limited.core.generation.reserved_bytes == 0
    assert status(refused(limited, "pi-a", spb.GenerateRequest(session_id=session, position=6,
                                                               tensors=[hidden(1)]))) == "NOT_FOUND"


def test_sessions_and_cache_are_bounded(limited, plans):
    plan = plans[CUT].plan.plan_id
    held = [call(limited, "pi-a", spb.GenerateRequest(plan_id=plan, tensors=[hidden(60)]))[0] for _ in range(2)]
    error = refused(limited, "pi-a", spb.GenerateRequest(plan_id=plan, tensors=[hidden(1)]))
    assert status(error) == "RESOURCE_EXHAUSTED" and "max_generation_sessions_per_client" in error.details()
    # 120 positions are held of the 150 all sessions may: another client's 40 would pass that
    error = refused(limited, "pi-b", spb.GenerateRequest(plan_id=plan, tensors=[hidden(40)]))
    assert status(error) == "RESOURCE_EXHAUSTED" and "max_generation_cache_bytes" in error.details()
    for answer in held:
        call(limited, "pi-a", spb.GenerateRequest(session_id=answer.session_id, close=True))
    assert limited.core.generation.open_sessions == 0 and limited.core.generation.reserved_bytes == 0


def test_an_idle_session_is_closed(limited, plans):
    answer = call(limited, "pi-a", spb.GenerateRequest(plan_id=plans[CUT].plan.plan_id, tensors=[hidden(3)]))[0]
    generations = limited.core.generation
    assert generations.expire(time.monotonic() + generations.limits.idle_s / 2) == 0
    assert generations.expire(time.monotonic() + generations.limits.idle_s + 1) == 1
    error = refused(limited, "pi-a", spb.GenerateRequest(session_id=answer.session_id, position=3, tensors=[hidden(1)]))
    assert status(error) == "NOT_FOUND" and "resend the context" in error.details()
    assert generations.reserved_bytes == 0


def test_the_limits_are_stated(limited):
    with ServerClient(f"127.0.0.1:{limited.port}", token=TOKENS["pi-a"]) as client:
        limits = client.limits()
        info = client.list_models(MODEL)[0]
    assert (limits.max_generation_sessions, limits.max_generation_sessions_per_client,
            limits.max_generation_positions) == (3, 2, 200)
    assert (limits.max_session_cache_bytes, limits.max_generation_cache_bytes) == (PER_POSITION * 100,
                                                                                    PER_POSITION * 150)
    assert limits.generation_idle_s == 300
    assert info.task == "language-model" and info.tokenizer == "bytes"
    assert (info.sequence.vocab_size, info.sequence.max_positions) == (257, 256)
