"""The daemon's local API generates text: a token a message as the tokens arrive, then the text and figures."""
import grpc
import pytest

from qpart.common import tokenizer
from qpart.device import daemon
from qpart.device.config import DeviceConfig
from qpart.server.serving.main import RunningServer
from qpart.server.serving.settings import ServerSettings
from qpart.v1 import agent_pb2 as apb
from qpart.v1 import agent_pb2_grpc as agrpc


@pytest.fixture(scope="module")
def agent(lm_models, lm_catalog, tmp_path_factory):
    server = RunningServer(ServerSettings(models=lm_models, port=0, measure_speed=False, warm_heads=False))
    root = tmp_path_factory.mktemp("lm-daemon")
    config = DeviceConfig(server=f"127.0.0.1:{server.port}", models=["gpt-fortunes"], budget=1.0,
                          listen=f"unix:{root}/agent.sock", cache_dir=str(root / "heads"), rate_mbps=5.0, rtt_ms=10.0,
                          backend="numpy", policy="float_split", replan_factor=1e6)
    running = daemon.RunningDaemon(config)
    with grpc.insecure_channel(config.listen) as channel:
        yield agrpc.LocalAgentStub(channel)
    running.stop(0)
    server.stop(0, notice=0)


def test_the_daemon_streams_the_tokens_then_the_text(agent):
    replies = list(agent.Generate(apb.GenerateTextRequest(prompt="Q: Why did the chicken", max_new_tokens=30,
                                                          through_end=True), timeout=60))
    *tokens, last = replies
    assert last.done and not any(r.done for r in tokens)
    assert len(tokens) == last.tokens == 30
    assert last.text == tokenizer.ByteTokenizer().decode([r.token for r in tokens])
    assert 0 < last.first_token_s <= last.seconds and 0 <= last.cut <= last.num_nodes
    again = list(agent.Generate(apb.GenerateTextRequest(prompt="Q: Why did the chicken", max_new_tokens=30,
                                                        through_end=True), timeout=60))
    assert again[-1].text == last.text                       # greedy: the same text again
    drawn = [list(agent.Generate(apb.GenerateTextRequest(prompt="Once", max_new_tokens=20, temperature=1.0, seed=s,
                                                         through_end=True), timeout=60))[-1].text for s in (1, 1, 2)]
    assert drawn[0] == drawn[1] != drawn[2]


@pytest.mark.parametrize("request_, code", [
    (apb.GenerateTextRequest(prompt=""), grpc.StatusCode.INVALID_ARGUMENT),
    (apb.GenerateTextRequest(prompt="x" * 5000), grpc.StatusCode.INVALID_ARGUMENT),
    (apb.GenerateTextRequest(prompt="Hello", temperature=-1), grpc.StatusCode.INVALID_ARGUMENT),
    (apb.GenerateTextRequest(prompt="Hello", max_new_tokens=10_000), grpc.StatusCode.INVALID_ARGUMENT),
    (apb.GenerateTextRequest(model="lenet", prompt="Hello"), grpc.StatusCode.NOT_FOUND),
])
def test_the_daemon_refuses_bad_prompts(agent, request_, code):
    with pytest.raises(grpc.RpcError) as e:
        list(agent.Generate(request_, timeout=30))
    assert e.value.code() == code and len(e.value.details()) < 400
