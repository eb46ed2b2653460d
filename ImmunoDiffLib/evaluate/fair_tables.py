"""The tables of ``--protocol fair``: the k-fold and the leave-one-background-out results of
each method side by side (from the two protocols' summaries), with its budget and compute.

* ``table1``: per method its steps per fold, balanced accuracy (each fold's threshold chosen
  on its training patients) and AUC with 95 % patient-bootstrap CIs, in k-fold
  cross-validation and leaving one background out, the paired AUC difference from the
  clinical-only model with its CI, and its CPU-minutes per fold;
* ``table2``: c-index with CI and the paired difference from the clinical-only Cox model (the
  reference row), both protocols;
* ``table3``: the ablations on the k folds of Table 1, with the AUC leaving a background out.
"""

from __future__ import annotations

from pathlib import Path

from .table_rows import DELTA_AUC
from .tables import write_table

LOBO = "leave one background out"


def _by(rows: list[dict], key: str) -> dict:
    return {row[key]: row for row in rows}


def response_table(cv: list[dict], lobo: list[dict], n_folds: int) -> tuple[list, list]:
    cv_name = f"{n_folds}-fold"
    columns = ["method", "steps per fold", f"{cv_name} balanced accuracy 95% CI",
               f"{cv_name} AUC 95% CI", f"{cv_name} {DELTA_AUC}",
               f"{LOBO}: balanced accuracy 95% CI", f"{LOBO}: AUC 95% CI",
               f"{LOBO}: {DELTA_AUC}", f"CPU-min per fold ({cv_name})",
               f"CPU-min per fold ({LOBO})"]
    other = _by(lobo, "method")
    rows = []
    for row in cv:
        held = other.get(row["method"], {})
        rows.append({"method": row["method"], "steps per fold": row.get("steps per fold", ""),
                     columns[2]: row["balanced accuracy 95% CI"],
                     columns[3]: row["AUC 95% CI"], columns[4]: row.get(DELTA_AUC, ""),
                     columns[5]: held.get("balanced accuracy 95% CI", ""),
                     columns[6]: held.get("AUC 95% CI", ""),
                     columns[7]: held.get(DELTA_AUC, ""),
                     columns[8]: row.get("CPU-min per fold", ""),
                     columns[9]: held.get("CPU-min per fold", "")})
    return rows, columns


def survival_table(cv: list[dict], lobo: list[dict], n_folds: int) -> tuple[list, list]:
    cv_name = f"{n_folds}-fold"
    delta = "Δ c-index vs reference (paired 95% CI)"
    columns = ["method", f"{cv_name} c-index 95% CI", f"{cv_name} {delta}",
               f"{LOBO}: c-index 95% CI", f"{LOBO}: {delta}"]
    other = _by(lobo, "method")
    rows = [{"method": row["method"], columns[1]: row["c-index 95% CI (pooled)"],
             columns[2]: row.get(delta, ""),
             columns[3]: other.get(row["method"], {}).get("c-index 95% CI (pooled)", ""),
             columns[4]: other.get(row["method"], {}).get(delta, "")} for row in cv]
    return rows, columns


def ablation_table(cv: list[dict], lobo: list[dict], n_folds: int) -> tuple[list, list]:
    other = _by(lobo, "ablation")
    columns = ["ablation", "MMD", "SSIM", "balanced accuracy", "AUC", "AUC 95% CI", "c-index",
               "lesion change agrees with response", f"{LOBO}: AUC 95% CI"]
    rows = [{**row, columns[-1]: other.get(row["ablation"], {}).get("AUC 95% CI", "")}
            for row in cv]
    return rows, columns


def write_fair_tables(output: Path, cv: dict, lobo: dict, n_folds: int) -> dict[str, str]:
    """``table1``-``table3`` (.md, .csv) into ``output`` from the summaries of the two
    protocols; returns {name: Markdown path}."""
    written = {}
    for name, build, title in (
            ("table1", response_table, "Table 1: response, with budgets and compute"),
            ("table2", survival_table, "Table 2: survival; the clinical-only Cox model is the "
                                       "reference"),
            ("table3", ablation_table, f"Table 3: ablations on the {n_folds} folds of Table 1")):
        rows, columns = build(cv[name], lobo[name], n_folds)
        written[name] = str(write_table(rows, columns, output / name, title)[0])
    return written
