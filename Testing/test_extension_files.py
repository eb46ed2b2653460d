"""The Slicer extension files, checked the way Slicer's extension build would trip over them."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
STAND_IN = Path(__file__).parent / "slicer_cmake_stand_in"
# The ExtensionsIndex's catalog-entry schema (v1.0.1): required keys, and the only ones allowed
INDEX_REQUIRED = {"$schema", "category", "scm_url"}
INDEX_ALLOWED = INDEX_REQUIRED | {"scm_revision", "scm_type", "build_dependencies",
                                  "build_subdirectory", "enabled", "tier"}
RAW_URL = "https://raw.githubusercontent.com/immunodiff/SlicerImmunoDiff/main/"


def _index_entry() -> dict:
    return json.loads((REPO / "ImmunoDiff.json").read_text(encoding="utf-8"))


def test_extensions_index_entry_follows_the_catalog_schema():
    entry = _index_entry()
    assert INDEX_REQUIRED <= set(entry) <= INDEX_ALLOWED, set(entry) ^ INDEX_ALLOWED
    assert re.fullmatch(r"https://raw\.githubusercontent\.com/Slicer/Slicer/main/Schemas/"
                        r"slicer-extension-catalog-entry-schema-v1\.0\.[12]\.json#",
                        entry["$schema"])
    assert entry["scm_url"].startswith("https://") and entry["tier"] in range(1, 6)
    assert isinstance(entry["build_dependencies"], list)


def _cmake_metadata() -> dict[str, str]:
    """The ``set(EXTENSION_<KEY> "...")`` lines of the top-level CMakeLists.txt, by key
    (lower case): the extension's one source of truth."""
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    return {key.lower(): value for key, value in
            re.findall(r'^set\(EXTENSION_(\w+) "([^"]*)"\)', text, flags=re.MULTILINE)}


def expected_s4ext() -> str:
    """ImmunoDiff.s4ext (the ExtensionsIndex's older description format) as the CMake metadata
    and ImmunoDiff.json say it: the file must be exactly this."""
    cmake, entry = _cmake_metadata(), _index_entry()
    fields = [("scm", entry.get("scm_type", "git")), ("scmurl", entry["scm_url"]),
              ("scmrevision", entry["scm_revision"]),
              ("depends", " ".join(entry["build_dependencies"]) or "NA"),
              ("build_subdirectory", entry["build_subdirectory"]),
              ("homepage", cmake["homepage"]), ("contributors", cmake["contributors"]),
              ("category", cmake["category"]), ("iconurl", cmake["iconurl"]),
              ("status", ""), ("description", cmake["description"]),
              ("screenshoturls", cmake["screenshoturls"]),
              ("enabled", "1" if entry.get("enabled", True) else "0")]
    lines = ["# ImmunoDiff extension description for the 3D Slicer ExtensionsIndex (.s4ext).",
             "# Made from CMakeLists.txt (EXTENSION_*) and ImmunoDiff.json by "
             "'python Testing/test_extension_files.py', whose test checks that they agree."]
    return "\n".join(lines + [f"{key} {value}".rstrip() for key, value in fields]) + "\n"


def test_the_s4ext_description_agrees_with_the_index_entry_and_the_cmake_metadata():
    cmake, entry = _cmake_metadata(), _index_entry()
    assert cmake["category"] == entry["category"]
    assert cmake["depends"].split() == entry["build_dependencies"]
    written = (REPO / "ImmunoDiff.s4ext").read_text(encoding="utf-8")
    assert written == expected_s4ext(), "ImmunoDiff.s4ext should read:\n" + expected_s4ext()


def _configure(source: Path, build: Path) -> subprocess.CompletedProcess:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    return subprocess.run(
        [cmake, "-S", str(source), "-B", str(build), f"-DSlicer_DIR={STAND_IN}"],
        capture_output=True, encoding="utf-8", errors="replace", timeout=120)


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    build = tmp_path_factory.mktemp("cmake-build")
    done = _configure(REPO, build)
    assert done.returncode == 0, done.stdout + done.stderr
    listed: dict[tuple[str, str], set[Path]] = {}
    for line in (build / "listed_files.txt").read_text(encoding="utf-8").splitlines():
        target, kind, path = line.split(" ", 2)
        listed.setdefault((target, kind), set()).add(Path(path).resolve())
    metadata = dict(line.split(" ", 1) for line in
                    (build / "extension_metadata.txt").read_text(encoding="utf-8").splitlines())
    return listed, metadata


