"""The package layout: old import paths still work, the model set is self-contained, and no module imports itself
back through others (no import cycles)."""

import ast
import importlib
from pathlib import Path

import pytest

import modeling_plm
from modeling_plm._moved import MOVED

PACKAGE = Path(modeling_plm.__file__).parent
MODEL_SET = ("configuration_plm.py", "modeling_plm.py", "modeling_plm_layers.py", "tokenization_plm.py")


@pytest.mark.parametrize("old_name", sorted(MOVED))
def test_moved_modules_import_under_their_old_name(old_name):
    assert importlib.import_module(old_name) is importlib.import_module(MOVED[old_name])


def test_old_from_imports_give_the_same_objects():
    from modeling_plm.collators import GLMCollator
    from modeling_plm.pipelines.embedding import embed_sequences

    from modeling_plm.data.collators import GLMCollator as moved
    from modeling_plm.inference.embedding import embed_sequences as moved_embed

    assert GLMCollator is moved and embed_sequences is moved_embed


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module of the package that `path` imports, at module level or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(MOVED.get(c, c) for c in candidates if c.startswith("modeling_plm"))
    return found


def test_no_import_cycles_between_modules():
    # Package __init__ files only gather names, so the graph is over modules.
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    graph = {name: {m for m in imported_modules(path) if m in modules and m != name} for name, path in modules.items()}
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycle = trail[trail.index(target) :] + [target] if target in trail else [name, target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("filename", MODEL_SET)
def test_model_set_imports_only_torch_transformers_and_itself(filename):
    allowed_top = {"torch", "transformers", "tokenizers", "__future__"}
    tree = ast.parse((PACKAGE / filename).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            assert node.level == 1 and f"{node.module}.py" in MODEL_SET, (filename, node.module)
        elif isinstance(node, ast.ImportFrom):
            top = node.module.split(".")[0]
            assert top in allowed_top or top in STDLIB, (filename, node.module)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                assert top in allowed_top or top in STDLIB, (filename, alias.name)


STDLIB = set(__import__("sys").stdlib_module_names)


@pytest.mark.parametrize("filename", MODEL_SET)
def test_the_model_files_stay_readable(filename):
    lines = (PACKAGE / filename).read_text().count("\n")
    assert lines < 1000, f"{filename} has {lines} lines"
