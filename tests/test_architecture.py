"""The dependency direction, checked on the source: common <- device; common <- server <- cli;
everything <- testbed; nothing imports the harness. Inside the server the online path (models,
planning, serving) never imports the offline one (training, calibration)."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = {"common": "qpart.common", "device": "qpart.device", "server": "qpart.server", "cli": "qpart.cli",
            "testbed": "qpart.testbed"}
COMMON = ("qpart.common", "qpart.v1")
SERVER_ONLINE = ("qpart.server.models", "qpart.server.planning", "qpart.server.serving")
# package -> what its modules may import (prefixes); the first matching package wins
ALLOWED = {
    "qpart.common": COMMON,
    "qpart.device": COMMON + ("qpart.device",),
    "qpart.server.models": COMMON + ("qpart.server.models",),
    "qpart.server.planning": COMMON + ("qpart.server.models", "qpart.server.planning"),
    "qpart.server.serving": COMMON + SERVER_ONLINE,
    "qpart.server.training": COMMON + ("qpart.server.models", "qpart.server.training"),
    "qpart.server.calibration": COMMON + ("qpart.server",),
    "qpart.server": COMMON + ("qpart.server",),
    "qpart.cli": COMMON + ("qpart.server", "qpart.cli"),
    "qpart.testbed": ("qpart",),
}


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    parts[0] = PACKAGES[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every qpart import that runs (those under `if TYPE_CHECKING:` do not)."""
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if _type_checking_block(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        stack.extend(ast.iter_child_nodes(node))
    return [(line, name) for line, name in found if name.startswith("qpart.")]


def violations(root: pathlib.Path) -> list[str]:
    out = []
    for folder in PACKAGES:
        for path in sorted((root / folder).rglob("*.py")):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            module = module_name(path, root)
            package = next(p for p in sorted(ALLOWED, key=len, reverse=True) if module == p or module.startswith(p + "."))
            for line, name in imports(ast.parse(path.read_text(), str(path))):
                if not any(name == a or name.startswith(a + ".") for a in ALLOWED[package]):
                    out.append(f"{path.relative_to(root)}:{line}: {module} imports {name}")
    return out


def test_imports_point_one_way():
    assert violations(ROOT) == []


@pytest.mark.parametrize("folder, line", [
    ("common", "from qpart.server.models import repository"),
    ("device", "from qpart.server.serving import core"),
    ("server/serving", "from qpart.server.calibration import build"),
    ("server/planning", "import qpart.server.training.train"),
    ("server/models", "from qpart.testbed import bench"),
    ("cli", "from qpart.testbed.demo import run"),
])
def test_a_wrong_import_is_caught(tmp_path, folder, line):
    """The check itself: a copy of the tree with one wrong import planted fails it, naming the line."""
    for name in PACKAGES:
        (tmp_path / name).mkdir()
    target = tmp_path / folder
    target.mkdir(parents=True, exist_ok=True)
    (target / "planted.py").write_text(f"def f():\n    {line}\n")
    assert [v.split(": ", 1)[0] for v in violations(tmp_path)] == [f"{folder}/planted.py:2"]
