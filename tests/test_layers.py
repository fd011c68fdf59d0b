"""The package's layers: imports only go downward, and no module imports itself back.

The graph is read from the source with ``ast``, every ``import`` counted, also those inside
functions. Layers, bottom to top (CONTRIBUTING.md explains them):

0. the algorithm, pure torch: ``distill`` (and the spec's alias paths ``losses``, ``curriculum``)
1. trajectories: the recorder and the store
2. data: MovieLens, CiteULike-t, the data checks
3. RecBole adapters: ``settings``, ``config``, ``keys``, ``registry``, ``model``, ``trainer``
   (and the ``utils`` alias)
4. the run: training, teachers, pre-flight, pipeline, results, plots, inference (and the
   ``inference`` alias)
5. distributed: Ray, Ray Tune, search spaces
6. the command line, ``run_recbole_hetcomp.py``
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "recbole_hetcomp"

LAYERS = {
    PACKAGE: 0,  # the package's __init__: its version, nothing else
    f"{PACKAGE}.distill": 0, f"{PACKAGE}.losses": 0, f"{PACKAGE}.curriculum": 0,
    f"{PACKAGE}.trajectories": 1,
    f"{PACKAGE}.data": 2,
    f"{PACKAGE}.settings": 3, f"{PACKAGE}.schema": 3, f"{PACKAGE}.config": 3, f"{PACKAGE}.keys": 3, f"{PACKAGE}.registry": 3,
    f"{PACKAGE}.model": 3, f"{PACKAGE}.trainer": 3, f"{PACKAGE}.utils": 3,
    f"{PACKAGE}.run": 4, f"{PACKAGE}.inference": 4,
    f"{PACKAGE}.distributed": 5,
    "run_recbole_hetcomp": 6,
}
NAMES = ["algorithm", "trajectories", "data", "RecBole adapters", "run", "distributed", "CLI"]


def modules():
    """module name -> source path, for every module of the package and the CLI."""
    out = {"run_recbole_hetcomp": REPO / "run_recbole_hetcomp.py"}
    for path in sorted((REPO / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def layer_of(module):
    best = None
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    if best is None:
        raise AssertionError(f"module {module} belongs to no layer: add it to LAYERS in {__file__}")
    return best[1]


def imported(module, path, known):
    """The package modules ``module`` imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            targets = [source] + [f"{source}.{a.name}" for a in node.names]
        for target in targets:
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in known and target != module:
                out.add(target)
    return out


def graph():
    known = modules()
    return {m: imported(m, p, known) for m, p in known.items()}


def find_cycle(edges):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(edges[m]):
            if state.get(d) == "open":
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(edges):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_every_module_has_a_layer():
    for module in modules():
        layer_of(module)


def test_no_import_goes_up_a_layer():
    upward = [f"{m} ({NAMES[layer_of(m)]}) imports {d} ({NAMES[layer_of(d)]})"
              for m, deps in graph().items() for d in sorted(deps) if layer_of(d) > layer_of(m)]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_algorithm_layer_imports_no_recbole():
    for module, path in modules().items():
        if layer_of(module) > 0:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("recbole", "ray") for n in names), f"{module} imports {names}"


def test_the_checker_finds_a_cycle_and_an_upward_import():
    """The checks above can fail: a hand-built graph with a cycle, and a layer violation."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of(f"{PACKAGE}.run.pipeline") > layer_of(f"{PACKAGE}.trainer.base")
    with pytest.raises(AssertionError, match="belongs to no layer"):
        layer_of("elsewhere")


@pytest.mark.parametrize("path, names", [
    ("recbole_hetcomp.losses", ["overall_loss", "rank_loss"]),
    ("recbole_hetcomp.curriculum", ["ranking_discrepancy"]),
    ("recbole_hetcomp.inference", ["load_data_and_model"]),
    ("recbole_hetcomp.utils", ["get_model", "get_trainer"]),
])
def test_public_paths_keep_working(path, names):
    import importlib

    module = importlib.import_module(path)
    for name in names:
        assert callable(getattr(module, name))
