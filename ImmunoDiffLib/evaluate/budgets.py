"""Per-fold training budgets: their keys, reading and setting them, and choosing one from a
learning curve.

Keys (the steps each method trains per fold):

* "1A", "1B", "1C": stage-1 steps (once, shared by the folds; per fold when a background is
  left out); every diffusion-feature method;
* "2": stage-2 steps; ImmunoDiff and Stage 2 only;
* "heads": full-batch steps of the response and survival heads; ImmunoDiff, Stage 2 only, DDPM
  and ControlNet features;
* "diffusion": steps of the class-conditional DDPM; the zero-shot classifier and the DDPM
  anomaly detection;
* an image method's Table 1 name, e.g. "ViT-B/16 + clinical" (or its network's name, for both
  of its rows): that baseline's steps.

Choosing a budget from a learning curve (held-out AUC against steps): the **smallest budget
whose AUC is within ``tolerance`` of the best AUC on the curve** — where the curve has
flattened, without paying for steps that do not help. AUC rather than balanced accuracy, as it
does not depend on a threshold and moves less between neighbouring budgets.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import SettingError
from .config import EvaluationConfig
from .methods import (
    ANOMALY,
    CONTROLNET_FEATURES,
    DDPM_FEATURES,
    IMMUNODIFF,
    STAGE2_ONLY,
    ZERO_SHOT,
    image_method,
)
from .store import method_slug, write_json

STAGE_KEYS = ("1A", "1B", "1C", "2", "heads")
DIFFUSION = "diffusion"
METHOD_KEYS = {IMMUNODIFF: ("2", "heads"), STAGE2_ONLY: ("2", "heads"),
               DDPM_FEATURES: ("heads",), CONTROLNET_FEATURES: ("heads",),
               ZERO_SHOT: (DIFFUSION,), ANOMALY: (DIFFUSION,)}


def image_methods(config: EvaluationConfig) -> dict[str, str]:
    """{Table 1 name: network} of the configured image baselines."""
    return {image_method(n, c): n for n in config.image_baselines for c in (False, True)}


def budget_keys(config: EvaluationConfig) -> list[str]:
    return [*STAGE_KEYS, DIFFUSION, *image_methods(config)]


def resolve_key(key: str, config: EvaluationConfig) -> str:
    """The budget key ``key`` names (exact, a network's name, or written as a slug, e.g.
    "vit_b_16_clinical")."""
    known = budget_keys(config)
    networks = list(config.image_baselines)
    def plain(text: str) -> str:
        return "_".join(part for part in method_slug(text).split("_") if part)

    for candidate in (*known, *networks):
        if key.strip() == candidate or plain(key) == plain(candidate):
            return candidate
    raise SettingError(f"budget key {key!r} is unknown; expected one of {known} (or a network "
                       f"of {networks}).")


def current_budgets(config: EvaluationConfig) -> dict[str, int]:
    """Every key's steps per fold under ``config``."""
    budgets = {key: int(config.stage_steps[key]) for key in STAGE_KEYS}
    budgets[DIFFUSION] = int(config.diffusion_baseline_steps)
    for method, network in image_methods(config).items():
        budgets[method] = config.image_method_steps(method, network)
    return budgets


def with_budgets(config: EvaluationConfig, budgets: dict) -> EvaluationConfig:
    """``config`` with the steps of ``budgets`` ({key: steps}) set."""
    stage_steps, image_steps = dict(config.stage_steps), dict(config.image_steps)
    diffusion = config.diffusion_baseline_steps
    for key, steps in budgets.items():
        canonical = resolve_key(str(key), config)
        try:
            steps = int(steps)
        except (TypeError, ValueError):
            steps = 0
        if steps < 1:
            raise SettingError(f"budget {canonical!r} must be a positive number of steps, got "
                               f"{budgets[key]!r}.")
        if canonical in STAGE_KEYS:
            stage_steps[canonical] = steps
        elif canonical == DIFFUSION:
            diffusion = steps
        else:
            image_steps[canonical] = steps
    return replace(config, stage_steps=stage_steps, image_steps=image_steps,
                   diffusion_baseline_steps=diffusion)


