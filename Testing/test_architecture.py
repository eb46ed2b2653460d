"""The house rules that a test can check: no import cycle inside ImmunoDiffLib (imports inside
functions count: they only hide a cycle), imports at the top unless a comment says why they are
deferred, every module importable on its own, only the MRML binding (and the web review built on it)
imports slicer or vtk, and
every command-line error a user can cause ends in exit status 2 with a message, not a traceback."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ImmunoDiffLib import cli

LIBRARY = Path(__file__).resolve().parents[1] / "ImmunoDiffLib"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in LIBRARY.rglob("*.py"):
        name = ".".join(path.relative_to(LIBRARY.parent).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Library modules (not packages' __init__) that ``module`` imports anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rsplit(".", 1)[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level \
                else node.module
            candidates = [target, *(f"{target}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {c for c in candidates if c in modules and c != module
                  and modules[c].name != "__init__.py"}
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_library_has_no_import_cycle():
    modules = _modules()
    graph = {m: _imported(m, p, modules) for m, p in modules.items()
             if p.name != "__init__.py"}
    assert sum(map(len, graph.values())) > 100  # the walk sees the library's imports
    assert _cycles(graph) == []


def _deferred_imports_without_a_reason(path: Path) -> list[str]:
    """Imports inside functions whose statement (or the ``try:`` around it) does not say why
    they are deferred (a comment with the word "deferred")."""
    lines = path.read_text(encoding="utf-8").split("\n")
    found = []
    for function in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        tries = {n.lineno: n for n in ast.walk(function) if isinstance(n, ast.Try)}
        for node in ast.walk(function):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            said = " ".join(lines[node.lineno - 1:node.end_lineno])
            said += " ".join(lines[n - 1] for n, t in tries.items() if node in t.body)
            if "deferred" not in said:
                found.append(f"{path.name}:{node.lineno}")
    return found


def test_imports_sit_at_the_top_of_modules_unless_deliberately_deferred():
    offenders = [o for path in LIBRARY.rglob("*.py") for o in
                 _deferred_imports_without_a_reason(path)]
    assert offenders == []


def test_the_deferral_check_finds_an_unexplained_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import json\n\n\ndef g():\n    try:  # deferred: optional"
                      "\n        import lzma\n    except ImportError:\n        pass\n")
    assert _deferred_imports_without_a_reason(module) == ["m.py:2"]


def test_every_module_imports_on_its_own():
    """Each module imported first, in a fresh set of library modules: no import-order trap."""
    script = (
        "import importlib, sys\n"
        f"names = {sorted(m for m in _modules())!r}\n"
        "failed = []\n"
        "for name in names:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('ImmunoDiffLib')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as error:\n"
        "        failed.append(f'{name}: {error!r}')\n"
        "print('\\n'.join(failed))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=LIBRARY.parent, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ""


def test_the_cycle_finder_finds_a_cycle_through_three_modules():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_the_mrml_binding_and_the_web_review_import_slicer_or_vtk():
    offenders = []
    for path in LIBRARY.rglob("*.py"):
        if {"mrml", "review"} & set(path.relative_to(LIBRARY).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            offenders += [f"{path.name}: {n}" for n in names
                          if n.split(".")[0] in ("slicer", "vtk", "qt", "ctk")]
    assert offenders == []


@pytest.fixture
def lung2_path(sample_paths):
    return str(sample_paths["lung2_image"])


EVALUATE = ["evaluate", "--cohort", "{tmp}/none.csv", "-o", "{tmp}/e"]
BAD_COMMANDS = {
    "train without a cohort": ["train", "2", "-o", "{tmp}/t"],
    "train, unknown stage": ["train", "3", "-o", "{tmp}/t"],
    "train, missing cohort file": ["train", "2", "--cohort", "{tmp}/none.csv", "-o", "{tmp}/t"],
    "predict, missing CT": ["predict", "--ct", "{tmp}/none.nrrd", "--point", "0", "0", "0",
                            "-o", "{tmp}/p"],
    "predict, bad clinical value": ["predict", "--ct", "{ct}", "--point", "0", "0", "0",
                                    "--var", "age=abc", "-o", "{tmp}/p"],
    "predict, missing bundle": ["predict", "--ct", "{ct}", "--point", "0", "0", "0",
                                "--bundle", "{tmp}/nobundle", "-o", "{tmp}/p"],
    "predict, point outside the CT": ["predict", "--ct", "{ct}", "--point", "1e6", "0", "0",
                                      "-o", "{tmp}/p"],
    "predict, zero steps": ["predict", "--ct", "{ct}", "--point", "0", "0", "0",
                            "--steps", "0", "-o", "{tmp}/p"],
    "predict, negative seed": ["predict", "--ct", "{ct}", "--point", "0", "0", "0",
                               "--seed", "-1", "-o", "{tmp}/p"],
    "predict, unknown anatomy backend": ["predict", "--ct", "{ct}", "--point", "0", "0", "0",
                                         "--anatomy", "lungs", "-o", "{tmp}/p"],
    "predict, missing cohort": ["predict", "--cohort", "{tmp}/none.csv", "-o", "{tmp}/p"],
    "evaluate, missing cohort": ["evaluate", "--cohort", "{tmp}/none.csv", "-o", "{tmp}/e"],
    "evaluate, unknown protocol": [*EVALUATE, "--protocol", "paper"],
    "evaluate, unknown budget key": [*EVALUATE, "--budget", "AlexNet=100"],
    "evaluate, zero budget": [*EVALUATE, "--budget", "2=0"],
    "evaluate, budget without steps": [*EVALUATE, "--budget", "heads"],
    "evaluate, missing budgets file": [*EVALUATE, "--budgets", "{tmp}/none.json"],
    "evaluate, curve without numbers": [*EVALUATE, "--protocol", "fair", "--curve", "2=a,b"],
    "evaluate, curve of a key without one": [*EVALUATE, "--protocol", "fair", "--curve",
                                             "diffusion=10,20"],
    "evaluate, curve outside fair": [*EVALUATE, "--curve", "heads=10,20"],
    "evaluate, curve tolerance out of range": [*EVALUATE, "--protocol", "fair",
                                               "--curve-tolerance", "2"],
    "evaluate, unknown method": [*EVALUATE, "--methods", "AlexNet"],
    "evaluate, one fold": [*EVALUATE, "--folds", "1"],
    "evaluate, zero sampling steps": [*EVALUATE, "--sampling-steps", "0"],
    "evaluate, zero bootstrap": [*EVALUATE, "--bootstrap", "0"],
    "evaluate, negative scale": [*EVALUATE, "--scale", "-1"],
    "evaluate, lobo on a missing cohort": [*EVALUATE, "--protocol", "lobo"],
    "evaluate, fair on a missing cohort": [*EVALUATE, "--protocol", "fair"],
    "segment, missing CT": ["segment", "{tmp}/none.nrrd", "-o", "{tmp}/s"],
    "segment, unknown backend": ["segment", "{ct}", "--backend", "lungs", "-o", "{tmp}/s"],
    "crop, missing CT": ["crop", "{tmp}/none.nrrd", "--point", "0", "0", "0",
                         "-o", "{tmp}/c.nrrd"],
    "simulate, no patients": ["simulate", "--n", "0", "-o", "{tmp}/sim"],
    "align, missing follow-up": ["align", "{ct}", "{tmp}/none.nii.gz", "-o", "{tmp}/a"],
    "align, unknown mode": ["align", "{ct}", "{ct}", "--mode", "elastic", "-o", "{tmp}/a"],
    "review, port out of range": ["review", "{ct}", "--port", "70000"],
    "review, missing CT": ["review", "{tmp}/none.nrrd", "--port", "0"],
}


@pytest.mark.parametrize("case", sorted(BAD_COMMANDS))
def test_every_bad_command_line_exits_2_with_a_message_and_no_traceback(case, tmp_path,
                                                                        lung2_path, capsys):
    argv = [a.format(tmp=tmp_path, ct=lung2_path) for a in BAD_COMMANDS[case]]
    try:
        status = cli.main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("immunodiff") and "error:" in last or \
        err.count("immunodiff: error:") == 1, err
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir()), "nothing is written for bad input"
