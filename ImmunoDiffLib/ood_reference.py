"""What the model learned from, stored in its bundle so a prediction can say "this case is
unlike the training data" (:mod:`ImmunoDiffLib.inference.out_of_distribution`).

Two parts:

* ``TrainingRanges``: the training cohort's lesion diameters, crop padding and clinical
  values (numeric ranges, categories seen);
* ``FeatureReference``: the training patients' up-block features (the prediction heads'
  input, the mean over the prediction's noise draws): mean, per-feature SD and the precision
  of a Ledoit-Wolf shrunk covariance of the standardised features. A case's score is its
  Mahalanobis distance divided by sqrt(F) (about 1 for a typical training patient), and the
  threshold is set on held-out patients so that at most 5 % of them lie beyond it. Where the
  patients are grouped (the CT a simulated patient is built on), it is also set so that
  a group the reference never saw would be flagged no more often (:func:`transfer_quantile`):
  features of a new CT lie further out than those of new patients on a known one.

In a bundle the arrays live in ``ood_reference.safetensors`` (its sha256 in bundle.json) and
the rest in bundle.json's ``out_of_distribution`` section (see :mod:`ImmunoDiffLib.bundle`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

HELD_OUT_FLAG_RATE = 0.05  # the largest share of held-out patients the threshold may flag


def beyond_range_rate(n: int) -> float:
    """The chance that one more patient, drawn as ``n`` held-out patients were, lies beyond
    their range (the least or the largest of n + 1 exchangeable values): 2 / (n + 1). The
    flag's rule on the heads' logit (beyond the held-out patients' range) flags about this
    share of new patients of their own kind."""
    return 2.0 / (n + 1.0)


def feature_threshold(scores: np.ndarray, rate: float = HELD_OUT_FLAG_RATE,
                      flagged_otherwise: np.ndarray | None = None) -> float:
    """The smallest threshold (flag: score > threshold) that flags at most ``rate`` of the
    M patients of ``scores`` (M,), counting those ``flagged_otherwise`` (M,) bool already
    flags for another reason (a lesion or clinical value beyond the training range): the
    score flags only the share of the budget they leave, and none when they use it up."""
    scores = np.asarray(scores, np.float64)
    others = (np.zeros(len(scores), bool) if flagged_otherwise is None
              else np.asarray(flagged_otherwise, bool))
    if others.shape != scores.shape:
        raise ValueError(f"flagged_otherwise has shape {others.shape}, scores {scores.shape}")
    allowed = int(math.floor(rate * len(scores) + 1e-9)) - int(others.sum())
    candidates = np.sort(scores[~others]) if (~others).any() else np.sort(scores)
    if allowed <= 0:
        return float(candidates[-1])
    return float(candidates[len(candidates) - 1 - min(allowed, len(candidates) - 1)])


@dataclass
class FeatureReference:
    """``mean``, ``scale`` (F,) and ``precision`` (F, F) of the standardised features;
    ``threshold`` on the score; the held-out set's size and flagged share."""

    mean: np.ndarray
    scale: np.ndarray
    precision: np.ndarray
    threshold: float
    n_train: int
    n_held_out: int
    held_out_flagged: float
    shrinkage: float
    transfer: dict | None = None  # transfer_quantile's result, where the patients are grouped

    @property
    def dimensions(self) -> int:
        return int(self.mean.shape[0])

    def score(self, features: np.ndarray) -> np.ndarray:
        """Scores of ``features`` (N, F) -> (N,), or (F,) -> a 0-d array: Mahalanobis
        distance / sqrt(F)."""
        z = (np.asarray(features, np.float64) - self.mean) / self.scale
        squared = np.einsum("...i,ij,...j->...", z, self.precision, z)
        return np.sqrt(np.maximum(squared, 0.0) / self.dimensions)

    def tensors(self) -> dict[str, np.ndarray]:
        return {"feature_mean": self.mean, "feature_scale": self.scale,
                "feature_precision": self.precision}

    def description(self) -> dict:
        return {"threshold": self.threshold, "n_train": self.n_train,
                "n_held_out": self.n_held_out, "held_out_flagged": self.held_out_flagged,
                "shrinkage": self.shrinkage, "dimensions": self.dimensions,
                "transfer": self.transfer,
                "score": "Mahalanobis distance / sqrt(F) of the mean up-block features "
                         "(Ledoit-Wolf covariance of the standardised features)"}

    @classmethod
    def from_parts(cls, description: dict, tensors: dict[str, np.ndarray]) -> FeatureReference:
        return cls(np.asarray(tensors["feature_mean"], np.float64),
                   np.asarray(tensors["feature_scale"], np.float64),
                   np.asarray(tensors["feature_precision"], np.float64),
                   float(description["threshold"]), int(description["n_train"]),
                   int(description["n_held_out"]), float(description["held_out_flagged"]),
                   float(description["shrinkage"]), description.get("transfer"))


def _fitted(train: np.ndarray) -> FeatureReference:
    """The reference of ``train`` (N, F), threshold not set yet."""
    from sklearn.covariance import LedoitWolf  # deferred: only fitting needs scikit-learn

    mean = train.mean(0)
    sd = train.std(0, ddof=1)
    scale = sd + 1e-6 * float(sd.mean()) + 1e-12  # a constant feature counts, finitely
    fitted = LedoitWolf().fit((train - mean) / scale)
    return FeatureReference(mean, scale, fitted.precision_, 0.0, len(train), 0, 0.0,
                            float(fitted.shrinkage_))


MIN_GROUP_PATIENTS = 10  # a group left out needs this many training and held-out patients


def transfer_quantile(train: np.ndarray, held_out: np.ndarray, train_groups, held_out_groups,
                      rate: float = HELD_OUT_FLAG_RATE) -> dict | None:
    """How far into the held-out scores' upper tail a threshold must lie to flag at most
    ``rate`` of patients of a group the reference never saw. For each group g (with enough
    patients on both sides): a reference fitted on the ``train`` (N, F) patients of the other
    groups scores the ``held_out`` (M, F) patients of the other groups and of g; the share of
    the former at or below the score that flags ``rate`` of g. Returns {"quantile": the
    largest share (every group left out flagged at most ``rate``), "left_out": {g: share},
    "rate": rate}, or None with fewer than two such groups."""
    train_groups = np.asarray(train_groups).astype(str)
    held_out_groups = np.asarray(held_out_groups).astype(str)
    shares = {}
    for group in sorted(set(train_groups) & set(held_out_groups)):
        known_train, known_held = train_groups != group, held_out_groups != group
        if min(known_train.sum(), (~known_train).sum(), known_held.sum(),
               (~known_held).sum()) < MIN_GROUP_PATIENTS:
            continue
        reference = _fitted(train[known_train])
        unseen = np.quantile(reference.score(held_out[~known_held]), 1.0 - rate)
        shares[str(group)] = float(np.mean(reference.score(held_out[known_held]) <= unseen))
    if len(shares) < 2:
        return None
    return {"quantile": max(shares.values()), "left_out": shares, "rate": rate}


def fit_feature_reference(train: np.ndarray, held_out: np.ndarray,
                          rate: float = HELD_OUT_FLAG_RATE,
                          flagged_otherwise: np.ndarray | None = None,
                          train_groups=None, held_out_groups=None) -> FeatureReference:
    """The reference of training features ``train`` (N, F), its threshold set on
    ``held_out`` (M, F) so that at most ``rate`` of them are flagged, together with those
    ``flagged_otherwise`` (M,) flags for other reasons (:func:`feature_threshold`), and, with
    ``train_groups`` (N,) and ``held_out_groups`` (M,), so that a group the reference never
    saw would be flagged at most ``rate`` too (:func:`transfer_quantile`; the higher of the
    two thresholds)."""
    train = np.asarray(train, np.float64)
    held_out = np.asarray(held_out, np.float64)
    if train.ndim != 2 or train.shape[0] < 3 or held_out.ndim != 2 or len(held_out) < 1:
        raise ValueError(f"Need training features (N >= 3, F) and held-out features (M, F); "
                         f"got {train.shape} and {held_out.shape}.")
    reference = _fitted(train)
    reference.n_held_out = len(held_out)
    scores = reference.score(held_out)
    reference.threshold = feature_threshold(scores, rate, flagged_otherwise)
    if train_groups is not None and held_out_groups is not None:
        reference.transfer = transfer_quantile(train, held_out, train_groups,
                                               held_out_groups, rate)
        if reference.transfer is not None:
            reference.threshold = max(reference.threshold, float(
                np.quantile(scores, reference.transfer["quantile"])))
    others = (np.zeros(len(scores), bool) if flagged_otherwise is None
              else np.asarray(flagged_otherwise, bool))
    reference.held_out_flagged = float(((scores > reference.threshold) | others).mean())
    return reference


@dataclass
class TrainingRanges:
    """The training cohort's ranges: lesion longest axial diameter (mm, on the crop), largest
    crop padding fraction, numeric clinical values {name: (low, high)}, categories seen."""

    lesion_diameter_mm: tuple[float, float] = (10.0, 40.0)
    padded_fraction_max: float = 0.0
    numeric: dict[str, tuple[float, float]] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> TrainingRanges:
        return cls(tuple(data["lesion_diameter_mm"]), float(data["padded_fraction_max"]),
                   {k: tuple(v) for k, v in data.get("numeric", {}).items()},
                   {k: list(v) for k, v in data.get("categories", {}).items()})


@dataclass
class OODReference:
    """What the out-of-distribution flag compares a case with; ``features`` None: rules
    only. ``source``: how it was made (cohorts, seeds, command)."""

    ranges: TrainingRanges
    features: FeatureReference | None = None
    source: dict = field(default_factory=dict)

    def description(self) -> dict:
        """bundle.json's section (no arrays)."""
        return {"ranges": {**asdict(self.ranges),
                           "lesion_diameter_mm": list(self.ranges.lesion_diameter_mm),
                           "numeric": {k: list(v) for k, v in self.ranges.numeric.items()}},
                "features": None if self.features is None else self.features.description(),
                "source": self.source}

    def tensors(self) -> dict[str, np.ndarray]:
        return {} if self.features is None else self.features.tensors()

    @classmethod
    def from_parts(cls, description: dict, tensors: dict[str, np.ndarray]) -> OODReference:
        features = description.get("features")
        return cls(TrainingRanges.from_dict(description["ranges"]),
                   None if features is None else FeatureReference.from_parts(features, tensors),
                   dict(description.get("source", {})))
