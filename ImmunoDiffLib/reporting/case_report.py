"""The per-case PNG report: baseline | synthesized follow-up | difference | uncertainty through
the tumour, and the predictions beside them (and whether the case is unlike the training
data, in red when it is); with response scenarios, a second row with the follow-ups "if it
responds" and "if it does not" and their differences from the baseline, and with RECIST
scenarios a row "if it reaches CR / PR / SD / PD". The difference maps outline the region the
follow-up may differ in (inference/change_region.py)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import SimpleITK as sitk

from .figures import LUNG_WINDOW, crop_views, save_figure, subplots

OUTCOME_SCENARIOS = ("responder", "non-responder")  # inference/scenarios.py's SCENARIOS
DISCLAIMER = "Research use only; model trained on simulated data. Not for clinical decisions."


def _axial(image: sitk.Image):
    """The middle axial plane of a crop and its imshow extent (mm)."""
    _, values, extent, _, _ = crop_views(image)[0]
    return values, extent


DIFFERENCE_HU = 200  # the difference maps' diverging window, ± HU
FLAGGED_COLOUR, UNFLAGGED_COLOUR = "red", "dimgray"


def save_case_report(result, path: str | os.PathLike, title: str = "",
                     overwrite: bool = True, real_followup=None) -> Path:
    """``result``: a :class:`~ImmunoDiffLib.inference.pipeline.Result`; ``real_followup``: its
    :class:`~ImmunoDiffLib.inference.followup_comparison.RealFollowup`, shown in a last row
    (baseline | synthesized | real follow-up aligned | real minus baseline | measurements)."""
    baseline, extent = _axial(result.baseline_crop)
    followup, _ = _axial(result.followup_crop)
    region = (None if getattr(result, "change_region_crop", None) is None
              else _axial(result.change_region_crop)[0])
    spread, _ = _axial(result.uncertainty_crop)
    scenarios = [(n, r) for n, r in result.scenarios.items() if n in OUTCOME_SCENARIOS]
    categories = [(n, r) for n, r in result.scenarios.items() if n not in OUTCOME_SCENARIOS]
    rows = 1 + bool(scenarios) + bool(categories) + (real_followup is not None)
    figure, axes = subplots(rows, 5, figsize=(21, 4.6 * rows), squeeze=False,
                                gridspec_kw={"width_ratios": [1, 1, 1, 1, 0.9]})
    top = axes[0]
    _ct(top[0], baseline, extent, "baseline CT")
    _ct(top[1], followup, extent, f"synthesized follow-up (mean of {result.samples})")
    _difference(figure, top[2], followup - baseline, extent,
                "difference (HU, red = denser)", region)
    shown = top[3].imshow(spread, cmap="magma", vmin=0, vmax=max(float(spread.max()), 1.0),
                          extent=extent)
    top[3].set_title("uncertainty (SD over samples, HU)" if result.samples > 1 else
                     "uncertainty: needs 2+ samples (--samples)")
    figure.colorbar(shown, ax=top[3], fraction=0.046)
    if scenarios:
        bottom = axes[1]
        for index, (name, scenario) in enumerate(sorted(scenarios)[::-1][:2]):
            values, _ = _axial(scenario.followup_crop)
            _ct(bottom[2 * index], values, extent,
                f"if {name.replace('-', ' ')}: {scenario.recist}{_not_reached(scenario)}")
            _difference(figure, bottom[2 * index + 1], values - baseline, extent,
                        f"if {name.replace('-', ' ')}: difference", region)
        bottom[4].axis("off")
        bottom[4].text(0.0, 0.95, "Response scenarios:\nthe same model, told the\n"
                       "outcome. The follow-up\nabove is the one the\nprediction chose "
                       f"({result.response_scenario or 'its own estimate'})",
                       va="top", fontsize=10, family="monospace")
    if categories:
        row = axes[1 + bool(scenarios)]
        for index, (name, scenario) in enumerate(categories[:4]):
            values, _ = _axial(scenario.followup_crop)
            _ct(row[index], values, extent, f"if it reaches {name}: "
                                            f"{scenario.recist}{_not_reached(scenario)}")
        row[4].axis("off")
        row[4].text(0.0, 0.95, "RECIST scenarios:\nthe closest follow-up of\neach category "
                    "the\nmodel could draw\n(* not reached)", va="top", fontsize=10,
                    family="monospace")
    if real_followup is not None:
        _real_followup_row(figure, axes[-1], baseline, followup, extent, real_followup)
    for axis in [a for row in axes for a in row[:4] if a.has_data()]:
        axis.plot(result.tumour_point_lps[0], result.tumour_point_lps[1], "+", color="yellow",
                  ms=10)
        axis.set_xlabel("x (mm, patient left ->)")
    summary = result.summary()
    lines = prediction_lines(summary)
    top[4].axis("off")
    top[4].text(0.0, 0.97, "\n".join(lines), va="top", fontsize=9.5, family="monospace")
    _out_of_distribution(top[4], summary, 0.97 - 0.05 * (len(lines) + 0.5))
    top[4].text(0.0, 0.0, DISCLAIMER, va="bottom", fontsize=7, wrap=True, color="firebrick")
    figure.suptitle(title or "ImmunoDiff prediction")
    return save_figure(figure, path, overwrite, dpi=90)


def _not_reached(scenario) -> str:
    return " *" if scenario.obeyed is False else ""


def _real_followup_row(figure, row, baseline, followup, extent, real_followup) -> None:
    real, _ = _axial(real_followup.crop)
    _ct(row[0], baseline, extent, "baseline CT")
    _ct(row[1], followup, extent, "synthesized follow-up")
    _ct(row[2], real, extent, f"real follow-up, aligned: {real_followup.recist}")
    _difference(figure, row[3], real - baseline, extent, "real follow-up: difference")
    row[4].axis("off")
    row[4].text(0.0, 0.95, "\n".join(real_followup_lines(real_followup.summary())), va="top",
                fontsize=9.5, family="monospace")


def real_followup_lines(summary: dict) -> list[str]:
    """A real follow-up's measurements and its comparison with the synthesized one
    (:meth:`~ImmunoDiffLib.inference.followup_comparison.RealFollowup.summary`) as lines of
    text."""
    quality = summary["alignment"].get("quality")
    aligned = (f"alignment: lungs {quality['lung_overlap']:.2f}, folded "
               f"{quality['folded_fraction']:.1%}" if quality
               else f"alignment: {summary['alignment']['mode']}")
    return [
        "Real follow-up (aligned)",
        f"RECIST              {summary['recist']}",
        f"lesion              {summary['lesion_ml']:.1f} mL, {summary['diameter_mm']:.0f} mm",
        f"synth. volume error {summary['synthesized_lesion_volume_error_ml']:+.1f} mL",
        f"SSIM synth. / real  {summary['ssim_synthesized_to_real']:.2f}",
        f"SSIM baseline/real  {summary['ssim_baseline_to_real']:.2f}",
        aligned]


def _ct(axis, values, extent, title: str) -> None:
    axis.imshow(values, cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1], extent=extent)
    axis.set_title(title)


def _difference(figure, axis, values, extent, title: str, region=None) -> None:
    shown = axis.imshow(values, cmap="RdBu_r", vmin=-DIFFERENCE_HU, vmax=DIFFERENCE_HU,
                        extent=extent)
    if region is not None and (region > 0).any() and not (region > 0).all():
        axis.contour(region > 0, levels=[0.5], colors="dimgray", linewidths=0.8,
                     linestyles="dashed", extent=extent, origin="upper")
    axis.set_title(title)
    figure.colorbar(shown, ax=axis, fraction=0.046)


def _out_of_distribution(axis, summary: dict, top: float, fontsize: float = 9.5) -> None:
    lines = out_of_distribution_lines(summary)
    if lines:
        flagged = bool(summary.get("out_of_distribution", {}).get("flagged"))
        axis.text(0.0, top, "\n".join(lines), va="top", fontsize=fontsize, family="monospace",
                  color=FLAGGED_COLOUR if flagged else UNFLAGGED_COLOUR,
                  fontweight="bold" if flagged else "normal")


def out_of_distribution_lines(summary: dict, width: int = 44) -> list[str]:
    """The out-of-distribution flag of :meth:`Result.summary` as lines of text (none for a
    summary without one): the verdict, then each reason, wrapped to ``width``."""
    flag = summary.get("out_of_distribution")
    if not flag:
        return []
    score = flag.get("score")
    said = ("" if score is None else
            f" (score {score:.1f}, threshold {flag.get('threshold') or float('nan'):.1f})")
    lines = [("OUT OF DISTRIBUTION" if flag["flagged"] else "Within the training data")
             + said]
    for reason in flag.get("reasons", []):
        lines += textwrap.wrap(reason, width, initial_indent="- ", subsequent_indent="  ")
    return lines


def prediction_lines(summary: dict) -> list[str]:
    """The predictions of :meth:`Result.summary` as lines of text for a figure."""
    change = summary["lesion_volume_change"]
    return [
        f"Responder probability: {summary['response_probability']:.2f} "
        f"± {summary['response_probability_sd']:.2f}"
        + (" (calibrated)" if summary.get("probability_calibrated") else ""),
        f"Prediction: {'responder' if summary['predicted_responder'] else 'non-responder'}"
        + (" (the follow-up shown)" if summary.get("followup_scenario") else ""),
        f"Survival risk (log hazard): {summary['survival_risk']:+.2f} "
        f"± {summary['survival_risk_sd']:.2f}",
        f"RECIST (synthesized): {summary['recist']}"
        + {True: " - agrees", False: " - DISAGREES", None: ""}[summary.get("agreement")],
        f"Lesion: {summary['baseline_lesion_ml']:.1f} -> {summary['followup_lesion_ml']:.1f} ml"
        + ("" if change is None else f" ({change:+.0%})"),
        f"Diameter: {summary['baseline_diameter_mm']:.0f} -> "
        f"{summary['followup_diameter_mm']:.0f} mm",
        f"Anatomy: {summary['lobes_backend']} lobes"
        + ((f" (approximate: {summary.get('lobes_method', 'geometric')})")
           if summary["lobes_approximate"] else ""),
        f"Time: {summary['timings_s'].get('total', float('nan')):.1f} s"
        + (f" ({summary['arithmetic']})" if summary.get("arithmetic") else ""),
    ]


REVIEW_TITLES = {"baseline": "baseline + lobes/vessels", "synthesized": "synthesized follow-up",
                 "difference": "difference (-200..+200 HU)"}


def save_review_figure(panels: dict, summary: dict, path: str | os.PathLike,
                       title: str = "", caption: str = "", overwrite: bool = True) -> Path:
    """The side-by-side review as one PNG: a row per orientation of the rendered slice views
    (``panels``: {(orientation, panel): (H, W, 3) uint8}, as
    :func:`ImmunoDiffLib.mrml.views.render_review` returns), and the predictions beside them."""
    orientations = list(dict.fromkeys(o for o, _ in panels))
    kinds = [k for k in REVIEW_TITLES if any((o, k) in panels for o in orientations)]
    figure, axes = subplots(len(orientations), len(kinds) + 1, squeeze=False,
                                figsize=(4.2 * len(kinds) + 3.4, 4.4 * len(orientations)),
                                gridspec_kw={"width_ratios": [1] * len(kinds) + [0.8]})
    for row, orientation in enumerate(orientations):
        for column, kind in enumerate(kinds):
            axis = axes[row][column]
            axis.imshow(panels[(orientation, kind)], interpolation="nearest")
            axis.set_title(f"{REVIEW_TITLES[kind]} ({orientation.lower()})", fontsize=10)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row][-1].axis("off")
    lines = prediction_lines(summary)
    axes[0][-1].text(0.0, 0.95, "\n".join(lines), va="top", fontsize=9,
                     family="monospace")
    _out_of_distribution(axes[0][-1], summary, 0.95 - 0.045 * (len(lines) + 0.5), 9)
    axes[-1][-1].text(0.0, 0.02, DISCLAIMER, va="bottom", fontsize=7, wrap=True,
                      color="firebrick")
    figure.suptitle(title or "ImmunoDiff side-by-side review")
    if caption:
        figure.text(0.01, 0.005, caption, fontsize=8, color="dimgray")
    return save_figure(figure, path, overwrite, dpi=90, rect=(0, 0.03 if caption else 0, 1, 1))
