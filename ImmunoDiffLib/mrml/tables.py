"""A prediction summary as a table node (Measure, Value as shown, Number). A key "a.b" is
the field b of the summary's section a (e.g. the out-of-distribution flag's), "a.b.c" one
level deeper. A summary with a real follow-up compared (its section "real_followup") gets
that follow-up's rows too; one with scenario follow-ups (its section "scenarios": "if it
responds / if it does not", "if it reaches CR / PR / SD / PD") gets three rows each: the
RECIST category drawn, whether it is the scenario's (or the closest drawn), the guidance."""

from __future__ import annotations

import math

import vtk

TABLE_ROWS = (
    ("response_probability", "Responder probability"),
    ("response_probability_sd", "Responder probability SD"),
    ("predicted_responder", "Predicted responder"),
    ("survival_risk", "Survival risk (log hazard)"),
    ("survival_risk_sd", "Survival risk SD"),
    ("recist", "RECIST category (synthesized)"),
    ("agreement", "Heads agree with the synthesis"),
    ("baseline_lesion_ml", "Tumour volume, baseline (ml)"),
    ("followup_lesion_ml", "Tumour volume, synthesized (ml)"),
    ("lesion_volume_change", "Tumour volume change"),
    ("baseline_diameter_mm", "Longest diameter, baseline (mm)"),
    ("followup_diameter_mm", "Longest diameter, synthesized (mm)"),
    ("lobes_backend", "Lobes from"),
    ("lobes_approximate", "Lobes approximate"),
    ("lobes_method", "Lobes method"),
    ("arithmetic", "Arithmetic of the generation"),
    ("out_of_distribution.flagged", "Out of distribution (unlike the training data)"),
    ("out_of_distribution.score", "Out-of-distribution score (features)"),
    ("out_of_distribution.threshold", "Out-of-distribution threshold"),
    ("out_of_distribution.reasons", "Out-of-distribution reasons"),
    ("change_region.margin_mm", "Change region margin around the lesion (mm)"),
)
# the real follow-up's measurements and its comparison with the synthesized one, after the
# prediction's rows when the summary has them (RealFollowup.summary())
REAL_FOLLOWUP_TABLE_ROWS = (
    ("real_followup.recist", "RECIST category (real follow-up)"),
    ("real_followup.lesion_ml", "Tumour volume, real follow-up (ml)"),
    ("real_followup.diameter_mm", "Longest diameter, real follow-up (mm)"),
    ("real_followup.synthesized_lesion_volume_error_ml",
     "Tumour volume error, synthesized minus real (ml)"),
    ("real_followup.ssim_synthesized_to_real", "SSIM, synthesized vs real follow-up"),
    ("real_followup.ssim_baseline_to_real", "SSIM, baseline vs real follow-up"),
    ("real_followup.alignment.quality.lung_overlap", "Real follow-up alignment: lung overlap"),
)


# the scenarios in the order their rows (and nodes) come: inference/scenarios.py's SCENARIOS,
# then its RECIST_SCENARIOS (not imported: that module needs torch)
OUTCOME_SCENARIOS = ("responder", "non-responder")
RECIST_SCENARIOS = ("CR", "PR", "SD", "PD")
SCENARIO_ORDER = OUTCOME_SCENARIOS + RECIST_SCENARIOS
# how each scenario's "obeyed" reads: RECIST scenarios show the closest follow-up drawn when
# the category was not reached (the report's "*")
OBEYED_TEXT = {True: "yes", False: "no: the closest drawn", None: "not measurable"}


def scenario_label(name: str) -> str:
    """How a scenario is named to the user (its node, its table rows): "if it reaches PR",
    "if responder"."""
    return f"if it reaches {name}" if name in RECIST_SCENARIOS else f"if {name}"


def ordered_scenarios(names) -> list[str]:
    """``names`` in :data:`SCENARIO_ORDER` (unknown names last, as given)."""
    names = list(names)
    return [n for n in SCENARIO_ORDER if n in names] + [n for n in names
                                                         if n not in SCENARIO_ORDER]


def scenario_table_rows(summary: dict) -> tuple:
    """The (key, label) rows of the summary's scenarios, three each (RECIST, obeyed,
    guidance), in :data:`SCENARIO_ORDER`."""
    rows = []
    for name in ordered_scenarios((summary.get("scenarios") or {}).keys()):
        said = scenario_label(name)
        said = said[0].upper() + said[1:]
        obeyed = "category reached" if name in RECIST_SCENARIOS else "scenario obeyed"
        rows += [(f"scenarios.{name}.recist", f"{said}: RECIST of the follow-up"),
                 (f"scenarios.{name}.obeyed", f"{said}: {obeyed}"),
                 (f"scenarios.{name}.guidance", f"{said}: scenario guidance")]
    return tuple(rows)


def _shown(key: str, value) -> str:
    """A value as the table's Value column shows it."""
    if key.startswith("scenarios.") and key.endswith(".obeyed"):
        return OBEYED_TEXT.get(value, str(value))
    return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _value(summary: dict, key: str):
    value = summary
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "; ".join(value) if isinstance(value, list) else value


def table_rows(summary: dict) -> tuple:
    """The (key, label) rows a summary's table has: :data:`TABLE_ROWS`, then
    :data:`REAL_FOLLOWUP_TABLE_ROWS` when a real follow-up was compared, then the scenarios'
    rows (:func:`scenario_table_rows`)."""
    return (TABLE_ROWS + (REAL_FOLLOWUP_TABLE_ROWS if summary.get("real_followup") else ())
            + scenario_table_rows(summary))


def predictions_to_table_node(summary: dict, scene, name: str = "ImmunoDiff predictions",
                              node=None):
    """A table node of a prediction summary: Measure and Value (as shown) as text, and Number
    (a double column: the value where it is a number, NaN where it is not), so the numbers can
    be sorted, plotted or exported as numbers. Rows: :func:`table_rows`."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    table.Initialize()
    measures, values, numbers = vtk.vtkStringArray(), vtk.vtkStringArray(), vtk.vtkDoubleArray()
    measures.SetName("Measure")
    values.SetName("Value")
    numbers.SetName("Number")
    for key, label in table_rows(summary):
        value = _value(summary, key)
        measures.InsertNextValue(label)
        values.InsertNextValue(_shown(key, value))
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        numbers.InsertNextValue(float(value) if numeric else math.nan)
    for column in (measures, values, numbers):
        table.AddColumn(column)
    node.Modified()
    return node
