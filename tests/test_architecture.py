"""
The package's structure, checked from its source: the layers import only
downwards, no module imports itself through a cycle, and nothing outside
``pyprobvae/models`` asks a model's type.
"""

import ast
import os

import pyprobvae

PACKAGE = os.path.dirname(pyprobvae.__file__)

# Bottom to top: a unit may import units of its own layer or below, never above.
LAYERS = [
    {"config", "validation", "files", "resources", "distributed", "interpolation", "distributions"},
    {"data", "networks", "likelihoods", "plots"},
    {"families", "priors"},
    {"infer"},
    {"evaluation"},
    {"models", "autoguides"},
    {"runs"},
    {"cli", "__init__", "__main__"},
]
MODEL_CLASSES = {"LatentVariableModel", "VAE", "Autoencoder", "ConditionalVAE", "VQVAE"}


def _modules():
    """``{dotted module name: path}`` of every module of the package."""
    found = {}
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                parts = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def _imports(module: str, path: str, modules) -> set:
    """The package's modules that ``module`` imports, anywhere in it (relative imports resolved)."""
    tree = ast.parse(open(path).read())
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            if not prefix.startswith("pyprobvae"):
                continue
            for alias in node.names:
                candidate = f"{prefix}.{alias.name}"
                targets.add(candidate if candidate in modules else prefix)
        elif isinstance(node, ast.Import):
            targets.update(a.name for a in node.names if a.name.startswith("pyprobvae"))
    return {t for t in targets if t in modules and t != module}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1].removesuffix(".py") if len(parts) > 1 else "__init__"


def _layer(unit: str) -> int:
    (index,) = [i for i, layer in enumerate(LAYERS) if unit in layer]
    return index


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in _modules()}
    assert units <= set().union(*LAYERS), units - set().union(*LAYERS)


def test_no_upward_imports():
    modules = _modules()
    upward = []
    for module, path in modules.items():
        for target in _imports(module, path, modules):
            if _layer(_unit(target)) > _layer(_unit(module)):
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_no_import_cycles():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    # a package imports its own submodules (to re-export them); a cycle through a parent package is not one
    graph = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in graph.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for target in graph[node]:
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert cycles == []


def _nodes_outside_the_models():
    """``(module, node)`` for every syntax node of every module outside ``pyprobvae/models``."""
    for module, path in _modules().items():
        if not module.startswith("pyprobvae.models"):
            for node in ast.walk(ast.parse(open(path).read())):
                yield module, node


def test_no_model_type_checks_outside_the_models():
    """Runs, evaluation and the command line go through the model interface, never through isinstance."""
    checks = []
    for module, node in _nodes_outside_the_models():
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("isinstance", "issubclass"):
            names = {n.id if isinstance(n, ast.Name) else getattr(n, "attr", None) for n in ast.walk(node.args[1])}
            if names & MODEL_CLASSES:
                checks.append(f"{module}:{node.lineno}")
    assert checks == []


def test_no_capability_flags_read_outside_the_models():
    """What a model can do (generative, conditional, discrete codes) is acted on inside the model's own methods."""
    reads = [
        f"{module}:{node.lineno}"
        for module, node in _nodes_outside_the_models()
        if isinstance(node, ast.Attribute) and node.attr in ("generative", "conditional", "discrete_codes")
    ]
    assert reads == []
