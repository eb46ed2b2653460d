"""``ImmunoDiffPipeline``: baseline CT + clinical variables + tumour point -> synthesized
follow-up CT, anatomy, response probability, survival risk, RECIST category, uncertainty.

What the radiologist's click in Slicer and the batch command both run. Every step reports
progress and checks the cancel flag; nothing is written here (see :mod:`.predict`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk
import torch

from ..anatomy import Anatomy, segment_anatomy
from ..anatomy.tumour_site import LUNG_MARGIN_MM, tumour_site
from ..bundle import BundleInfo, load_bundle
from ..calibration import Calibration
from ..clinical import ClinicalRecord, encode_clinical, parse_clinical
from ..errors import TumourPointError
from ..imaging import (
    crop_around_point,
    crop_grid,
    denormalise,
    normalise,
    paste_change,
    validate_ct,
)
from ..imaging.labels import label_volume_ml
from ..imaging.lesion import LESION_MIN_HU, drawn_lesion, segment_lesion
from ..imaging.recist import longest_axial_diameter_mm
from ..models import Conditions
from ..models.batch import model_batch
from ..models.response_depth import PR_DEPTH
from ..progress import CancelFlag, ProgressCallback, Task
from ..seeds import torch_generator
from .change_region import constrain_followup
from .out_of_distribution import add_reason, assess, warning_text
from .partial_response import drawn_depth, drawn_to_depth
from .precision import describe, native_bf16, resolve_channels_last
from .sampling import (
    SamplingOptions,
    opposite_scenario,
    repeat_conditions,
    sample,
)
from .scenarios import (
    RECIST_SCENARIOS,
    RESPONSE_RECIST,
    SCENARIOS,
    ScenarioResult,
    depth_ladder,
    measure_followup,
    not_obeyed_reason,
    scenario_tensor,
    synthesize_scenario,
)

PREDICTION_BATCH = 2  # noise draws per forward pass of the prediction heads' features


@dataclass
class Result:
    """Images are SimpleITK (HU); ``followup_ct`` has the baseline's exact geometry and pixel
    type; crops are on the model's grid. Probabilities and risks carry their spread over the
    samples (SD)."""

    followup_ct: sitk.Image
    baseline_crop: sitk.Image
    followup_crop: sitk.Image
    uncertainty_crop: sitk.Image
    anatomy: Anatomy
    tumour_point_lps: tuple[float, float, float]
    response_probability: float
    response_probability_sd: float
    survival_risk: float
    survival_risk_sd: float
    recist: str
    baseline_lesion_ml: float
    followup_lesion_ml: float
    baseline_diameter_mm: float
    followup_diameter_mm: float
    samples: int
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    arithmetic: str = ""  # the denoising steps' precision and layout, e.g. "fp32, channels-last"
    # the generator's own response estimate s from the clinical variables alone (None: the
    # model has no scenario condition): kept in predictions.json for research, never shown
    # beside the heads' probability, since the follow-up shown is drawn under the heads'
    # answer, not under it; and the follow-ups of the given scenarios
    generator_response_estimate: float | None = None
    scenarios: dict[str, ScenarioResult] = field(default_factory=dict)
    # where the follow-up may differ from the baseline (inference/change_region.py): its
    # margin and bounds, and its weight map on the crop grid (1 inside, 0 where unchanged)
    change_region: dict = field(default_factory=dict)
    change_region_crop: sitk.Image | None = None
    # {"flagged", "score", "threshold", "reasons"} (inference/out_of_distribution.py)
    out_of_distribution: dict = field(default_factory=dict)
    # the scenario the follow-up was synthesized under: the heads' answer ("responder" when
    # P >= 0.5), so that image and numbers tell one story; None: a model without scenarios
    # (its follow-up follows the adapter's own estimate)
    response_scenario: str | None = None
    calibrated: bool = False  # the probability went through the bundle's calibration
    # the baseline lesion every follow-up is measured against (crop grid) and its density
    # floor in HU (imaging/lesion.py: -550, lower for a drawn subsolid tumour)
    baseline_lesion_crop: sitk.Image | None = None
    lesion_floor_hu: float = LESION_MIN_HU

    @property
    def predicted_responder(self) -> bool:
        return self.response_probability >= 0.5

    @property
    def synthesized_response(self) -> bool:
        """Whether the synthesized follow-up shows a response (RECIST CR or PR)."""
        return self.recist in RESPONSE_RECIST

    @property
    def agreement(self) -> bool | None:
        """Heads and synthesized follow-up tell the same (None: the lesion is not measurable)."""
        if self.recist == "NE":
            return None
        return self.predicted_responder == self.synthesized_response

    def summary(self) -> dict:
        """JSON-ready predictions (no images)."""
        change = (self.followup_lesion_ml / self.baseline_lesion_ml - 1.0
                  if self.baseline_lesion_ml > 0 else None)
        return {
            "tumour_point_lps": [round(v, 2) for v in self.tumour_point_lps],
            "response_probability": round(self.response_probability, 4),
            "response_probability_sd": round(self.response_probability_sd, 4),
            "probability_calibrated": self.calibrated,
            "predicted_responder": self.predicted_responder,
            "followup_scenario": self.response_scenario,
            "survival_risk": round(self.survival_risk, 4),
            "survival_risk_sd": round(self.survival_risk_sd, 4),
            "recist": self.recist,
            "baseline_lesion_ml": round(self.baseline_lesion_ml, 3),
            "followup_lesion_ml": round(self.followup_lesion_ml, 3),
            "lesion_volume_change": None if change is None else round(change, 4),
            "baseline_diameter_mm": round(self.baseline_diameter_mm, 1),
            "followup_diameter_mm": round(self.followup_diameter_mm, 1),
            "synthesized_response": self.synthesized_response, "agreement": self.agreement,
            "generator_response_estimate": (None if self.generator_response_estimate is None
                                            else round(self.generator_response_estimate, 4)),
            "scenarios": {name: r.summary() for name, r in self.scenarios.items()},
            "change_region": self.change_region,
            "out_of_distribution": self.out_of_distribution,
            "samples": self.samples, "arithmetic": self.arithmetic,
            "lobes_backend": self.anatomy.lobes_backend,
            "vessels_backend": self.anatomy.vessels_backend,
            "lobes_approximate": self.anatomy.lobes_approximate,
            "lobes_method": self.anatomy.lobes_method,
            "warnings": self.warnings, "timings_s": {k: round(v, 2)
                                                     for k, v in self.timings.items()},
        }


def _check_same_grid(anatomy: Anatomy, ct: sitk.Image) -> None:
    for name, image in (("lobes", anatomy.lobes), ("vessels", anatomy.vessels)):
        same = (image.GetSize() == ct.GetSize()
                and np.allclose(image.GetSpacing(), ct.GetSpacing(), atol=1e-4)
                and np.allclose(image.GetOrigin(), ct.GetOrigin(), atol=1e-3)
                and np.allclose(image.GetDirection(), ct.GetDirection(), atol=1e-5))
        if not same:
            raise ValueError(f"The given {name} map is not on the CT's grid (size "
                             f"{image.GetSize()} vs {ct.GetSize()}); resample it to the CT "
                             "first.")


def _crop_image(values_xyz: np.ndarray, point, spec) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(values_xyz.transpose(2, 1, 0),
                                                        np.float32))
    image.CopyInformation(crop_grid(point, spec))
    return image


def _xyz(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32)


class ImmunoDiffPipeline:
    """Load a bundle once, then ``run`` cases."""

    def __init__(self, bundle: str | os.PathLike | None = None, *, model=None,
                 info: BundleInfo | None = None, device: str = "cpu",
                 anatomy_backend: str = "auto", flash_attention: bool = True,
                 anatomy_cache: bool = True, channels_last: bool | None = None):
        """``channels_last``: the model's memory layout; None: the one the device's default
        precision runs fastest in (inference/precision.py)."""
        if model is None:
            if bundle is None:
                raise ValueError("Give a bundle path (or a model with its BundleInfo).")
            model, info = load_bundle(bundle, device, flash_attention=flash_attention)
        self.device = torch.device(device)
        self.channels_last = resolve_channels_last(channels_last, native_bf16(self.device),
                                                   self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        self.model, self.info = model.eval(), info or BundleInfo(model=model.config)
        self.anatomy_backend, self.anatomy_cache = anatomy_backend, anatomy_cache

    def _options_for_this_model(self, options: SamplingOptions) -> SamplingOptions:
        """bf16 and layout decided: the layout the model was put in unless asked otherwise."""
        if options.channels_last is None:
            options = replace(options, channels_last=self.channels_last)
        return options.for_device(self.device)

    def _clinical(self, clinical, warnings: list[str]) -> ClinicalRecord:
        record = clinical if isinstance(clinical, ClinicalRecord) else parse_clinical(
            dict(clinical) if isinstance(clinical, Mapping) else clinical)
        missing = record.missing()
        if missing:
            if self.model.config.condition_dropout <= 0:
                record.require_complete("this model was trained without condition dropout")
            warnings.append(f"Missing clinical variables ({', '.join(missing)}) were left out "
                            "of the condition (the model was trained with condition dropout).")
        return record

    def _check_in_lungs(self, ct: sitk.Image, anatomy: Anatomy, point, allow: bool,
                        warnings: list[str]):
        site = tumour_site(ct, anatomy.lungs, point)
        if site.in_lungs:
            return
        distance = ("no lung within 45 mm" if not np.isfinite(site.distance_mm)
                    else f"{site.distance_mm:.0f} mm from the nearest lung voxel")
        message = (f"Tumour point ({point[0]:.1f}, {point[1]:.1f}, {point[2]:.1f}) mm LPS is "
                   f"more than {LUNG_MARGIN_MM:g} mm from the lungs ({distance}, "
                   f"{anatomy.lobes_backend} segmentation), and the lesion grown from it does "
                   f"not border them ({site.lung_contact:.0%} of its surface). Check the point "
                   "(Slicer shows RAS: negate x and y)")
        if not allow:
            raise TumourPointError(message + ", or allow points outside the lungs.")
        warnings.append(message + "; continued as asked.")

    def head_outputs(self, batch, options: SamplingOptions | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """(logits (draws,), image features (draws, F)) of a model batch, as :meth:`run` reads
        them: the response head's logits (the calibration is fitted on these) and the
        up-block features over the whole crop with the clinical variables left out (the
        out-of-distribution reference is fitted on these: the scan, not the profile)."""
        options = self._options_for_this_model(options or SamplingOptions())
        logits, _, image_features = self._heads(batch, options)
        return logits, image_features

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """P(responder) of the response head's logits: the bundle's calibration when it has
        one, else the head's own sigmoid."""
        calibration = self.info.calibration or Calibration()
        return calibration.probability(logits)

    @torch.inference_mode()
    def _heads(self, batch, options: SamplingOptions):
        """Response logits and log-risks for ``options.prediction_draws`` noise draws, and the
        image features (draws, F): f̂ over the whole crop with the clinical variables left
        out (from the same pass when the heads read them so, else from a second one)."""
        model = self.model
        head_inputs, whole = self._pooled_features(
            batch, model.head_conditions(batch), options)
        if model.config.heads_input == "crop":
            image_conditions = model.encode_conditions(batch, "2", drop_clinical=True)
            whole = self._pooled_features(batch, image_conditions, options)[1]
        logits = model.response_head(head_inputs)
        risk = model.survival_head(head_inputs)
        return logits.cpu().numpy(), risk.cpu().numpy(), whole.cpu().numpy()

    def _pooled_features(self, batch, conditions,
                         options: SamplingOptions) -> tuple[torch.Tensor, torch.Tensor]:
        """(the heads' inputs (draws, H), f̂ over the whole crop (draws, F)) under
        ``conditions`` for ``options.prediction_draws`` noise draws of the baseline."""
        model = self.model
        n = options.prediction_draws
        x_t, t = model.feature_inputs(batch["baseline"], n,
                                      torch_generator(options.seed, "prediction noise"))
        layout = torch.channels_last_3d if options.channels_last else torch.contiguous_format
        x_t = x_t.contiguous(memory_format=layout)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                  enabled=options.bf16)
        inputs, whole = [], []
        for start in range(0, n, PREDICTION_BATCH):  # a few draws at a time: less peak memory
            count = min(PREDICTION_BATCH, n - start)
            draws = repeat_conditions(conditions, count)
            if draws.control is not None:
                draws = Conditions(draws.context,
                                   draws.control.contiguous(memory_format=layout))
            with autocast:
                pair = model.head_inputs(batch, x_t[start:start + count],
                                         t[start:start + count], draws, fused=options.fused)
            inputs.append(pair[0].float())
            whole.append(pair[1].float())
        return torch.cat(inputs), torch.cat(whole)

    def run(self, ct: sitk.Image, clinical, tumour_point, options: SamplingOptions | None = None,
            progress: ProgressCallback | None = None, cancel: CancelFlag = None,
            allow_outside_lungs: bool = False, anatomy: Anatomy | None = None,
            scenarios: bool = False, tumour_mask: sitk.Image | None = None,
            recist_scenarios: bool = False) -> Result:
        """``anatomy``: lobes and vessels already at hand (on ``ct``'s grid), used instead of
        segmenting ``ct``. ``scenarios``: also synthesize the follow-up of the other outcome,
        so that both "if it responds" and "if it does not" are shown (models with a scenario
        condition; the follow-up itself is the scenario the heads chose);
        ``recist_scenarios``: also "if it reaches CR / PR / SD / PD" (inference/scenarios.py).
        ``tumour_mask``: the tumour drawn on ``ct`` (a label map in its space), the lesion the
        generator is told to change; without it, the region grown from the point, which can
        spill into the chest wall or mediastinum a tumour touches: prefer a mask where one
        exists."""
        options = self._options_for_this_model(options or SamplingOptions())
        task, timings, warnings = Task(progress, cancel), {}, []
        started = time.perf_counter()
        validate_ct(ct)
        record = self._clinical(clinical, warnings)
        spec, window = self.info.crop, self.info.window
        crop = crop_around_point(ct, tumour_point, spec)  # checks the point first
        point = crop.centre_lps
        warnings += crop.warnings
        task.report(0.0, "anatomy")
        clock = time.perf_counter()
        if anatomy is None:
            anatomy = segment_anatomy(ct, self.anatomy_backend, cache=self.anatomy_cache,
                                      progress=task.sub(0.0, 0.25).callback(), cancel=cancel)
        else:
            _check_same_grid(anatomy, ct)
        timings["anatomy"] = time.perf_counter() - clock
        warnings += anatomy.warnings
        self._check_in_lungs(ct, anatomy, point, allow_outside_lungs, warnings)

        clock = time.perf_counter()
        baseline_hu = _xyz(crop.image)
        baseline_crop = crop.image
        if tumour_mask is None:  # the lesion grown from the point, at the solid floor
            lesion_before, floor_hu = segment_lesion(baseline_crop, point), LESION_MIN_HU
            condition_lesion = lesion_before
        else:  # the drawn tumour is the one measured, and the one the generator changes
            condition_lesion = crop_around_point(tumour_mask, point, spec, is_label=True).image
            lesion_before, floor_hu = drawn_lesion(baseline_crop, condition_lesion)
        labels = {name: _xyz(crop_around_point(image, point, spec, is_label=True).image)
                  for name, image in (("lobes", anatomy.lobes), ("vessels", anatomy.vessels))}
        encoded = encode_clinical([record], self.info.standardisation)

        def tensor(values):
            return torch.from_numpy(values)[None, None]

        batch = model_batch(tensor(normalise(baseline_hu, window)), tensor(labels["lobes"]),
                            tensor(labels["vessels"]), encoded,
                            tumour=tensor((_xyz(condition_lesion) > 0).astype(np.float32)),
                            device=self.device)
        with torch.inference_mode():
            conditions = self.model.encode_conditions(batch, "2")
        timings["conditions"] = time.perf_counter() - clock
        task.report(0.28, "predictions")
        clock = time.perf_counter()
        logits, risk, image_features = self._heads(batch, options)
        probability = self.probabilities(logits)
        timings["predict"] = time.perf_counter() - clock

        covered = None if crop.covered is None else crop.covered.transpose(2, 1, 0)
        lesion_mask = _xyz(condition_lesion) > 0
        before_mm = longest_axial_diameter_mm(lesion_before)
        measured_lesion = lesion_before  # the follow-ups are measured against this outline
        region = None

        def constrain(values, responding=False):
            nonlocal region
            constrained = constrain_followup(values, baseline_hu, lesion_mask, spec.spacing,
                                             covered, region, responding, floor_hu)
            region = constrained.region
            return constrained

        def measure(constrained):
            image = _crop_image(constrained.mean, point, spec)
            return (image, *measure_followup(image, point, before_mm, baseline_crop,
                                             measured_lesion, floor_hu))

        clock = time.perf_counter()
        decided = "responder" if float(probability.mean()) >= 0.5 else "non-responder"
        scenario_results: dict[str, ScenarioResult] = {}
        if self.model.config.scenario:  # s: responds 1 / 0, or the response's depth
            depths = self.model.config.scenario_depths if self.model.config.scenario_depth \
                else None
            response_from = 0.5 if depths is None else PR_DEPTH
            names = [decided] + ([n for n in SCENARIOS if n != decided] if scenarios else []) \
                + (list(RECIST_SCENARIOS) if recist_scenarios else [])
            share = 0.6 / len(names)
            for index, name in enumerate(names):
                start = 0.3 + share * index
                task.report(start, f"generating the follow-up if it is a {name}")

                # a binary model's follow-up drawn to the depth the heads expect: a
                # response keeps its residual tumour, a non-response no more growth
                drawn = {"depth": None}  # the depth the last attempt was drawn to, if any
                target = None if depths is not None else drawn_depth(
                    name, float(probability.mean()) if name == decided else None,
                    self.model.config.scenario_depths)

                def synthesize(value, attempt, sub, toward_non_response, drop_clinical,
                               target=target, drawn=drawn):
                    with torch.inference_mode():
                        given = self.model.encode_conditions(
                            batch, "2", drop_clinical=drop_clinical,
                            scenario=scenario_tensor(value, self.device))
                    responding = value >= response_from
                    constrained = constrain(
                        self._synthesize(batch, given, None, attempt, sub, cancel, True,
                                         toward_non_response), responding=responding)
                    drawn["depth"] = None
                    if target is None or responding != (target > 0):
                        return constrained
                    # what the draw left beside the kept tumour can read as the other
                    # outcome: then the next version, at last the draw as it is
                    for kept in drawn_to_depth(constrained, baseline_hu, spec.spacing,
                                               target, floor_hu):
                        if (measure(kept)[3] in RESPONSE_RECIST) == responding:
                            drawn["depth"] = target
                            return kept
                    return constrained

                scenario_results[name] = replace(synthesize_scenario(
                    name, synthesize, measure, options, task.sub(start, start + share),
                    depth_ladder(name, depths,
                                 float(probability.mean()) if name == decided else None)),
                    drawn_depth=drawn["depth"])
            chosen = scenario_results[decided].constrained
        else:
            if scenarios or recist_scenarios:
                warnings.append("This model has no response-scenario condition: only the "
                                "clinically conditioned follow-up was synthesized.")
            task.report(0.3, "generating the follow-up")
            with torch.inference_mode():
                unconditional = (self.model.encode_conditions(batch, "2", drop_clinical=True)
                                 if options.guidance_scale != 1.0 else None)
            chosen = constrain(self._synthesize(batch, conditions, unconditional, options,
                                                task.sub(0.3, 0.9), cancel))
        timings["generate"] = time.perf_counter() - clock
        task.report(0.9, "measuring")
        mean_crop = _crop_image(chosen.mean, point, spec)
        spread_crop = _crop_image(chosen.spread, point, spec)
        followup_ct = paste_change(mean_crop, baseline_crop, ct)
        after, after_mm, recist = measure_followup(mean_crop, point, before_mm, baseline_crop,
                                                   measured_lesion, floor_hu)
        flag = assess(self.info.out_of_distribution, lesion_diameter_mm=region.lesion_diameter_mm,
                      lesion_found=not region.lesion_was_empty,
                      padded_fraction=crop.padded_fraction, record=record,
                      standardisation=self.info.standardisation, features=image_features,
                      logits=logits, calibration=self.info.calibration)
        for name, outcome in scenario_results.items():
            if name in SCENARIOS and outcome.obeyed is False:
                add_reason(flag, not_obeyed_reason(name, outcome))
        if flag.flagged:
            warnings.append(warning_text(flag))
        timings["total"] = time.perf_counter() - started
        estimate = (None if conditions.scenario is None  # (a depth model's s is a depth)
                    else float(torch.sigmoid(conditions.response_logit.float()).mean()))
        shown = {n: r for n, r in scenario_results.items()
                 if (scenarios and n in SCENARIOS) or (recist_scenarios and n not in SCENARIOS)}
        result = Result(
            followup_ct=followup_ct, baseline_crop=baseline_crop, followup_crop=mean_crop,
            uncertainty_crop=spread_crop, anatomy=anatomy, tumour_point_lps=point,
            response_probability=float(probability.mean()),
            response_probability_sd=float(probability.std()),
            survival_risk=float(risk.mean()), survival_risk_sd=float(risk.std()),
            recist=recist, baseline_lesion_ml=label_volume_ml(lesion_before),
            followup_lesion_ml=after, baseline_diameter_mm=before_mm,
            followup_diameter_mm=after_mm, samples=options.samples, warnings=warnings,
            timings=timings, arithmetic=describe(options.bf16, options.channels_last),
            generator_response_estimate=estimate, scenarios=shown,
            change_region=chosen.summary(),
            change_region_crop=_crop_image(region.weight, point, spec),
            out_of_distribution=flag.summary(),
            response_scenario=decided if self.model.config.scenario else None,
            calibrated=self.info.calibration is not None,
            baseline_lesion_crop=lesion_before, lesion_floor_hu=floor_hu)
        if result.agreement is False:
            said = "a responder" if result.predicted_responder else "a non-responder"
            shown_text = ("shows a response" if result.synthesized_response
                          else "shows no response")
            warnings.append(
                f"The prediction heads say {said} (P = {result.response_probability:.2f}) but "
                f"the synthesized follow-up {shown_text} (RECIST {recist}): the two disagree; "
                "treat both with caution.")
        task.report(1.0, "done")
        return result

    def _synthesize(self, batch, conditions, unconditional, options, task: Task,
                    cancel: CancelFlag, given_scenario: bool = False,
                    toward_non_response: bool = False) -> np.ndarray:
        """Follow-up samples in HU, (samples, X, Y, Z); a given scenario ("if it responds"
        / "if it does not") is guided against the opposite outcome (toward response only,
        unless ``toward_non_response``)."""
        opposite = (opposite_scenario(self.model, batch, conditions, options,
                                      toward_non_response)
                    if given_scenario else None)
        x0 = sample(self.model, conditions, tuple(batch["baseline"].shape[1:]), options,
                    unconditional, task.callback(), cancel, opposite=opposite)
        followup = self.model.followup_from(x0, batch["baseline"].expand_as(x0))
        return denormalise(followup[:, 0].cpu().numpy(), self.info.window)
