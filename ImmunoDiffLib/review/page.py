"""The review page: Slicer's own slice views (trame-slicer) beside a form, bound to a
:class:`~ImmunoDiffLib.review.session.ReviewSession`.

Left: the CT (click the tumour to place the point); right: the synthesized follow-up, linked,
at the same window/level; with a real follow-up CT given (a path or an upload, as the CT), a
third view: the real follow-up, aligned to the baseline by the run, linked, its measurements
beside the predictions. The form holds the CT path or an upload, the clinical variables
(units, ranges, "unknown", NLR computed, one message per bad field), the anatomy backend and
samples/steps/seed, the scenarios (response, RECIST; each shown beside the baseline on
request), Run with a progress bar and Cancel, the overlay and orientation choices,
the predictions and warnings, and Save (with "also DICOM", ticked when the CT was a DICOM
series, the case's ``dicom/`` folder in that series' study). Work runs in the session's worker
thread; a task on the server's event loop polls it, so the page stays responsive.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path

from trame.app import asynchronous, get_server
from trame.widgets import html
from trame.widgets import vuetify3 as v3
from trame_slicer import module as trame_slicer_module
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition
from trame_vuetify.ui.vuetify3 import SinglePageLayout

from ..anatomy import BACKENDS
from ..errors import ImmunoDiffError
from ..inference.sampling import SamplingOptions
from ..mrml.tables import scenario_label
from ..mrml.views import REAL_FOLLOWUP_VIEWS, SIDE_BY_SIDE_VIEWS
from .dicom_identity import dicom_outputs_available
from .session import (
    ReviewSession,
    field_problems,
    out_of_distribution_text,
    predictions_text,
    real_followup_text,
    scenarios_text,
)
from .uploads import named_uploads

POLL_SECONDS = 0.25
PAGE_TITLE = "ImmunoDiff review"  # the browser tab's title
# the extension's icon: beside the library in the source tree and in Slicer's install
ICON = Path(__file__).resolve().parents[2] / "Resources" / "Icons" / "ImmunoDiff.png"
ORIENTATIONS = ("Axial", "Coronal", "Sagittal")
# the page's layouts by the views the session fills (ReviewSession.review_views)
LAYOUTS = {SIDE_BY_SIDE_VIEWS: "review", REAL_FOLLOWUP_VIEWS: "review with real follow-up"}
NO_FOLLOWUP = "no real follow-up (optional)"
SYNTHESIZED = "synthesized follow-up"  # the first choice of what is shown beside the baseline


class ReviewPage:
    """The server, the Slicer views and the page of one review."""

    def __init__(self, bundle: Path, allowed_roots: list[Path], ct: Path | None = None,
                 anatomy_backend: str = "auto", work_dir: Path | None = None,
                 server_name: str | None = None):
        # offscreen OpenGL without a display (before the first render window exists)
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
        self.server = get_server(server_name, client_type="vue3")
        self.server.enable_module(trame_slicer_module)
        self.app = SlicerApp()
        register_rca_factories(self.app.view_manager, self.server)
        self.layout = LayoutManager(self.app.scene, self.app.view_manager, self.server)
        for names, layout_id in LAYOUTS.items():  # every view made now, shown by its layout
            self.layout.register_layout(layout_id, Layout(
                LayoutDirection.Horizontal,
                [ViewLayoutDefinition.slice_view("Axial", label=name) for name in names]))
        self.layout.set_layout(LAYOUTS[SIDE_BY_SIDE_VIEWS])
        self.session = ReviewSession(self.app.scene, allowed_roots, bundle, anatomy_backend,
                                     work_dir)
        self.fiducial = None
        self._init_state(ct)
        self._build_ui()
        for view in self.app.view_manager.get_slice_views():
            if view.name == SIDE_BY_SIDE_VIEWS[0]:
                view.interactor().AddObserver("LeftButtonPressEvent",
                                              lambda interactor, _e, v=view: self._clicked(
                                                  v, interactor))
        if ct is not None:
            self.server.controller.on_server_ready.add(lambda **_: self.load())

    # --- state ------------------------------------------------------------------------------
    def _init_state(self, ct: Path | None) -> None:
        state = self.server.state
        state.ct_path = "" if ct is None else str(ct)
        state.load_error = ""
        state.ct_info = "no CT loaded"
        state.point_text = "click the tumour in the left view"
        state.goto, state.goto_error = "", ""
        state.mask_path, state.mask_error = "", ""
        state.followup_path, state.followup_error, state.followup_info = "", "", NO_FOLLOWUP
        self.fields = self.session.clinical_fields()
        for item in self.fields:
            state[f"clinical_{item['name']}"] = ""
        state.clinical_errors = {}
        state.nlr_computed = ""
        state.backends = list(BACKENDS)
        state.backend = self.session.anatomy_backend
        defaults = SamplingOptions()
        state.samples, state.steps, state.seed = defaults.samples, defaults.steps, 0
        state.scenarios, state.recist_scenarios = False, False
        state.followup_choices, state.shown_followup = [SYNTHESIZED], SYNTHESIZED
        state.scenarios_text = ""
        state.can_run = False
        state.running = False
        state.progress = 0
        state.run_message = ""
        state.run_error = ""
        state.predictions = ""
        state.out_of_distribution, state.out_of_distribution_flagged = "", False
        state.warnings = ""
        state.real_followup = ""
        state.has_result = False
        state.overlay = "none"  # the baseline and the follow-up themselves, side by side
        state.anatomy_visible = False
        state.orientation = "Axial"
        state.save_path = ""
        state.save_dicom = False  # ticked when a DICOM series is loaded (_after_load)
        state.save_message = ""
        state.change(*(f"clinical_{f['name']}" for f in self.fields))(self._clinical_changed)
        state.change("overlay")(self._overlay_changed)
        state.change("anatomy_visible")(self._anatomy_changed)
        state.change("orientation")(self._orientation_changed)
        state.change("shown_followup")(self._shown_followup_changed)
        state.change("upload")(self._uploaded)
        state.change("followup_upload")(self._followup_uploaded)

    def _update_can_run(self) -> None:
        state = self.server.state
        state.can_run = (self.session.volume_node is not None
                         and self.session.point_ras is not None
                         and not state.clinical_errors and not state.running)

    def clinical_values(self) -> dict:
        return {f["name"]: self.server.state[f"clinical_{f['name']}"] for f in self.fields}

    def _clinical_changed(self, **_):
        clinical = self.clinical_values()
        problems, nlr = field_problems(clinical)
        state = self.server.state
        state.clinical_errors = problems
        state.nlr_computed = "" if nlr is None or str(clinical.get("nlr", "")).strip() else (
            f"NLR computed from ANC/ALC: {nlr:.2f}")
        self._update_can_run()

    # --- input ------------------------------------------------------------------------------
    def load(self, path: str | None = None) -> None:
        """Load the CT at ``path``: the text field's value as the click sent it (its own copy
        of the state can still be on its way), else the state's."""
        state = self.server.state
        try:
            node = self.session.load(state.ct_path if path is None else path)
        except ImmunoDiffError as error:
            state.load_error = str(error)
            return
        self._after_load(node)

    def _uploaded(self, upload, **_):
        if not upload:
            return
        try:
            node = self.session.load_uploads(named_uploads(upload))
        except ImmunoDiffError as error:
            self.server.state.load_error = str(error)
            return
        self._after_load(node)

    def _after_load(self, node) -> None:
        state = self.server.state
        state.load_error = ""
        size = " x ".join(str(v) for v in node.GetImageData().GetDimensions())
        state.ct_info = f"{node.GetName()}: {size} voxels, loaded {time.strftime('%H:%M:%S')}"
        state.has_result = False
        state.predictions = state.warnings = state.run_message = state.run_error = ""
        state.real_followup = ""
        state.out_of_distribution, state.out_of_distribution_flagged = "", False
        state.point_text = "click the tumour in the left view"
        state.followup_info, state.followup_error = NO_FOLLOWUP, ""  # a new patient's CT
        # DICOM outputs by default when they can join the CT's own study
        state.save_dicom = self.session.identity.is_dicom and dicom_outputs_available()
        for view in self.app.view_manager.get_slice_views():
            view.set_background_volume_id(node.GetID())
            view.set_foreground_volume_id(None)
        self._apply_layout()
        self.app.display_manager.reset_views()
        self._update_can_run()

    # --- the real follow-up (optional) --------------------------------------------------------
    def load_followup(self, path: str | None = None) -> None:
        state = self.server.state
        try:
            node = self.session.load_followup(state.followup_path if path is None else path)
        except ImmunoDiffError as error:
            state.followup_error = str(error)
            return
        self._after_followup_load(node)

    def _followup_uploaded(self, followup_upload, **_):
        if not followup_upload:
            return
        try:
            node = self.session.load_followup_uploads(named_uploads(followup_upload))
        except ImmunoDiffError as error:
            self.server.state.followup_error = str(error)
            return
        self._after_followup_load(node)

    def _after_followup_load(self, node) -> None:
        """The real follow-up as scanned in the right view until a run aligns it."""
        state = self.server.state
        size = " x ".join(str(v) for v in node.GetImageData().GetDimensions())
        state.followup_error = ""
        state.followup_info = (f"{node.GetName()}: {size} voxels; the run aligns it to the "
                               "CT and compares it with the synthesized follow-up")
        for view in self.app.view_manager.get_slice_views():
            if view.name == REAL_FOLLOWUP_VIEWS[-1]:
                view.set_background_volume_id(node.GetID())
                view.set_foreground_volume_id(None)
        self._apply_layout()

    def clear_followup(self) -> None:
        self.session.clear_followup()
        self.server.state.followup_info, self.server.state.followup_error = NO_FOLLOWUP, ""
        self._apply_layout()

    def _apply_layout(self) -> None:
        """Two views, or three with a real follow-up (ReviewSession.review_views)."""
        self.layout.set_layout(LAYOUTS[self.session.review_views()])

    def go_to(self, text: str | None = None) -> None:
        """Centre both views on a typed RAS point (e.g. a finding from the report)."""
        state = self.server.state
        try:
            point = [float(v) for v in (state.goto if text is None else text)
                     .replace(",", " ").split()]
            if len(point) != 3:
                raise ValueError
        except ValueError:
            state.goto_error = "three numbers: R A S in mm, e.g. -52.6 95.9 -256.5"
            return
        state.goto_error = ""
        for view in self.app.view_manager.get_slice_views():
            view.get_view_node().JumpSliceByCentering(*point)

    def _clicked(self, view, interactor) -> None:
        if self.session.volume_node is None or self.server.state.running:
            return
        x, y = interactor.GetEventPosition()
        self.session.set_point(view.get_view_node().GetXYToRAS().MultiplyPoint((x, y, 0, 1))[:3])
        with self.server.state:
            self._show_point("tumour point (RAS mm)")

    def use_mask(self, path: str | None = None) -> None:
        """The tumour from a label map: its centroid, and the drawn tumour for the run."""
        state = self.server.state
        try:
            self.session.point_from_mask(state.mask_path if path is None else path)
        except ImmunoDiffError as error:
            state.mask_error = str(error)
            return
        state.mask_error = ""
        for view in self.app.view_manager.get_slice_views():
            view.get_view_node().JumpSliceByCentering(*self.session.point_ras)
        self._show_point("tumour point from the mask's centre (RAS mm)")

    def _show_point(self, label: str) -> None:
        ras = self.session.point_ras
        if self.fiducial is None:
            self.fiducial = self.app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode",
                                                             "Tumour point")
        self.fiducial.RemoveAllControlPoints()
        self.fiducial.AddControlPoint(*ras)
        self.server.state.point_text = f"{label}: " + ", ".join(f"{v:.2f}" for v in ras)
        self._update_can_run()

    # --- the run ----------------------------------------------------------------------------
    def run(self) -> None:
        state = self.server.state
        try:
            options = SamplingOptions(samples=int(state.samples), steps=int(state.steps),
                                      seed=int(state.seed))
            self.session.anatomy_backend = state.backend
            self.session.start(self.clinical_values(), options,
                               scenarios=bool(state.scenarios),
                               recist_scenarios=bool(state.recist_scenarios))
        except (ImmunoDiffError, ValueError) as error:
            state.run_error = str(error)
            return
        state.running, state.run_error, state.progress = True, "", 0
        self._update_can_run()
        asynchronous.create_task(self._follow())

    def cancel(self) -> None:
        self.session.cancel()
        self.server.state.run_message = "cancelling"

    async def _follow(self) -> None:
        """Mirror the worker's progress into the page until it ends, then show the result."""
        while not self.session.collect():
            with self.server.state as state:
                state.progress = round(100 * self.session.run_state.fraction)
                state.run_message = self.session.run_state.message
            await asyncio.sleep(POLL_SECONDS)
        result = self.session.run_state
        with self.server.state as state:
            state.running = False
            state.progress = round(100 * result.fraction)
            state.run_message, state.run_error = result.message, result.error
            state.has_result = result.folder is not None
            state.predictions = predictions_text(result.summary)
            (state.out_of_distribution,
             state.out_of_distribution_flagged) = out_of_distribution_text(result.summary)
            state.warnings = "\n".join(result.summary.get("warnings", []))
            state.real_followup = real_followup_text(result.summary)
            state.scenarios_text = scenarios_text(result.summary)
            state.followup_choices = [SYNTHESIZED] + [
                scenario_label(n) for n in self.session.scenario_names()]
            state.shown_followup = SYNTHESIZED
            self._update_can_run()
            self._apply_layout()
        if result.folder is not None:
            self._overlay_changed(self.server.state.overlay)
            self._anatomy_changed(self.server.state.anatomy_visible)

    # --- results ----------------------------------------------------------------------------
    def _overlay_changed(self, overlay, **_):
        self.session.show_overlay(None if overlay == "none" else overlay)

    def _shown_followup_changed(self, shown_followup, **_):
        """The synthesized follow-up, or a scenario's, beside the baseline."""
        if not self.session.nodes:
            return
        scenario = dict(zip(self.server.state.followup_choices, [
            None, *self.session.scenario_names()], strict=False)).get(shown_followup)
        self.session.show_scenario(scenario)
        if scenario is None:
            self._overlay_changed(self.server.state.overlay)

    def _anatomy_changed(self, anatomy_visible, **_):
        self.session.show_anatomy(bool(anatomy_visible))

    def _orientation_changed(self, orientation, **_):
        for view in self.app.view_manager.get_slice_views():
            view.set_orientation(orientation)
        self.app.display_manager.reset_views()  # fit the new plane to the views
        if self.session.point_ras is not None:
            for view in self.app.view_manager.get_slice_views():
                view.get_view_node().JumpSliceByCentering(*self.session.point_ras)

    def save(self) -> None:
        state = self.server.state
        try:
            saved = self.session.save(state.save_path, dicom=bool(state.save_dicom))
            state.save_message = f"saved to {saved}" + (" (with dicom/)" if state.save_dicom
                                                         else "")
        except (ImmunoDiffError, OSError) as error:
            state.save_message = str(error)

    # --- the page ---------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.server.state.trame__title = PAGE_TITLE
        if ICON.is_file():  # a data URL: the page needs no network for its icon
            self.server.state.trame__favicon = ("data:image/png;base64,"
                                                + base64.b64encode(ICON.read_bytes()).decode())
        with SinglePageLayout(self.server) as ui:
            ui.title.set_text("ImmunoDiff review (research use only)")
            ui.footer.hide()
            with ui.content:
                with html.Div(style="display:flex;height:calc(100vh - 64px);width:100%;"):
                    with html.Div(style="flex:1 1 auto;height:100%;min-width:0;",
                                  id="views"):
                        self.layout.initialize_layout_grid(ui)
                    with html.Div(style="width:400px;height:100%;overflow-y:auto;"
                                        "padding:8px;", id="form"):
                        self._input_panel()
                        self._clinical_panel()
                        self._run_panel()
                        self._result_panel()
        self.ui = ui

    def _input_panel(self) -> None:
        v3.VTextField(v_model=("ct_path",), label="CT file or DICOM folder", id="ct-path",
                      density="compact", error_messages=("load_error ? [load_error] : []",))
        v3.VBtn("Load", click=(self.load, "[ct_path]"), id="load", size="small")
        v3.VFileInput(v_model=("upload", None), multiple=True, id="upload",
                      label="or upload a CT file, a DICOM series' files or a .zip of them",
                      density="compact")
        v3.VTextField(v_model=("goto",), label="go to (R A S, mm)", id="goto",
                      density="compact", error_messages=("goto_error ? [goto_error] : []",))
        v3.VBtn("Go", click=(self.go_to, "[goto]"), id="goto-button", size="small")
        v3.VTextField(v_model=("mask_path",), label="or the tumour as a label map file",
                      id="mask-path", density="compact",
                      error_messages=("mask_error ? [mask_error] : []",))
        v3.VBtn("Use mask", click=(self.use_mask, "[mask_path]"), id="use-mask", size="small")
        html.Div("{{ ct_info }}", id="ct-info", style="font-size:12px;")
        html.Div("{{ point_text }}", id="point")
        self._followup_panel()

    def _followup_panel(self) -> None:
        """The optional real follow-up CT: a path or an upload, as the CT."""
        v3.VTextField(v_model=("followup_path",), label="real follow-up CT (optional): file or "
                      "DICOM folder", id="followup-path", density="compact",
                      error_messages=("followup_error ? [followup_error] : []",))
        v3.VBtn("Load follow-up", click=(self.load_followup, "[followup_path]"),
                id="load-followup", size="small")
        v3.VBtn("Remove follow-up", click=self.clear_followup, id="clear-followup",
                size="small")
        v3.VFileInput(v_model=("followup_upload", None), multiple=True, id="followup-upload",
                      label="or upload the real follow-up: a CT file, a DICOM series' files "
                            "or a .zip of them", density="compact")
        html.Div("{{ followup_info }}", id="followup-info", style="font-size:12px;")

    def _clinical_panel(self) -> None:
        with v3.VRow(dense=True):
            for item in self.fields:
                name = item["name"]
                with v3.VCol(cols=6):
                    v3.VTextField(v_model=(f"clinical_{name}",), label=item["label"],
                                  hint=item["hint"], placeholder="unknown", density="compact",
                                  persistent_hint=True, id=f"clinical-{name}",
                                  error_messages=(f"clinical_errors.{name} ? "
                                                  f"[clinical_errors.{name}] : []",))
        html.Div("{{ nlr_computed }}", id="nlr")
        html.Div("{{ clinical_errors.form }}", v_if="clinical_errors.form", id="form-error",
                 style="color:#b00020;")

    def _run_panel(self) -> None:
        v3.VSelect(v_model=("backend",), items=("backends",), label="anatomy backend",
                   density="compact")
        with v3.VRow(dense=True):
            for name in ("samples", "steps", "seed"):
                with v3.VCol(cols=4):
                    v3.VTextField(v_model=(name,), label=name, type="number",
                                  density="compact", id=name)
        v3.VCheckbox(v_model=("scenarios",), label='also "if it responds" and "if it does not"',
                     density="compact", id="scenarios")
        v3.VCheckbox(v_model=("recist_scenarios",), label="RECIST scenarios (CR/PR/SD/PD)",
                     density="compact", id="recist-scenarios")
        v3.VBtn("Run", click=self.run, disabled=("!can_run",), id="run", color="primary",
                size="small")
        v3.VBtn("Cancel", click=self.cancel, disabled=("!running",), id="cancel",
                size="small")
        v3.VProgressLinear(model_value=("progress",), height=8, id="progress")
        html.Div("Busy: a case is running on this server (every open page sees it); wait "
                 "for it or cancel it.", v_if="running", id="busy", style="font-size:12px;")
        html.Div("{{ run_message }}", id="run-message")
        html.Div("{{ run_error }}", id="run-error", style="color:#b00020;white-space:pre-wrap;")

    def _result_panel(self) -> None:
        with html.Div(v_show="has_result"):
            with v3.VRadioGroup(v_model=("overlay",), inline=True, density="compact",
                                id="overlay-choice"):
                for value in ("none", "difference", "uncertainty"):
                    v3.VRadio(label=value, value=value, id=f"overlay-{value}")
            v3.VSwitch(v_model=("anatomy_visible",), label="lobes and vessels",
                       density="compact", id="anatomy")
            with v3.VBtnToggle(v_model=("orientation",), density="compact", mandatory=True):
                for orientation in ORIENTATIONS:
                    v3.VBtn(orientation.lower(), value=orientation,
                            id=f"orientation-{orientation.lower()}")
            v3.VSelect(v_model=("shown_followup",), items=("followup_choices",),
                       label="beside the baseline", density="compact", id="shown-followup",
                       v_show="followup_choices.length > 1")
            html.Pre("{{ predictions }}", id="predictions", style="font-size:12px;")
            html.Pre("{{ scenarios_text }}", v_if="scenarios_text", id="scenarios-text",
                     style="font-size:12px;")
            html.Pre("{{ real_followup }}", v_if="real_followup", id="real-followup",
                     style="font-size:12px;")
            html.Pre("{{ out_of_distribution }}", id="out-of-distribution",
                     style=("out_of_distribution_flagged ? 'font-size:12px;color:#d00000;"
                            "font-weight:bold;white-space:pre-wrap;' : 'font-size:12px;"
                            "color:#555;white-space:pre-wrap;'",))
            html.Pre("{{ warnings }}", id="warnings", style="font-size:11px;color:#8a5a00;"
                                                         "white-space:pre-wrap;")
            v3.VTextField(v_model=("save_path",), label="save the case folder to",
                          density="compact", id="save-path")
            v3.VCheckbox(v_model=("save_dicom",), label="also DICOM (dicom/: follow-up series, "
                         "SEG, SR, in the CT's study)", density="compact", id="save-dicom")
            v3.VBtn("Save", click=self.save, id="save", size="small")
            html.Div("{{ save_message }}", id="save-message")

    def start(self, port: int, host: str = "127.0.0.1", open_browser: bool = False) -> None:
        self.server.start(port=port, host=host, open_browser=open_browser,
                          show_connection_info=False)
