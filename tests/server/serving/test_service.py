import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from qpart.common import health


def test_health_and_reflection(server):
    target = f"127.0.0.1:{server.port}"
    assert health.is_serving(target) and health.is_serving(target, service="qpart.v1.SplitInference")
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        unknown = None
        try:
            stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        except grpc.RpcError as e:
            unknown = e.code()
        assert unknown == grpc.StatusCode.NOT_FOUND
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        services = {s.name for answer in answers for s in answer.list_services_response.service}
    assert {"qpart.v1.SplitInference", "grpc.health.v1.Health"} <= services


def test_list_models_metadata(client, repo):
    models = {m.name: m for m in client.list_models()}
    assert sorted(models) == repo.names()
    lenet = models["lenet"]
    assert lenet.version == repo.get("lenet").version and list(lenet.input.shape) == [1, 28, 28]
    assert [list(o.shape) for o in lenet.outputs] == [[10]] and lenet.task == "classification"
    assert len(lenet.class_names) == 10 and lenet.dataset == "fashion-mnist"
    assert [n.op for n in lenet.nodes if n.macs] == ["conv2d", "conv2d", "linear", "linear", "linear"]
    assert lenet.nodes[0].macs == 6 * 25 * 28 * 28 and lenet.nodes[0].weight_count == 6 * 25 + 6
    cut7 = next(c for c in lenet.cuts if c.cut == 7)
    assert [list(t.shape) for t in cut7.tensors] == [[400]] and list(cut7.weight_nodes) == ["conv1", "conv2"]
    assert lenet.preprocessing.channels == 1 and abs(lenet.preprocessing.scale - 1 / 255) < 1e-9
    camera = models["resnet8-96"]
    assert list(camera.input.shape) == [3, 96, 96] and (camera.preprocessing.resize_h, camera.preprocessing.channels) == (96, 3)
    assert lenet.float_test_accuracy == round(repo.get("lenet").card["float_test_accuracy"], 2)
    assert [m.name for m in client.list_models("fc6")] == ["fc6"]
    limits = client.limits()
    assert limits.max_batch_inputs == 1024 and limits.max_message_bytes == 16 << 20 and limits.min_chunk_bytes > 0
