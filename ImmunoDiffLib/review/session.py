"""One review session of the web app, without its page: the CT loaded into the MRML scene,
the tumour point, the clinical variables checked field by field, an optional real follow-up
CT, one run at a time in a worker thread (progress, cancel; with a real follow-up, its
alignment to the baseline and comparison after the prediction), the results as nodes through
:mod:`ImmunoDiffLib.mrml` (baseline | synthesized, or baseline | synthesized | real follow-up
in linked views; with scenarios asked for, each scenario's follow-up can be shown beside the
baseline instead), and Save (the case folder ``immunodiff predict`` writes; with ``dicom``
also its ``dicom/`` folder, in the study of the CT when it was loaded or uploaded as a DICOM
series). The page (``page.py``) only binds widgets to this object, so everything here is
tested without a browser.

Threads: the worker runs only the library (``pipeline.run``, ``compare_with_real_followup``
and ``write_case`` into a temporary case folder); nodes are made and views changed on the
server's thread, by :meth:`ReviewSession.collect`, because MRML is not thread-safe.

DICOM identity: the patient, study and frame of reference of a CT loaded from a DICOM folder or
uploaded as a DICOM series are read (headers only, with
:mod:`ImmunoDiffLib.dicom_export.identity`) while its files are at hand, and kept with the CT;
a CT that is not DICOM gets a generated identity when it is saved with DICOM outputs.
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import mrml
from ..clinical import VARIABLES, parse_clinical
from ..dicom_export.identity import identity_from_dicom_folder, study_identity
from ..errors import ClinicalValueError, ImageError, ImmunoDiffError
from ..imaging import label_centroid, list_dicom_series, read_ct, read_image
from ..inference.cases import PREDICTIONS_NAME, write_case
from ..inference.followup_comparison import compare_with_real_followup
from ..inference.pipeline import ImmunoDiffPipeline
from ..inference.sampling import SamplingOptions
from ..mrml import views
from ..mrml.cases import PIPELINE_SHARE_WITH_REAL_FOLLOWUP, scenario_nodes
from ..mrml.tables import OBEYED_TEXT, RECIST_SCENARIOS, ordered_scenarios, scenario_label
from ..outputs import atomic_folder
from ..progress import Cancelled, Task
from ..reporting.case_report import (
    out_of_distribution_lines,
    prediction_lines,
    real_followup_lines,
)
from .dicom_identity import LoadedIdentity, dicom_baseline, identity_of_series

LUNG_WINDOW = (1500.0, -600.0)  # window, level
UPLOAD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
MAX_UNZIPPED_BYTES = 4 * 1024**3  # what an uploaded .zip may hold once unpacked


def _last_part(name: str) -> str:
    """The last part of a file name sent from any system (``/`` or ``\\`` separated)."""
    return re.split(r"[\\/]", name)[-1] or "file"


def _unzip_flat(filename: str, content: bytes, folder: Path) -> None:
    """The files of an uploaded .zip into ``folder``, each under its last name part only
    (no sub-folders, nothing outside ``folder``); refused when it would unpack to more than
    :data:`MAX_UNZIPPED_BYTES`."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile as error:
        raise ImageError(f"Upload '{filename}' is not a readable .zip file ({error}).") from error
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        total = sum(info.file_size for info in members)
        if total > MAX_UNZIPPED_BYTES:
            raise ImageError(f"Upload '{filename}' would unpack to {total / 1024**3:.1f} GB; "
                             f"at most {MAX_UNZIPPED_BYTES / 1024**3:.0f} GB is read.")
        for index, info in enumerate(members):
            (folder / f"{index:05d}_{_last_part(info.filename)}").write_bytes(archive.read(info))


class BusyError(ImmunoDiffError, RuntimeError):
    """A run is already going on this server."""


@dataclass
class RunState:
    """What the page shows of the current or last run."""

    running: bool = False
    fraction: float = 0.0
    message: str = ""
    error: str = ""
    cancelled: bool = False
    folder: Path | None = None  # the finished case folder (temporary until saved)
    summary: dict = field(default_factory=dict)
    # what Save's DICOM outputs are made of: the run's result, baseline CT, drawn tumour,
    # identity and case name
    dicom_source: dict | None = field(default=None, repr=False)


