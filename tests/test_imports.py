"""No import circle in ``fst/``: every module imports alone, and the packages form a DAG.

1. Each module is imported alone in a fresh process: a child forked from a parent that holds
   the third-party libraries (torch, torchvision, hydra, ... : seconds to import, and not ours)
   but no ``fst`` module, so every ``fst`` import runs from scratch in the order that module
   asks for. A circle shows up as an ImportError / partially initialised module. One module is
   also imported in a genuinely new interpreter, as a control of the fork shortcut.
2. Statically, counting lazy (function-level) imports too: the graph of ``fst`` packages has no
   cycle, and ``fst.types`` / ``fst.registry`` (the leaves everyone shares) import nothing of fst.
3. Statically, module by module, lazy imports counted: no circle at all. A function-level import
   hides a circle from test 1 (it runs after both modules are loaded), so a circle "broken" by
   one fails here. Importing ``fst.a.b`` also imports the packages ``fst.a`` and ``fst``; the one
   edge left out is a module importing a package it belongs to (``from . import DATASETS``: the
   package defines its registry before importing the modules that fill it).
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "fst"
LEAVES = ("fst.types", "fst.registry")
THIRD_PARTY = ("torch", "torchvision", "numpy", "omegaconf", "hydra", "PIL", "timm", "sklearn",
               "scipy", "pycocotools", "tqdm", "matplotlib", "skimage")  # fmt: skip


# Modules that need an optional framework (pyproject extras); imported only where it is installed.
OPTIONAL = {"fst.integrations.mmdet": ("mmdet", "mmcv.ops")}


def _available(deps: tuple[str, ...]) -> bool:
    try:
        for dep in deps:
            importlib.import_module(dep)
    except ImportError:
        return False
    return True


def _modules() -> list[str]:
    out = []
    for f in sorted(PKG.rglob("*.py")):
        parts = f.relative_to(ROOT).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def _imports(path: Path, module: str) -> set[str]:
    """Every ``fst`` module ``path`` imports, at any depth of the file (lazy imports included;
    imports under ``if TYPE_CHECKING:`` are for annotations only and never run), and each name
    of a ``from ... import name`` as ``module.name`` (it may be a submodule)."""
    found = set()
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    type_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{a.name}" for a in node.names)  # the name may be a module
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {n for n in found if n == "fst" or n.startswith("fst.")}


def _module_imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """The ``fst`` modules that importing ``module`` runs, lazily or not: each module named
    (``from fst.data import classification`` names a submodule) and its parent packages, less
    ``module``'s own packages."""
    out = set()
    for name in _imports(path, module):
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
    return (out & modules) - own


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of ``graph`` with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else "fst"


def test_leaf_modules_import_nothing_of_fst():
    for leaf in LEAVES:
        path = ROOT / (leaf.replace(".", "/") + ".py")
        assert _imports(path, leaf) == set(), leaf


def test_package_graph_has_no_cycle():
    graph: dict[str, set[str]] = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        src = _package(module)
        for dep in _imports(f, module):
            dst = _package(dep)
            if dst != src:
                graph.setdefault(src, set()).add(dst)
    # fst/__init__ re-exports convert/ops/strategies: edges into "fst" are edges into those.
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
                pytest.fail("import cycle between packages: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_module_graph_has_no_circle():
    files = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {m: _module_imports(f, m, set(files)) for m, f in files.items()}
    circles = _cycles(graph)
    assert circles == [], "import circle(s), lazy imports counted: " + "; ".join(
        " <-> ".join(c) for c in circles
    )


def test_the_circle_check_sees_a_lazy_circle(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from fst.x import b\n")
    assert _module_imports(a, "fst.x.a", {"fst", "fst.x", "fst.x.a", "fst.x.b"}) == {"fst.x.b"}
    assert _cycles({"fst.x.a": {"fst.x.b"}, "fst.x.b": {"fst.x.a"}}) == [["fst.x.a", "fst.x.b"]]


def test_every_module_imports_alone():
    for name in THIRD_PARTY:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    failures = []
    for module in _modules():
        if module in OPTIONAL and not _available(OPTIONAL[module]):
            continue
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: no fst module loaded yet
            os.close(r)
            try:
                for loaded in [m for m in sys.modules if m == "fst" or m.startswith("fst.")]:
                    del sys.modules[loaded]
                importlib.import_module(module)
                os.write(w, b"ok")
            except BaseException as e:  # noqa: BLE001 - reported by the parent
                os.write(w, f"{type(e).__name__}: {e}".encode()[:2000])
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            msg = f.read().decode()
        os.waitpid(pid, 0)
        if msg != "ok":
            failures.append(f"{module}: {msg}")
    assert failures == [], "\n".join(failures)


def test_one_module_in_a_new_interpreter():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", "import fst.data.classification, fst.engine.training"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