def _on_disk(folder: Path, pattern: str) -> set[Path]:
    return {p.resolve() for p in folder.rglob(pattern) if "__pycache__" not in p.parts}


def test_library_cmake_lists_exactly_the_python_files_on_disk(configured):
    listed, _ = configured
    assert listed[("ImmunoDiffLib", "script")] == _on_disk(REPO / "ImmunoDiffLib", "*.py")
    resources = {p for p in _on_disk(REPO / "ImmunoDiffLib", "*")
                 if p.is_file() and p.suffix != ".py" and p.name != "CMakeLists.txt"}
    assert listed.get(("ImmunoDiffLib", "resource"), set()) == resources


def test_module_cmake_lists_exactly_its_scripts_and_resources(configured):
    listed, _ = configured
    module = REPO / "ImmunoDiff"
    assert listed[("ImmunoDiff", "script")] == _on_disk(module, "*.py")
    assert listed[("ImmunoDiff", "resource")] == {
        p for p in _on_disk(module / "Resources", "*") if p.is_file()}


def test_cmake_metadata_agrees_with_the_index_entry_and_names_real_files(configured):
    _, metadata = configured
    entry = _index_entry()
    assert metadata["category"] == entry["category"]
    assert metadata["depends"].split() == entry["build_dependencies"]
    assert entry["scm_url"].removesuffix(".git") == metadata["homepage"]
    for key in ("iconurl", "screenshoturls"):
        for url in metadata[key].split():
            assert url.startswith(RAW_URL), url
            assert (REPO / url.removeprefix(RAW_URL)).is_file(), f"{key}: {url} is not in the repo"


def test_cmake_install_puts_the_library_once_beside_the_module_with_the_bundle(tmp_path):
    """``cmake --install`` against the stand-in (which copies and installs like CTK's
    ctkMacroCompilePythonScript): every library file exactly once under
    qt-scripted-modules/ImmunoDiffLib/, the module and its resources beside it, the demo bundle
    where the installed library looks for it."""
    build = tmp_path / "build"
    done = _configure(REPO, build)
    assert done.returncode == 0, done.stdout + done.stderr
    prefix = tmp_path / "install"
    done = subprocess.run([shutil.which("cmake"), "--install", str(build), "--prefix",
                           str(prefix)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (modules,) = prefix.glob("lib/Slicer-*/qt-scripted-modules")
    installed = {p.relative_to(modules).as_posix() for p in modules.rglob("*") if p.is_file()}
    library = {f"ImmunoDiffLib/{p.relative_to(REPO / 'ImmunoDiffLib').as_posix()}"
               for p in (REPO / "ImmunoDiffLib").rglob("*.py") if "__pycache__" not in p.parts}
    module = {p.relative_to(REPO / "ImmunoDiff").as_posix()
              for p in (REPO / "ImmunoDiff").rglob("*.py") if "__pycache__" not in p.parts}
    assert {f for f in installed if f.endswith(".py")} == library | module
    assert not any("ImmunoDiffLib/ImmunoDiffLib" in f for f in installed)
    assert {"Resources/UI/ImmunoDiff.ui", "Resources/Icons/ImmunoDiff.png"} <= installed
    for name in ("bundle.json", "weights.safetensors"):
        shipped = modules / "Resources" / "demo_bundle" / name
        assert shipped.read_bytes() == (REPO / "Resources" / "demo_bundle" / name).read_bytes()
    found = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "from ImmunoDiffLib.settings import default_bundle; print(default_bundle())",
         str(modules)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "IMMUNODIFF_BUNDLE"})
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == modules / "Resources" / "demo_bundle"


def test_a_file_listed_but_absent_fails_the_configure(tmp_path):
    copy = tmp_path / "src"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "demo_output", "Testing", ".demo_bundle_work",
        ".ruff_cache", ".pytest_cache"))
    (copy / "ImmunoDiffLib" / "clinical.py").unlink()
    done = _configure(copy, tmp_path / "build")
    assert done.returncode != 0
    message = " ".join(done.stderr.split())
    assert re.search(r"listed script file does not exist: \S*clinical\.py", message)


