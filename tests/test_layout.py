"""The package's layout keeps its promises: the data flow runs one way (no import
cycles), no module imports another module's private names, every package declares its
public names, and the renamed verbs still work for one release (with a warning)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import slowflow

ROOT = Path(slowflow.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _imports(name: str, path: Path, modules: dict) -> list[tuple[str, list[str]]]:
    """(imported slowflow module, names) for every import in the file, also the ones
    inside functions."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if not target.startswith("slowflow"):
            continue
        names = [a.name for a in node.names]
        for n in names:  # "from . import metrics" imports a module
            if f"{target}.{n}" in modules:
                found.append((f"{target}.{n}", []))
        found.append((target, names))
    return found


def test_no_import_cycles():
    """Tarjan's strongly connected components of the module graph are all single
    modules (a package's __init__ re-exporting its own modules is not a cycle)."""
    modules = _modules()
    graph = {
        m: {
            t
            for t, _ in _imports(m, f, modules)
            if t in modules and t != m and not m.startswith(t + ".")
        }
        for m, f in modules.items()
    }
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_no_module_imports_private_names_of_another():
    modules = _modules()
    bad = [
        (m, t, n)
        for m, f in modules.items()
        for t, names in _imports(m, f, modules)
        for n in names
        if n.startswith("_") and n != "__version__"
    ]
    assert bad == []


def test_every_package_declares_its_public_names():
    """Each package of slowflow has __all__, and every name in it exists."""
    for info in pkgutil.walk_packages(slowflow.__path__, "slowflow."):
        if not info.ispkg:
            continue
        mod = importlib.import_module(info.name)
        assert hasattr(mod, "__all__"), info.name
        missing = [n for n in mod.__all__ if not hasattr(mod, n)]
        assert missing == [], (info.name, missing)
    assert set(slowflow.__all__) >= {"predict", "simulate_bursts", "fit", "load_model"}


def test_renamed_verbs_warn_and_give_the_same_paths(tmp_path):
    """The learned map predicts; the old rollout names still work for this release, give
    the same paths and warn."""
    from slowflow import rollout
    from slowflow.model.config import get_preset
    from slowflow.model.flowmap import build_model

    model = build_model(get_preset("gaussian-net"), 1, 0.01)
    new = rollout.predict(model, [0.2], 5, 8, seed=1)
    with pytest.warns(DeprecationWarning, match="now predict"):
        old = rollout.simulate(model, [0.2], 5, 8, seed=1)
    np.testing.assert_array_equal(new, old)
    with pytest.warns(DeprecationWarning, match="now predict_to_file"):
        rollout.simulate_to_file(model, [0.2], 5, tmp_path / "p.npy", n_paths=8, seed=1)
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), new.astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert slowflow.predict is rollout.predict


def test_model_config_defaults_are_the_default_preset():
    """``ModelConfig()`` is what ``fit`` uses by default (one meaning per name); a flow
    named without a number of transforms gets three."""
    from slowflow.model.config import ModelConfig, get_preset

    assert ModelConfig() == get_preset() == get_preset("default")
    assert ModelConfig(flow="nsf").transforms == 3 and ModelConfig().transforms == 0


def test_the_top_level_api_lists_every_lazy_name():
    """``slowflow.__all__`` (a literal, so that IDEs and linters read it) names exactly the
    lazily imported names, each of which resolves."""
    assert set(slowflow.__all__) == {*slowflow._API, "__version__"}
    for name in slowflow._API:
        assert getattr(slowflow, name) is not None