def method_budget(method: str, config: EvaluationConfig) -> str:
    """The steps ``method`` trains per fold, as text for the tables ("" for the methods
    without training steps: clinical only, oracle)."""
    budgets = current_budgets(config)
    keys = METHOD_KEYS.get(method) or ((method,) if method in image_methods(config) else ())
    if len(keys) == 1:
        return str(budgets[keys[0]])
    return ", ".join(f"{k}: {budgets[k]}" for k in keys)


def parse_assignment(text: str, option: str) -> tuple[str, str]:
    """"KEY=VALUE" (the key may hold spaces and '/'; split at the last '=')."""
    key, separator, value = str(text).rpartition("=")
    if not separator or not key.strip() or not value.strip():
        raise SettingError(f"{option} expects KEY=VALUE (e.g. {option} 2=1500), got {text!r}.")
    return key.strip(), value.strip()


def parse_budgets(texts, config: EvaluationConfig) -> dict[str, int]:
    """``--budget KEY=STEPS`` options -> {key: steps}, every key and value checked."""
    budgets = {}
    for text in texts or ():
        key, value = parse_assignment(text, "--budget")
        canonical = resolve_key(key, config)
        if not value.isdigit() or int(value) < 1:
            raise SettingError(f"--budget {canonical}: steps must be a positive integer, got "
                               f"{value!r}.")
        budgets[canonical] = int(value)
    return budgets


def parse_curves(texts, config: EvaluationConfig) -> dict[str, tuple[int, ...]]:
    """``--curve KEY=S1,S2,...`` options -> {key: ascending steps}."""
    curves = {}
    for text in texts or ():
        key, value = parse_assignment(text, "--curve")
        canonical = resolve_key(key, config)
        parts = [p.strip() for p in value.split(",")]
        if not all(p.isdigit() and int(p) >= 1 for p in parts):
            raise SettingError(f"--curve {canonical}: expected positive step counts separated "
                               f"by commas (e.g. 100,300,1000), got {value!r}.")
        curves[canonical] = tuple(sorted({int(p) for p in parts}))
    return curves


def read_budgets_file(path: str | os.PathLike, config: EvaluationConfig) -> dict[str, int]:
    """{key: steps} from a ``budgets.json`` a learning-curve run wrote (its "budgets")."""
    path = Path(path)
    if not path.is_file():
        raise SettingError(f"--budgets: the file '{path}' does not exist; expected the "
                           "budgets.json of a learning-curve run.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        budgets = data["budgets"] if isinstance(data, dict) and "budgets" in data else data
        budgets = {k: (v["steps"] if isinstance(v, dict) else v) for k, v in budgets.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SettingError(f"--budgets: '{path}' is not a budgets.json ({{\"budgets\": "
                           "{key: steps}}).") from None
    with_budgets(config, budgets)  # every key and value checked
    return {resolve_key(k, config): int(v) for k, v in budgets.items()}


def choose_budget(points: list[dict], tolerance: float) -> dict:
    """``points``: [{"budget": steps, "auc": held-out AUC}, ...] of one key. Returns
    {"steps", "auc", "best_auc", "rule"}: the smallest budget within ``tolerance`` of the best
    AUC (the largest budget when no AUC is defined)."""
    ordered = sorted(points, key=lambda p: p["budget"])
    aucs = np.array([p["auc"] for p in ordered], float)
    if not np.isfinite(aucs).any():
        return {"steps": int(ordered[-1]["budget"]), "auc": float("nan"),
                "best_auc": float("nan"), "rule": "no defined AUC: the largest budget"}
    best = float(np.nanmax(aucs))
    chosen = next(p for p, auc in zip(ordered, aucs, strict=True)
                  if np.isfinite(auc) and auc >= best - tolerance)
    return {"steps": int(chosen["budget"]), "auc": float(chosen["auc"]), "best_auc": best,
            "rule": f"smallest budget with AUC >= best - {tolerance}"}


def write_budgets(path: Path, chosen: dict, config: EvaluationConfig) -> dict:
    """``budgets.json``: {"budgets": {key: steps} of every key (chosen, set or default),
    "chosen": the curve's choices with their AUCs}."""
    data = {"budgets": current_budgets(config), "chosen": chosen}
    write_json(path, json.loads(json.dumps(data, default=float)))
    return data