def field_problems(values: dict) -> tuple[dict[str, str], float | None]:
    """({variable name: message} for each bad clinical value, NLR computed from ANC/ALC or
    None). Empty strings and "unknown" count as missing, as in the library."""
    raw = {name: value for name, value in values.items()
           if str(value).strip() not in ("", "unknown")}
    try:
        record = parse_clinical(raw)
    except ClinicalValueError as error:
        problems: dict[str, str] = {}
        for sentence in error.problems:
            named = [v.name for v in VARIABLES if re.search(rf"\({re.escape(v.name)}\)",
                                                            sentence)]
            for name in named or ["form"]:
                problems.setdefault(name, sentence)
        return problems, None
    return {}, (float(record["nlr"]) if "nlr" in record.derived else None)


class ReviewSession:
    """The state of one review server (shared by every browser tab that opens it)."""

    def __init__(self, scene, allowed_roots: list[Path], bundle: Path,
                 anatomy_backend: str = "auto", work_dir: Path | None = None):
        self.scene = scene
        self.allowed_roots = [Path(r).resolve() for r in allowed_roots]
        self.bundle = Path(bundle)
        self.anatomy_backend = anatomy_backend
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="immunodiff-review-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.volume_node = None
        self.followup_node = None  # the real follow-up CT as scanned, when one was given
        self.point_ras: tuple[float, float, float] | None = None
        self.tumour_mask = None  # a drawn tumour (SimpleITK label map), when one was given
        self.identity = LoadedIdentity()  # the loaded CT's DICOM identity
        self.run_state = RunState()
        self.nodes: dict = {}
        self._pipeline: ImmunoDiffPipeline | None = None
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: dict | None = None
        self._dicom_inputs: dict = {}

    # --- input ------------------------------------------------------------------------------
    def allowed(self, path_text: str) -> Path:
        """The resolved path, if it lies inside an allowed folder; else a clear error."""
        path = Path(path_text).expanduser()
        resolved = path.resolve()
        if not any(resolved == root or resolved.is_relative_to(root)
                   for root in self.allowed_roots):
            roots = ", ".join(str(r) for r in self.allowed_roots)
            raise ImageError(f"'{path_text}' is outside the folders this review may read "
                             f"({roots}); start it with --allow FOLDER to add one.")
        if not resolved.exists():
            raise ImageError(f"'{path_text}' does not exist.")
        return resolved

    def load(self, path_text: str, name: str | None = None):
        """Read a CT file or DICOM folder (inside the allowed folders) into a new volume node,
        shown at the lung window. Returns the node."""
        path = self.allowed(path_text)
        image = read_ct(path)
        name = name or path.name.split(".")[0]
        identity = (identity_of_series(lambda: study_identity(path, image, name), image,
                                        f"'{path}'") if path.is_dir() else LoadedIdentity())
        return self._show(image, name, identity)

    def load_upload(self, filename: str, content: bytes):
        """One file sent by the browser (:meth:`load_uploads`)."""
        return self.load_uploads([(filename, content)])

    def load_uploads(self, files: list[tuple[str, bytes]]):
        """A CT sent by the browser as (file name, bytes) pairs: one CT file, the files of one
        DICOM series, or one .zip of a DICOM folder (:meth:`_read_uploads`); a DICOM series'
        identity is kept for Save's DICOM outputs."""
        return self._show(*self._read_uploads(files, with_identity=True))

    def _read_uploads(self, files: list[tuple[str, bytes]], with_identity: bool = False):
        """(image, name) of a CT sent by the browser as (file name, bytes) pairs; with
        ``with_identity``, (image, name, :class:`LoadedIdentity`). The files are kept in the
        session's folder only while they are read; names are reduced to their last part, so
        nothing is written outside it."""
        if not files:
            raise ImageError("Nothing was uploaded.")
        with tempfile.TemporaryDirectory(dir=self.work_dir) as folder:
            folder = Path(folder)
            if len(files) == 1:
                filename, content = files[0]
                lower = filename.lower()
                if lower.endswith(UPLOAD_SUFFIXES):
                    suffix = next(s for s in UPLOAD_SUFFIXES if lower.endswith(s))
                    path = folder / f"upload{suffix}"
                    path.write_bytes(content)
                    read = read_ct(path), Path(filename).name.split(".")[0]
                    return (*read, LoadedIdentity()) if with_identity else read
                if not lower.endswith(".zip"):
                    raise ImageError(f"Upload '{filename}' is not a CT file this review reads "
                                     f"({', '.join(UPLOAD_SUFFIXES)}); send a NIfTI, NRRD or "
                                     "MHA file, the files of one DICOM series, or a .zip of a "
                                     "DICOM folder.")
                _unzip_flat(filename, content, folder)
            else:
                for index, (filename, content) in enumerate(files):
                    (folder / f"{index:05d}_{_last_part(filename)}").write_bytes(content)
            series = list_dicom_series(folder)
            if len(series) != 1:
                found = "no DICOM series" if not series else (
                    f"{len(series)} DICOM series:\n  "
                    + "\n  ".join(s.summary() for s in series))
                raise ImageError(f"The upload ({len(files)} file(s)) holds {found}; send the "
                                 "files of one DICOM series, or a NIfTI, NRRD or MHA file.")
            image = read_ct(folder, series_uid=series[0].uid)
            name = series[0].description or "DICOM upload"
            if not with_identity:
                return image, name
            where = f"the upload ({len(files)} file(s))"
            source = (f"DICOM series {series[0].uid} uploaded to the web review "
                      f"({len(series[0].files)} files)")
            return image, name, identity_of_series(lambda: identity_from_dicom_folder(folder),
                                                    image, where, source)

    def _volume_node(self, image, name: str):
        """A new volume node of ``image``, shown at the lung window."""
        views.ensure_display_defaults(self.scene)
        node = mrml.image_to_volume_node(image, self.scene, name)
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(*LUNG_WINDOW)
        return node

    def _show(self, image, name: str, identity: LoadedIdentity | None = None):
        """A new baseline (with its DICOM identity): the point, the mask, the results and the
        real follow-up of the previous one are dropped."""
        self.clear_followup()
        node = self._volume_node(image, name)
        self.volume_node, self.point_ras, self.nodes, self.tumour_mask = node, None, {}, None
        self.identity = identity or LoadedIdentity()
        self.run_state = RunState()
        return node

    # --- the real follow-up (optional) --------------------------------------------------------
    def load_followup(self, path_text: str):
        """The patient's real follow-up CT, a file or DICOM folder inside the allowed folders,
        into a new volume node (as scanned); the next run aligns it to the baseline and
        compares it with the synthesized follow-up. Returns the node."""
        self._need_baseline()
        path = self.allowed(path_text)
        return self._show_followup(read_ct(path), path.name.split(".")[0])

    def load_followup_uploads(self, files: list[tuple[str, bytes]]):
        """The real follow-up CT sent by the browser, as the baseline is
        (:meth:`load_uploads`: one CT file, a DICOM series' files or a .zip of them)."""
        self._need_baseline()
        return self._show_followup(*self._read_uploads(files))

    def _need_baseline(self) -> None:
        if self.volume_node is None:
            raise ImageError("Load the baseline CT first, then its real follow-up.")

    def _show_followup(self, image, name: str):
        self.clear_followup()
        self.followup_node = self._volume_node(image, f"{name} (real follow-up, as scanned)")
        return self.followup_node

    def clear_followup(self) -> None:
        """Forget the real follow-up (its node leaves the scene); a finished run's aligned
        follow-up stays with that run's results."""
        if self.followup_node is not None and self.scene.IsNodePresent(self.followup_node):
            self.scene.RemoveNode(self.followup_node)
        self.followup_node = None

    def review_views(self) -> tuple[str, ...]:
        """The slice views the review fills: baseline | synthesized, and the real follow-up
        (as scanned before a run, aligned after it) when there is one."""
        if self.followup_node is not None or "real followup" in self.nodes:
            return views.REAL_FOLLOWUP_VIEWS
        return views.SIDE_BY_SIDE_VIEWS

    def set_point(self, point_ras) -> None:
        """The tumour point, kept to 0.01 mm: the precision predictions.json records, so the
        saved case can be run again exactly. A point placed by hand drops a mask given before."""
        self.point_ras = tuple(round(float(v), 2) for v in point_ras)
        self.tumour_mask = None

    def point_from_mask(self, path_text: str) -> tuple[float, float, float]:
        """The tumour from a label map (e.g. a segment exported from Slicer): its centroid is the
        point, and the run is told the drawn tumour (``tumour_mask``) instead of growing one."""
        if self.volume_node is None:
            raise ImageError("Load a CT first.")
        path = self.allowed(path_text)
        mask = read_image(path)
        centre = label_centroid(mask, source=f"tumour mask '{path.name}'")
        self.set_point(mrml.lps_to_ras(centre))
        self.tumour_mask = mask
        return self.point_ras

    # --- the run ----------------------------------------------------------------------------
    def start(self, clinical: dict, options: SamplingOptions, scenarios: bool = False,
              recist_scenarios: bool = False) -> None:
        """Start the case in a worker thread; refuses a second run (BusyError).
        ``scenarios``: also the follow-ups "if it responds / if it does not";
        ``recist_scenarios``: also "if it reaches CR / PR / SD / PD" (``predict
        --scenarios``, ``--recist-scenarios``)."""
        if self.volume_node is None:
            raise ImageError("Load a CT first.")
        if self.point_ras is None:
            raise ImageError("Place the tumour point: click the tumour in the left view.")
        problems, _ = field_problems(clinical)
        if problems:
            raise ClinicalValueError(list(problems.values()))
        if not self._lock.acquire(blocking=False):
            raise BusyError("A case is running on this server; wait for it or cancel it.")
        image = mrml.volume_node_to_image(self.volume_node)  # read on the server's thread
        followup = (None if self.followup_node is None
                    else mrml.volume_node_to_image(self.followup_node))
        point_lps = mrml.ras_to_lps(self.point_ras)
        raw = {k: v for k, v in clinical.items() if str(v).strip() not in ("", "unknown")}
        self._cancel.clear()
        self.run_state = RunState(running=True, message="starting")
        self._dicom_inputs = {"ct": image, "tumour_mask": self.tumour_mask,
                              "identity": self.identity,
                              "case_id": self.volume_node.GetName()}
        asked = {"scenarios": bool(scenarios), "recist_scenarios": bool(recist_scenarios)}
        self._thread = threading.Thread(target=self._work, args=(
            image, raw, point_lps, options, self.tumour_mask, followup, asked), daemon=True)
        self._thread.start()

    def _progress(self, fraction: float, message: str = "") -> None:
        self.run_state.fraction, self.run_state.message = float(fraction), message

    def _work(self, image, clinical: dict, point_lps, options: SamplingOptions,
              tumour_mask, followup=None, asked: dict | None = None) -> None:
        """The case (and, with ``followup``, the real follow-up's alignment and comparison)
        into the temporary case folder; runs in the worker thread."""
        folder = self.work_dir / "case"
        task = Task(self._progress, self._cancel.is_set)
        share = 1.0 if followup is None else PIPELINE_SHARE_WITH_REAL_FOLLOWUP
        try:
            if self._pipeline is None:
                self._progress(0.0, "loading the model")
                self._pipeline = ImmunoDiffPipeline(self.bundle,
                                                    anatomy_backend=self.anatomy_backend)
            progress = self._progress if followup is None else task.sub(0.0, share).callback()
            result = self._pipeline.run(image, clinical, point_lps, options, progress,
                                        self._cancel.is_set, tumour_mask=tumour_mask,
                                        **(asked or {}))
            real = None
            if followup is not None:
                alignment = task.sub(share, 1.0)
                alignment.report(0.0, "aligning the real follow-up")
                real = compare_with_real_followup(result, image, followup,
                                                  self._pipeline.info.window,
                                                  alignment.callback(), self._cancel.is_set)
            write_case(result, folder, "review", overwrite=True, real_followup=real)
            self._pending = {"folder": folder, "result": result}
        except Cancelled:
            self._pending = {"cancelled": True}
        except ImmunoDiffError as error:
            self._pending = {"error": str(error)}
        except Exception as error:  # shown on the page; the server keeps running
            self._pending = {"error": f"{type(error).__name__}: {error}"}
        finally:
            self._lock.release()

    def cancel(self) -> None:
        self._cancel.set()

    def collect(self) -> bool:
        """On the server's thread: when the worker has finished, put its results into the
        scene (or its error into the run state). True when something changed."""
        pending, self._pending = self._pending, None
        if pending is None:
            return False
        state = RunState()
        if pending.get("cancelled"):
            state.cancelled, state.message = True, "cancelled; nothing was kept"
            shutil.rmtree(self.work_dir / "case", ignore_errors=True)
        elif "error" in pending:
            state.error = pending["error"]
        else:
            folder = pending["folder"]
            self.nodes = mrml.load_case_folder(self.scene, folder, self.volume_node)
            if "real followup" in self.nodes:
                views.show_with_real_followup(self.scene, self.volume_node, self.nodes,
                                              self.point_ras)
            else:
                views.show_side_by_side(self.scene, self.volume_node, self.nodes,
                                        self.point_ras)
            state.folder, state.summary = folder, self.nodes["summary"]
            state.dicom_source = {**self._dicom_inputs, "result": pending["result"]}
            state.fraction, state.message = 1.0, "done"
        self.run_state = state
        return True

    def wait(self, timeout: float | None = None) -> None:
        """Block until the worker ends (for the command line and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)

    # --- results ----------------------------------------------------------------------------
    def show_overlay(self, kind: str | None) -> None:
        """The foreground of both views: "difference", "uncertainty" or None."""
        node = self.nodes.get(kind) if kind else None
        if kind == "difference" and node is not None:
            views.style_difference(node)
        elif node is not None:
            node.GetDisplayNode().SetAndObserveColorNodeID("vtkMRMLColorTableNodeInferno")
        views.set_overlay(self.scene, node)

    def scenario_names(self) -> list[str]:
        """The scenarios of the results, in order (responder, non-responder, CR, PR, SD,
        PD): each has a follow-up node :meth:`show_scenario` shows."""
        return list(scenario_nodes(self.nodes))

    def show_scenario(self, scenario: str | None) -> None:
        """Baseline | the follow-up of ``scenario`` (a name of :meth:`scenario_names`) in the
        left and middle views; None: the synthesized follow-up again."""
        if scenario is not None and scenario not in self.scenario_names():
            raise ImageError(f"Scenario '{scenario}' is not among the results (they have: "
                             f"{', '.join(self.scenario_names()) or 'none'}).")
        views.show_scenario(self.scene, self.volume_node, self.nodes, self.point_ras,
                            scenario, show_difference=False)

    def show_anatomy(self, visible: bool) -> None:
        segmentation = self.nodes.get("segmentation")
        if segmentation is not None and segmentation.GetDisplayNode() is not None:
            segmentation.GetDisplayNode().SetVisibility(bool(visible))

    def save(self, destination_text: str, dicom: bool = False) -> Path:
        """Copy the finished case folder to ``destination`` (all or nothing): the same folder
        ``immunodiff predict`` writes; with ``dicom``, also its ``dicom/`` folder (``predict
        --dicom``), in the study of the CT when it was DICOM. Every check runs before anything
        is written."""
        folder = self.run_state.folder
        if folder is None or not (folder / PREDICTIONS_NAME).is_file():
            raise ImageError("Nothing to save yet: run the case first.")
        destination = Path(destination_text).expanduser()
        parent = self.allowed(str(destination.parent))
        source = self.run_state.dicom_source
        baseline = (dicom_baseline(source["identity"], source["ct"], source["tumour_mask"],
                                   source["case_id"]) if dicom else None)
        with atomic_folder(parent / destination.name) as staging:
            shutil.copytree(folder, staging, dirs_exist_ok=True)
            if baseline is not None:
                baseline.write(source["result"], staging, source["case_id"],
                               staging / "report.png")
        return parent / destination.name

    def clinical_fields(self) -> list[dict]:
        """The form's fields: name, label with unit, range or categories."""
        return [{"name": v.name, "label": v.label + (f" ({v.unit})" if v.unit else ""),
                 "hint": (", ".join(v.categories) if v.is_categorical else
                          f"{v.minimum:g} to {v.maximum:g}"),
                 "categories": list(v.categories)} for v in VARIABLES]


