"""A prediction summary as a table node (Measure, Value as shown, Number). A key "a.b" is
the field b of the summary's section a (e.g. the out-of-distribution flag's), "a.b.c" one
level deeper. A summary with a real follow-up compared (its section "real_followup") gets
that follow-up's rows too."""

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
    ("generator_response_estimate", "Generator's response estimate"),
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


def _value(summary: dict, key: str):
    value = summary
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "; ".join(value) if isinstance(value, list) else value


def table_rows(summary: dict) -> tuple:
    """The (key, label) rows a summary's table has: :data:`TABLE_ROWS`, then
    :data:`REAL_FOLLOWUP_TABLE_ROWS` when a real follow-up was compared."""
    return TABLE_ROWS + (REAL_FOLLOWUP_TABLE_ROWS if summary.get("real_followup") else ())


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
        values.InsertNextValue("" if value is None else
                               f"{value:.3f}" if isinstance(value, float) else str(value))
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        numbers.InsertNextValue(float(value) if numeric else math.nan)
    for column in (measures, values, numbers):
        table.AddColumn(column)
    node.Modified()
    return node
