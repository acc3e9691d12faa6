"""The packages' layering, read from the source: edge/ is the bottom layer, export/ sits on edge/ and
train/, and train/ never reaches up into export/; no module reaches itself through others. Imports inside
functions count too."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "train", "export")
FORBIDDEN = {"edge": {"train", "export"}, "train": {"export"}, "export": set()}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, module: str) -> set:
    """Every module that ``path`` (the module named ``module``) imports, as dotted names, relative ones resolved."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
    return found


def project_imports() -> dict:
    return {module_name(p): {m for m in imports(p, module_name(p)) if m.split(".")[0] in PACKAGES}
            for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def test_no_import_crosses_the_layers():
    wrong = [f"{module} imports {target}" for module, targets in project_imports().items()
             for target in sorted(targets) if target.split(".")[0] in FORBIDDEN[module.split(".")[0]]]
    assert wrong == []


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from export.latency import x\nfrom .esc50 import Clip\n")
    assert imports(source, "train.data.m") == {"export.latency", "train.data.esc50"}


def module_graph(imports_of: dict) -> dict:
    """{module: project modules it imports}, each import resolved to the module that defines it
    (``from train.data.esc50 import Clip`` -> train.data.esc50; ``import train.data`` -> train.data)."""
    def resolve(name):
        while name and name not in imports_of:
            name = name.rpartition(".")[0]
        return name

    return {module: {resolve(t) for t in targets} - {"", module} for module, targets in imports_of.items()}


def cycles(graph: dict) -> list:
    """Every import circle, each once, starting at its alphabetically first module."""
    found = []

    def visit(start, node, path):
        for target in sorted(graph.get(node, ())):
            if target == start:
                found.append(path)
            elif target > start and target not in path:
                visit(start, target, path + [target])

    for module in sorted(graph):
        visit(module, module, [module])
    return found


def test_no_module_imports_itself_through_others():
    assert [" -> ".join(c) for c in cycles(module_graph(project_imports()))] == []


def test_the_circle_finder_finds_circles_through_function_imports():
    graph = module_graph({"train.resnet": {"train.ensemble"}, "train.ensemble": {"train.models.build"},
                          "train.models": {"train.resnet"}, "edge.audio": set()})
    assert cycles(graph) == [["train.ensemble", "train.models", "train.resnet"]]
    assert cycles(module_graph({"a": {"b"}, "b": set()})) == []