def predictions_text(summary: dict) -> str:
    """The predictions as the case report writes them."""
    return "\n".join(prediction_lines(summary)) if summary else ""


def scenarios_text(summary: dict) -> str:
    """One line a scenario: its RECIST and whether it is the scenario's (* = the closest
    drawn, the category not reached), the guidance it took (empty without scenarios)."""
    scenarios = (summary or {}).get("scenarios") or {}
    lines = []
    for name in ordered_scenarios(scenarios):
        item = scenarios[name]
        star = " *" if item.get("obeyed") is False else ""
        reached = OBEYED_TEXT.get(item.get("obeyed"), "")
        lines.append(f"{scenario_label(name) + ':':<22}{item.get('recist')}{star}  "
                     f"({reached}; guidance {item.get('guidance')})")
    if any(name in RECIST_SCENARIOS for name in scenarios):
        lines.append("* not reached: the closest follow-up the model drew")
    return "\n".join(lines)


def real_followup_text(summary: dict) -> str:
    """The real follow-up's measurements and comparison as the case report writes them
    (empty without a real follow-up)."""
    real = (summary or {}).get("real_followup")
    return "\n".join(real_followup_lines(real)) if real else ""


def out_of_distribution_text(summary: dict) -> tuple[str, bool]:
    """(the out-of-distribution flag as the case report writes it, whether it is raised)."""
    return ("\n".join(out_of_distribution_lines(summary, width=70)),
            bool((summary or {}).get("out_of_distribution", {}).get("flagged")))
