"""docker-compose.yml: two-node testing with netem on the device and a grpc.health.v1 check."""
import pathlib
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"


def test_compose_file_is_valid_for_docker_compose():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("the docker-compose binary is not installed (`make test` installs it when run as root)")
    result = subprocess.run([exe, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_compose_services():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    server, device = services["server"], services["device"]
    for service in (server, device):
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        assert (ROOT / service["build"]["dockerfile"]).exists()
    assert "qpart.common.health" in " ".join(server["healthcheck"]["test"])
    assert device["depends_on"]["server"]["condition"] == "service_healthy"
    assert "NET_ADMIN" in device["cap_add"]
    assert {"NETEM_RATE", "NETEM_DELAY", "NETEM_JITTER", "NETEM_LOSS"} <= set(device["environment"])
    assert device["entrypoint"] == ["qpart-netem"]
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "dataset-fashion-mnist" in dockerfile and "COPY docker/netem.sh /usr/local/bin/qpart-netem" in dockerfile


def test_netem_script_builds_the_qdisc(tmp_path):
    """The device's entrypoint turns the environment into one `tc qdisc replace ... netem` call."""
    fake_tc = tmp_path / "tc"
    fake_tc.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/called\n")
    fake_tc.chmod(0o755)
    fake_ip = tmp_path / "ip"
    fake_ip.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/ip-called\n")
    fake_ip.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "NETEM_RATE": "5mbit", "NETEM_DELAY": "20ms", "NETEM_JITTER": "2ms",
           "NETEM_LOSS": "0.5%"}
    result = subprocess.run(["sh", str(ROOT / "docker" / "netem.sh"), "true"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "called").read_text().splitlines()
    assert calls[0].split() == [
        "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", "20ms", "2ms", "loss", "0.5%", "rate", "5mbit"]
    # the ingress (head downloads, answers) through an IFB device at the down rate
    assert calls[1:] == ["qdisc replace dev eth0 handle ffff: ingress",
                         "filter replace dev eth0 parent ffff: protocol all u32 match u32 0 0 action mirred egress "
                         "redirect dev ifb-qpart", "qdisc replace dev ifb-qpart root netem rate 5mbit"]
    assert "ifb-qpart up" in (tmp_path / "ip-called").read_text()


def test_netem_script_says_when_ingress_cannot_be_shaped(tmp_path):
    (tmp_path / "tc").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "ip").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("tc", "ip"):
        (tmp_path / tool).chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "NETEM_RATE": "5mbit"}
    result = subprocess.run(["sh", str(ROOT / "docker" / "netem.sh"), "true"], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "ingress is NOT shaped" in result.stderr


def test_images_copy_every_package_they_install():
    """pip install '.' needs every directory pyproject maps to a package; a Dockerfile missing one fails to build."""
    import tomllib
    dirs = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    for name in ("Dockerfile", "device.Dockerfile"):
        text = (ROOT / "docker" / name).read_text()
        copied = {line.split()[1] for line in text.splitlines() if line.startswith("COPY ") and "--from" not in line}
        missing = sorted(d for d in dirs if d.split("/")[0] not in copied)
        assert not missing, f"docker/{name} does not copy {missing}"


def test_device_image_is_multi_arch_without_torch():
    text = (ROOT / "docker" / "device.Dockerfile").read_text()
    assert "--platform linux/amd64,linux/arm64,linux/arm/v7" in text and "piwheels" in text
    assert "torch" not in "".join(line for line in text.splitlines() if line.startswith("RUN"))
    assert "'.[images]'" in text and "[server]" not in text
