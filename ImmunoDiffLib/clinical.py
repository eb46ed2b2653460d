"""The clinical variables: names, groups, units, plausible ranges, validation and encoding.

Groups (METHOD.md): C demographics (age, sex, race), B blood (CEA, ANC, ALC, NLR, AEC, AMC),
I immunotherapy biomarker (PD-L1). Missing values are explicit: ``None`` in a record and a 0 in
the encoding's mask, never a silent zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import ClinicalValueError

if TYPE_CHECKING:
    import torch

GROUPS = ("C", "B", "I")
MISSING_WORDS = {"", "na", "n/a", "nan", "none", "null", "unknown", "missing", "?", "-"}


@dataclass(frozen=True)
class Variable:
    """One clinical variable. Numeric variables have a plausible range; categorical ones a list
    of categories (with accepted spellings in ``aliases``)."""

    name: str
    group: str
    label: str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    # A value at or above this is almost surely in another unit; the hint says which.
    unit_threshold: float | None = None
    unit_hint: str = ""
    # Values are log1p-transformed before standardisation (right-skewed lab values).
    log_scale: bool = False

    @property
    def is_categorical(self) -> bool:
        return bool(self.categories)


_PER_UL = "looks like cells/µL; enter 10^9/L (divide by 1000)"
PDL1_CATEGORIES = ("<1%", "1-49%", ">=50%")

VARIABLES: tuple[Variable, ...] = (
    Variable("age", "C", "Age", "years", 18, 110),
    Variable(
        "sex", "C", "Sex", categories=("female", "male"),
        aliases={"f": "female", "woman": "female", "m": "male", "man": "male"},
    ),
    Variable(
        "race", "C", "Race", categories=("white", "black", "asian", "other"),
        aliases={"caucasian": "white", "african american": "black",
                 "black or african american": "black"},
    ),
    Variable("cea", "B", "CEA", "ng/mL", 0, 5000, log_scale=True),
    Variable("anc", "B", "ANC", "10^9/L", 0, 60, unit_threshold=200, unit_hint=_PER_UL,
             log_scale=True),
    Variable("alc", "B", "ALC", "10^9/L", 0, 30, unit_threshold=100, unit_hint=_PER_UL,
             log_scale=True),
    Variable("nlr", "B", "NLR", "ratio", 0, 200, log_scale=True),
    Variable("aec", "B", "AEC", "10^9/L", 0, 20, unit_threshold=50, unit_hint=_PER_UL,
             log_scale=True),
    Variable("amc", "B", "AMC", "10^9/L", 0, 20, unit_threshold=50, unit_hint=_PER_UL,
             log_scale=True),
    Variable("pdl1", "I", "PD-L1 TPS", "%", 0, 100),
)
BY_NAME = {v.name: v for v in VARIABLES}
NAMES = tuple(BY_NAME)
# Accepted spellings of variable names (column headers in a cohort CSV, CLI options).
NAME_ALIASES = {"pd-l1": "pdl1", "pd_l1": "pdl1", "pdl1_tps": "pdl1", "gender": "sex"}
PDL1_ALIASES = {
    "<1": "<1%", "<1%": "<1%", "negative": "<1%",
    "1-49": "1-49%", "1-49%": "1-49%", "low": "1-49%",
    ">=50": ">=50%", ">=50%": ">=50%", "≥50%": ">=50%", "≥50": ">=50%", "high": ">=50%",
}


def pdl1_category(tps: float) -> str:
    """PD-L1 tumour proportion score (%) -> clinical category (<1 %, 1-49 %, >=50 %)."""
    return "<1%" if tps < 1 else ("1-49%" if tps < 50 else ">=50%")


def nlr_tolerance(ratio: float) -> float:
    """Allowed |NLR - ANC/ALC|: 5 % of the ratio plus 0.05, which covers ANC and ALC rounded
    to one decimal at ordinary counts."""
    return 0.05 * ratio + 0.05


@dataclass(frozen=True)
class ClinicalRecord:
    """Validated clinical variables of one patient. ``values[name]`` is a float, a category
    string or None (missing). ``derived`` names values computed here (NLR from ANC/ALC, the
    PD-L1 category from the TPS)."""

    values: Mapping[str, float | str | None]
    pdl1_category: str | None = None
    derived: frozenset[str] = frozenset()

    def __getitem__(self, name: str):
        return self.values[name]

    def missing(self) -> list[str]:
        """Names of the variables without a value (PD-L1 counts as known if its category is)."""
        absent = [n for n in NAMES if self.values.get(n) is None]
        if "pdl1" in absent and self.pdl1_category is not None:
            absent.remove("pdl1")
        return absent

    def require_complete(self, reason: str = "the model was trained without missing values"):
        """Raise :class:`ClinicalValueError` listing every missing variable."""
        absent = self.missing()
        if absent:
            raise ClinicalValueError(
                [f"{BY_NAME[n].label} ({n}) is missing, and {reason}." for n in absent]
            )

    def as_dict(self) -> dict[str, float | str | None]:
        out = dict(self.values)
        out["pdl1_category"] = self.pdl1_category
        return out


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING_WORDS


def _parse_number(variable: Variable, raw, problems: list[str]) -> float | None:
    if isinstance(raw, bool):
        problems.append(f"{variable.label} ({variable.name}) = {raw!r} is not a number.")
        return None
    try:
        value = float(raw.strip()) if isinstance(raw, str) else float(raw)
    except (TypeError, ValueError):
        problems.append(
            f"{variable.label} ({variable.name}) = {raw!r} is not a number; expected a value "
            f"in {variable.unit} between {variable.minimum:g} and {variable.maximum:g}."
        )
        return None
    if not math.isfinite(value):
        problems.append(f"{variable.label} ({variable.name}) = {raw!r} is not a finite number.")
        return None
    if variable.unit_threshold is not None and value >= variable.unit_threshold:
        problems.append(
            f"{variable.label} ({variable.name}) = {value:g} {variable.unit} {variable.unit_hint} "
            f"(plausible range {variable.minimum:g}-{variable.maximum:g} {variable.unit})."
        )
        return None
    if not variable.minimum <= value <= variable.maximum:
        problems.append(
            f"{variable.label} ({variable.name}) = {value:g} is outside the plausible range "
            f"{variable.minimum:g}-{variable.maximum:g} {variable.unit}."
        )
        return None
    return value


def _parse_category(variable: Variable, raw, problems: list[str]) -> str | None:
    if not isinstance(raw, str):
        problems.append(
            f"{variable.label} ({variable.name}) = {raw!r} is not one of "
            f"{', '.join(variable.categories)}."
        )
        return None
    word = raw.strip().lower()
    word = variable.aliases.get(word, word)
    if word not in variable.categories:
        problems.append(
            f"{variable.label} ({variable.name}) = {raw!r} is not one of "
            f"{', '.join(variable.categories)}."
        )
        return None
    return word


def parse_clinical(raw: Mapping[str, object]) -> ClinicalRecord:
    """Validate a mapping of variable name -> value (numbers, numeric text or categories).

    Unknown names, wrong types, implausible values, probable unit mistakes and an NLR that
    disagrees with ANC/ALC are all collected and raised together as
    :class:`ClinicalValueError`. Missing values (None, '', 'NA', 'unknown') become None.
    PD-L1 takes a TPS in % or a category ('<1%', '1-49%', '>=50%').
    """
    problems: list[str] = []
    values: dict[str, float | str | None] = dict.fromkeys(NAMES)
    category: str | None = None
    for key, value in raw.items():
        name = str(key).strip().lower()
        name = NAME_ALIASES.get(name, name)
        if name == "pdl1_category":
            if not _is_missing(value):
                category = PDL1_ALIASES.get(str(value).strip().lower())
                if category is None:
                    problems.append(
                        f"PD-L1 category (pdl1_category) = {value!r} is not one of "
                        f"{', '.join(PDL1_CATEGORIES)}."
                    )
            continue
        if name not in BY_NAME:
            problems.append(
                f"Unknown clinical variable {key!r}; known variables: {', '.join(NAMES)}."
            )
            continue
        if _is_missing(value):
            continue
        variable = BY_NAME[name]
        if name == "pdl1" and isinstance(value, str) and value.strip().lower() in PDL1_ALIASES:
            category = PDL1_ALIASES[value.strip().lower()]
            continue
        if variable.is_categorical:
            values[name] = _parse_category(variable, value, problems)
        else:
            values[name] = _parse_number(variable, value, problems)

    derived = set()
    anc, alc, nlr = values["anc"], values["alc"], values["nlr"]
    if anc is not None and alc is not None and alc > 0:
        ratio = anc / alc
        if nlr is None:
            if ratio <= BY_NAME["nlr"].maximum:
                values["nlr"] = ratio
                derived.add("nlr")
        elif abs(nlr - ratio) > nlr_tolerance(ratio):
            problems.append(
                f"NLR (nlr) = {nlr:g} disagrees with ANC/ALC = {anc:g}/{alc:g} = {ratio:.2f} "
                f"(allowed difference {nlr_tolerance(ratio):.2f}); check the three values."
            )
    tps = values["pdl1"]
    if tps is not None:
        from_tps = pdl1_category(tps)
        if category is not None and category != from_tps:
            problems.append(
                f"PD-L1 category (pdl1_category) = {category!r} disagrees with PD-L1 TPS "
                f"(pdl1) = {tps:g} %, which is {from_tps!r}."
            )
        elif category is None:
            derived.add("pdl1_category")
        category = from_tps
    if problems:
        raise ClinicalValueError(problems)
    return ClinicalRecord(values, category, frozenset(derived))


@dataclass(frozen=True)
class Standardisation:
    """Reference mean and SD per numeric variable (after log1p where the variable says so).

    Defaults are typical values of advanced-NSCLC cohorts before immunotherapy; a model bundle
    stores the statistics it was trained with (see :func:`fit_standardisation`).
    """

    mean: Mapping[str, float] = field(default_factory=lambda: {
        "age": 66.0, "cea": math.log1p(5.0), "anc": math.log1p(5.0), "alc": math.log1p(1.4),
        "nlr": math.log1p(4.0), "aec": math.log1p(0.15), "amc": math.log1p(0.6),
    })
    sd: Mapping[str, float] = field(default_factory=lambda: {
        "age": 9.0, "cea": 1.2, "anc": 0.4, "alc": 0.3, "nlr": 0.6, "aec": 0.12, "amc": 0.2,
    })

    def scale(self, name: str, value: float) -> float:
        if BY_NAME[name].log_scale:
            value = math.log1p(value)
        return (value - self.mean[name]) / self.sd[name]


def fit_standardisation(records: Iterable[ClinicalRecord]) -> Standardisation:
    """Mean/SD of each numeric variable over ``records`` (missing values skipped)."""
    records = list(records)
    mean, sd = dict(Standardisation().mean), dict(Standardisation().sd)
    for name in mean:
        variable = BY_NAME[name]
        observed = [r.values[name] for r in records if r.values.get(name) is not None]
        if len(observed) >= 2:
            data = np.log1p(observed) if variable.log_scale else np.asarray(observed, float)
            mean[name] = float(data.mean())
            sd[name] = float(max(data.std(ddof=1), 1e-6))
    return Standardisation(mean, sd)


def feature_layout() -> dict[str, list[tuple[str, str]]]:
    """Per group, the encoded features in order as (feature name, variable name)."""
    layout: dict[str, list[tuple[str, str]]] = {g: [] for g in GROUPS}
    for variable in VARIABLES:
        if variable.name == "pdl1":
            layout["I"].append(("pdl1_tps", "pdl1"))
            layout["I"] += [(f"pdl1_{c}", "pdl1_category") for c in PDL1_CATEGORIES]
        elif variable.name == "sex":
            layout["C"].append(("sex_male", "sex"))
        elif variable.is_categorical:
            layout[variable.group] += [(f"{variable.name}_{c}", variable.name)
                                       for c in variable.categories]
        else:
            layout[variable.group].append((f"{variable.name}_z", variable.name))
    return layout


@dataclass
class ClinicalTensors:
    """Encoded clinical variables of a batch. ``values[g]`` and ``mask[g]`` are float32 tensors
    of shape (B, F_g) for each group g in C, B, I; mask 1 = observed, 0 = missing (value 0)."""

    values: dict[str, torch.Tensor]
    mask: dict[str, torch.Tensor]
    feature_names: dict[str, list[str]]


def encode_clinical(
    records: Iterable[ClinicalRecord], standardisation: Standardisation = Standardisation()
) -> ClinicalTensors:
    """Encode validated records into grouped tensors plus a missing-value mask.

    Numeric variables are standardised (z-scores); sex is 1 for male; race and the PD-L1
    category are one-hot; the PD-L1 TPS is a fraction (0..1).
    """
    import torch  # deferred: the Slicer panel validates values without loading torch

    records = list(records)
    layout = feature_layout()
    values, mask = {}, {}
    for group, features in layout.items():
        v = np.zeros((len(records), len(features)), np.float32)
        m = np.zeros_like(v)
        for row, record in enumerate(records):
            for column, (feature, name) in enumerate(features):
                raw = record.pdl1_category if name == "pdl1_category" else record.values[name]
                if raw is None:
                    continue
                m[row, column] = 1.0
                if feature == "sex_male":
                    v[row, column] = float(raw == "male")
                elif feature == "pdl1_tps":
                    v[row, column] = raw / 100.0
                elif name in ("race", "pdl1_category"):
                    v[row, column] = float(feature.endswith(f"_{raw}"))
                else:
                    v[row, column] = standardisation.scale(name, raw)
        values[group], mask[group] = torch.from_numpy(v), torch.from_numpy(m)
    names = {g: [f for f, _ in features] for g, features in layout.items()}
    return ClinicalTensors(values, mask, names)
