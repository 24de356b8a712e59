"""deploy/kubernetes: the server's manifests validate against the Kubernetes schemas offline, and say what
the README's "Scaling out" promises (gRPC probes, a headless Service, connection ageing, autoscaling, a
disruption budget, a model repository that something fills); the commands in them are real options, and
every file they name exists."""
import pathlib
import re
import shlex

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
MODELS = KUBE / "models"          # applied before the kustomization: the repository's claim and how to fill it
VERSION = "1.30.0"


def documents() -> list[dict]:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in yaml.safe_load_all((KUBE / name).read_text()) if doc]


def model_documents() -> dict[str, dict]:
    return {doc["kind"]: doc for path in sorted(MODELS.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())}


def test_manifests_validate_offline():
    import kubernetes_validate
    for doc in documents() + list(model_documents().values()):
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


def test_the_autoscaler_metric_is_the_adapter_rule_shipped_beside_it():
    """The rule the HPA's comment names is a file here (Helm values for the Prometheus adapter) and defines
    the metric the HPA scales on, from a series the server exports."""
    hpa = next(doc for doc in documents() if doc["kind"] == "HorizontalPodAutoscaler")
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    (rule,) = yaml.safe_load((KUBE / "prometheus-adapter-rules.yaml").read_text())["rules"]["custom"]
    assert rule["name"]["as"] == metric
    from qpart.server.serving.observe import Metrics
    exported = {s.name for family in Metrics().registry.collect() for s in family.samples}
    series = re.findall(r"(qpart_\w+)\{", rule["seriesQuery"] + rule["metricsQuery"])
    assert series and set(series) <= exported, (series, sorted(exported))


def test_the_model_repository_is_filled_before_the_servers_mount_it():
    """The claim the servers mount read-only is made by models/claim.yaml (not by the kustomization, so that
    deleting the servers keeps it), written by the Job or the copy pod, and readable by many nodes."""
    models = model_documents()
    assert set(models) == {"PersistentVolumeClaim", "Job", "Pod"}
    claim = models["PersistentVolumeClaim"]
    assert {"ReadWriteOnce", "ReadOnlyMany"} <= set(claim["spec"]["accessModes"])
    assert "PersistentVolumeClaim" not in {doc["kind"] for doc in documents()}
    pod = next(doc for doc in documents() if doc["kind"] == "Deployment")["spec"]["template"]["spec"]
    (models_volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert models_volume["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"], "readOnly": True}
    for writer in (models["Job"]["spec"]["template"]["spec"], models["Pod"]["spec"]):
        (volume,) = writer["volumes"]
        assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert not volume["persistentVolumeClaim"].get("readOnly")


def test_the_job_runs_real_qpart_commands():
    """Every `qpart ...` line of the Job's script parses with the tool's own parser."""
    from qpart.cli.main import build_parser
    (container,) = model_documents()["Job"]["spec"]["template"]["spec"]["containers"]
    (models_env,) = [e["value"] for e in container["env"] if e["name"] == "MODELS"]
    script = container["args"][0].replace("$MODELS", models_env).replace('"$m"', models_env.split()[0])
    commands = [shlex.split(line[line.index("qpart "):]) for line in script.splitlines() if "qpart " in line]
    assert [c[1] for c in commands] == ["train", "catalog", "models"]
    for command in commands:
        args = build_parser().parse_args(command[1:])
        assert str(args.models) == "/models"


def test_every_file_the_manifests_name_exists():
    """A manifest's comment that names a file (`prometheus-adapter-rules.yaml`, `docker/Dockerfile`) names one
    that is here, relative to deploy/kubernetes or to the repository."""
    for path in sorted(KUBE.rglob("*.yaml")):
        for name in re.findall(r"[\w./-]+\.(?:yaml|toml|Dockerfile)|docker/Dockerfile", path.read_text()):
            name = name.removeprefix("deploy/kubernetes/")
            assert any((base / name).exists() for base in (KUBE, path.parent, ROOT)), f"{path.name} names {name}"


def test_the_server_arguments_are_real_options():
    from qpart.server.serving.main import parse_args
    server = documents()[0]["spec"]["template"]["spec"]["containers"][0]
    assert server["args"][0] == "qpart-server"
    settings = parse_args(server["args"][1:])
    assert settings.max_connection_age_s == 300 and str(settings.plan_key_file).endswith("plan-key/key")
    assert settings.metrics_port == 9100 and settings.host == "0.0.0.0"
