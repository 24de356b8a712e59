"""The console scripts (qpart.common.launch): where the part a command needs is missing, one line names the
extra to install and the status is EXIT_MISSING_PART; any other missing module still raises. Here torch
is hidden from a subprocess (tests/device/test_clean_install.py does the same in a real device install)."""
import importlib
import pathlib
import subprocess
import sys

import pytest

from qpart.common import launch

ROOT = pathlib.Path(__file__).resolve().parents[2]

try:
    import tomllib
except ModuleNotFoundError:
    import tomli as tomllib


def without_torch(script: str, *argv: str) -> subprocess.CompletedProcess:
    """Run launch.<script>() with argv in a Python that cannot import torch."""
    code = (f"import sys; sys.modules['torch'] = None; sys.argv = {[script, *argv]!r}\n"
            f"from qpart.common import launch; sys.exit(launch.{script}())")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("argv", [("server", "--help"), ("tool", "catalog", "fc6", "--models", "nowhere"),
                                  ("tool", "import", "x", "--module", "m:f", "--input-shape", "1,28,28")])
def test_a_missing_server_part_is_one_line_naming_the_extra(argv):
    result = without_torch(*argv)
    prog = {"server": "qpart-server", "tool": "qpart"}[argv[0]]
    assert result.returncode == launch.EXIT_MISSING_PART, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{prog}: this install lacks torch") and "qpart[server]" in line, line


def test_what_needs_no_torch_runs_without_it():
    assert without_torch("device", "--help").returncode == 0
    listed = without_torch("tool", "--help")
    assert listed.returncode == 0 and "catalog" in listed.stdout, listed.stderr


def test_a_module_no_extra_installs_is_raised(tmp_path, monkeypatch):
    """A user's model importing a module of its own is the user's to fix: the traceback, not a wrong hint."""
    (tmp_path / "needs_other.py").write_text("import qpart_no_such_module\n\ndef main():\n    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="qpart_no_such_module"):
        launch.run("qpart", "needs_other")
    (tmp_path / "needs_part.py").write_text("def main():\n    import qpart_fake_server_dependency\n")
    monkeypatch.setitem(launch.MODULE_EXTRAS, "qpart_fake_server_dependency", "server")
    assert launch.run("qpart", "needs_part") == launch.EXIT_MISSING_PART    # missing while it runs: hinted too


def test_every_console_script_goes_through_the_launcher_and_every_role_has_its_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(project["scripts"]) == {"qpart", "qpart-server", "qpart-device"}
    for target in project["scripts"].values():
        module, function = target.split(":")
        assert module == "qpart.common.launch" and callable(getattr(importlib.import_module(module), function))
    assert {"device", "server", "images"} <= set(project["optional-dependencies"])
    # each module the hints name comes with the extra they name (or with the base install, for the device)
    extras = {name: " ".join(deps).lower() for name, deps in project["optional-dependencies"].items()}
    base = " ".join(project["dependencies"]).lower()
    pip_names = {"PIL": "pillow", "grpc": "grpcio", "google": "protobuf", "yaml": "pyyaml",
                 "prometheus_client": "prometheus-client", "grpc_health": "grpcio-health-checking",
                 "grpc_reflection": "grpcio-reflection"}
    for module, extra in launch.MODULE_EXTRAS.items():
        wanted = pip_names.get(module, module)
        assert wanted in (base if extra == "device" else extras[extra]), (module, extra)
