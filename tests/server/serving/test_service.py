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
    assert lenet.version == repo.get("lenet").version and list(lenet.input_shape) == [1, 28, 28]
    assert lenet.num_classes == 10 and len(lenet.class_names) == 10 and lenet.dataset == "fashion-mnist"
    assert [layer.kind for layer in lenet.layers] == ["conv2d", "conv2d", "linear", "linear", "linear"]
    assert lenet.layers[0].macs == 6 * 25 * 28 * 28 and lenet.layers[0].weight_count == 6 * 25 + 6
    assert list(lenet.layers[2].input_shape) == [400]
    assert abs(lenet.float_test_accuracy - repo.get("lenet").card["float_test_accuracy"]) < 1e-9
    assert [m.name for m in client.list_models("fc6")] == ["fc6"]
