"""The house rules that a test can check: no import cycle inside ImmunoDiffLib (imports inside
functions count: they only hide a cycle), only the MRML binding imports slicer or vtk, and every
command-line error a user can cause ends in exit status 2 with a message, not a traceback."""

from __future__ import annotations

import ast
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


def test_the_cycle_finder_finds_a_cycle_through_three_modules():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_the_mrml_binding_imports_slicer_or_vtk():
    offenders = []
    for path in LIBRARY.rglob("*.py"):
        if "mrml" in path.relative_to(LIBRARY).parts:
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
    "predict, unknown anatomy backend": ["predict", "--ct", "{ct}", "--point", "0", "0", "0",
                                         "--anatomy", "lungs", "-o", "{tmp}/p"],
    "predict, missing cohort": ["predict", "--cohort", "{tmp}/none.csv", "-o", "{tmp}/p"],
    "evaluate, missing cohort": ["evaluate", "--cohort", "{tmp}/none.csv", "-o", "{tmp}/e"],
    "segment, missing CT": ["segment", "{tmp}/none.nrrd", "-o", "{tmp}/s"],
    "segment, unknown backend": ["segment", "{ct}", "--backend", "lungs", "-o", "{tmp}/s"],
    "crop, missing CT": ["crop", "{tmp}/none.nrrd", "--point", "0", "0", "0",
                         "-o", "{tmp}/c.nrrd"],
    "simulate, no patients": ["simulate", "--n", "0", "-o", "{tmp}/sim"],
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