def test_icons_are_128_pixel_pngs():
    for path in (REPO / "Resources/Icons/ImmunoDiff.png",
                 REPO / "ImmunoDiff/Resources/Icons/ImmunoDiff.png"):
        assert sitk.ReadImage(str(path)).GetSize() == (128, 128)


INPUT_CLASSES = {"QDoubleSpinBox", "QSpinBox", "QComboBox", "QCheckBox", "QLineEdit",
                 "ctkPathLineEdit", "qMRMLNodeComboBox", "qSlicerSimpleMarkupsWidget",
                 "qMRMLSegmentSelectorWidget"}
# view state, or an option of Save: not inputs of the computation
VIEW_WIDGETS = {"differenceCheckBox", "shownFollowupComboBox", "saveDicomCheckBox"}


def _module_maps():
    import ast

    tree = ast.parse((REPO / "ImmunoDiff/ImmunoDiff.py").read_text(encoding="utf-8"))
    maps = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id in ("CLINICAL_WIDGETS",
                                                                   "MANUAL_PARAMETERS"):
            maps[node.targets[0].id] = ast.literal_eval(node.value)
    return maps


def _ui_widgets():
    ui = (REPO / "ImmunoDiff/Resources/UI/ImmunoDiff.ui").read_text(encoding="utf-8")
    return dict((name, cls) for cls, name in re.findall(r'<widget class="(\w+)" name="(\w+)"',
                                                         ui))


def _parameter_widgets() -> set[str]:
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.parse(REPO / "ImmunoDiff/Resources/UI/ImmunoDiff.ui").getroot()
    return {w.get("name") for w in root.iter("widget")
            if any(p.get("name") == "SlicerParameterName" for p in w.findall("property"))}


def test_widgets_the_module_reads_exist_in_the_ui():
    declared = _ui_widgets()
    code = (REPO / "ImmunoDiff/ImmunoDiff.py").read_text(encoding="utf-8")
    used = set(re.findall(r"self\.ui\.(\w+)", code)) | set(
        _module_maps()["CLINICAL_WIDGETS"].values())
    assert used - set(declared) == set()


def test_every_input_widget_of_the_ui_is_bound_to_the_parameter_node():
    bound = _parameter_widgets() | set(_module_maps()["MANUAL_PARAMETERS"].values())
    inputs = {name for name, cls in _ui_widgets().items() if cls in INPUT_CLASSES}
    assert inputs - bound - VIEW_WIDGETS == set(), "inputs outside the parameter node"


def test_panel_has_a_field_for_every_clinical_variable():
    from ImmunoDiffLib.clinical import NAMES

    clinical = _module_maps()["CLINICAL_WIDGETS"]
    assert set(NAMES) - set(clinical) == {"nlr"}  # NLR is computed from ANC/ALC and shown
    assert "nlrValueLabel" in _ui_widgets()


def test_the_module_installs_every_library_dependency_slicer_lacks_and_pins_none():
    import ast

    import tomllib

    tree = ast.parse((REPO / "ImmunoDiff/ImmunoDiffModuleLib/parameters.py").read_text(
        encoding="utf-8"))
    values = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
              if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
              and node.targets[0].id in ("REQUIRED_PACKAGES", "MINIMUM_TORCH")}
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    needed = {re.split(r"[<>=!~ ]", d)[0].lower() for d in project["project"]["dependencies"]}
    shipped_with_slicer = {"numpy", "simpleitk"}
    offered = {re.split(r"[<>=!~ ]", r)[0].lower() for r in values["REQUIRED_PACKAGES"].values()}
    assert needed - shipped_with_slicer - {"torch"} <= offered, needed - offered
    assert not any("==" in r for r in values["REQUIRED_PACKAGES"].values())
    torch_minimum = next(d for d in project["project"]["dependencies"] if d.startswith("torch"))
    assert torch_minimum == f"torch>={values['MINIMUM_TORCH']}"


if __name__ == "__main__":  # rewrite ImmunoDiff.s4ext from the CMake metadata and the entry
    (REPO / "ImmunoDiff.s4ext").write_text(expected_s4ext(), encoding="utf-8")
