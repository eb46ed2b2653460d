"""Evaluation like the paper's Tables 1-3: metrics, patient-level folds, tables."""

from .folds import load_folds, make_folds, save_folds
from .metrics import bootstrap, c_index, classification_metrics, mean_sd
from .tables import write_table

__all__ = ["bootstrap", "c_index", "classification_metrics", "load_folds", "make_folds",
           "mean_sd", "save_folds", "write_table"]
