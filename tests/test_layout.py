"""The package's shape: small modules, imports that run down the flow, one program behind
``main.py`` and the ``unet`` command, and one dependency list in two spellings."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "isbi_unet"
# The steps of the data's way, in order. A module may import from its own step and from
# the steps before it, never from a later one. ``data`` and ``model`` are the seed's
# top-level modules: data in, and the network the training step builds.
LAYERS = (
    ("isbi_unet.errors", "isbi_unet.hardware", "isbi_unet.progress", "isbi_unet.protocol", "isbi_unet.network",
     "model"),
    ("isbi_unet.io",),
    ("data", "isbi_unet.evaluation"),
    ("isbi_unet.training",),
    ("isbi_unet.prediction",),
    ("isbi_unet.cells",),
    ("isbi_unet.export",),
    ("isbi_unet.pipeline",),
    ("isbi_unet.cli",),
)
MAX_LINES = 300


def project_modules() -> dict[str, Path]:
    """Dotted name -> file of every project module: the package, data.py and model.py."""
    modules = {".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
               for path in PACKAGE.rglob("*.py")}
    modules.update(data=ROOT / "data.py", model=ROOT / "model.py")
    return modules


def layer_of(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return rank
    raise AssertionError(f"{module} belongs to no step of LAYERS")


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Project modules that ``path`` imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def test_no_module_is_over_about_300_lines():
    long = {name: count for name, path in project_modules().items()
            if (count := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_imports_run_down_the_flow_and_never_back_up():
    modules = project_modules()
    known = set(modules)
    upward = [f"{name} -> {target}" for name, path in modules.items() for target in imported_modules(path, known)
              if layer_of(target) > layer_of(name)]
    assert not upward, "imports from a later step: " + "; ".join(sorted(upward))


def test_the_module_import_graph_has_no_cycles():
    modules = project_modules()
    graph = {name: imported_modules(path, set(modules)) - {name} for name, path in modules.items()}
    # a package's __init__ is imported with its modules; it imports nothing of the project
    for name in modules:
        if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").is_file():
            assert not graph[name], f"{name}/__init__.py imports {graph[name]}"
            for others in graph.values():
                others.discard(name)
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(target):] + [node, target]))
            if target not in state:
                visit(target, trail + [node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_no_star_imports_and_nothing_printed_at_import():
    modules = project_modules()
    for name, path in modules.items():
        assert not re.search(r"^\s*from \S+ import \*", path.read_text(), re.M), f"{name} has a star import"
    code = "import importlib, sys\nfor name in sys.argv[1:]: importlib.import_module(name)"
    done = subprocess.run([sys.executable, "-c", code, *sorted(modules)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == ""


def test_the_console_command_is_the_program_of_main_py():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    module_name, function_name = project["scripts"]["unet"].split(":")
    module = __import__(module_name, fromlist=[function_name])
    import main
    from isbi_unet.cli.parser import build_parser

    assert getattr(module, function_name) is main.main
    parser = build_parser()
    commands = next(action for action in parser._actions if action.dest == "command").choices
    assert set(commands) == {"fetch", "train", "predict", "evaluate", "segment", "check", "all", "crossval",
                             "compare", "export"}


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[<>=!~\[ ;]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def spec_names(specs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in specs}


@pytest.mark.parametrize("requirements, extra", [("requirements.txt", None), ("requirements-export.txt", "export"),
                                                 ("requirements-dev.txt", "test")])
def test_pyproject_lists_the_packages_of_the_requirements_files(requirements, extra):
    """requirements*.txt pin what ./run.sh installs; pyproject.toml names the same packages."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    assert spec_names(specs) == requirement_names(ROOT / requirements)
