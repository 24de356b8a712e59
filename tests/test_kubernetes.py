"""deploy/kubernetes: the server's manifests validate against the Kubernetes schemas offline, and say what
the README's "Scaling out" promises (gRPC probes, a headless Service, connection ageing, autoscaling, a
disruption budget); the server's arguments in them are options qpart-server takes."""
import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
VERSION = "1.30.0"


def documents() -> list[dict]:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in yaml.safe_load_all((KUBE / name).read_text()) if doc]


def test_manifests_validate_offline():
    import kubernetes_validate
    for doc in documents():
        kubernetes_validate.validate(doc, VERSION, strict=True)
    broken = documents()[0]
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "grpc"   # must be a number
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_manifests_say_what_the_readme_promises():
    by_kind = {doc["kind"]: doc for doc in documents()}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["grpc"]["port"] == 50051
    assert by_kind["Service"]["spec"]["clusterIP"] == "None"
    assert by_kind["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2"
    assert by_kind["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    assert {"secret", "persistentVolumeClaim"} <= {k for v in pod["volumes"] for k in v}
    rules = yaml.safe_load(by_kind["ConfigMap"]["data"]["config.yaml"])["rules"]
    metric = by_kind["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert rules[0]["name"]["as"] == metric


def test_the_server_arguments_are_real_options():
    from qpart.server.serving.main import parse_args
    server = documents()[0]["spec"]["template"]["spec"]["containers"][0]
    assert server["args"][0] == "qpart-server"
    settings = parse_args(server["args"][1:])
    assert settings.max_connection_age_s == 300 and str(settings.plan_key_file).endswith("plan-key/key")
    assert settings.metrics_port == 9100 and settings.host == "0.0.0.0"
