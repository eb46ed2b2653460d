"""Clinical variables: validation messages, derived NLR, missing values and the encoding."""

import pytest
import torch

from ImmunoDiffLib.clinical import (
    NAMES,
    ClinicalRecord,
    encode_clinical,
    feature_layout,
    fit_standardisation,
    parse_clinical,
)
from ImmunoDiffLib.errors import ClinicalValueError

COMPLETE = {"age": 64, "sex": "male", "race": "white", "cea": 3.2, "anc": 4.5, "alc": 1.5,
            "nlr": 3.0, "aec": 0.2, "amc": 0.5, "pdl1": 60}


def test_complete_record_parses_with_categories_and_derived_values():
    record = parse_clinical({**COMPLETE, "sex": " M ", "race": "Caucasian", "age": "64"})
    assert record["age"] == 64.0 and record["sex"] == "male" and record["race"] == "white"
    assert record.pdl1_category == ">=50%"
    assert record.missing() == []
    record.require_complete()


def test_nlr_is_derived_from_anc_and_alc_when_absent():
    record = parse_clinical({k: v for k, v in COMPLETE.items() if k != "nlr"})
    assert record["nlr"] == pytest.approx(3.0)
    assert "nlr" in record.derived


@pytest.mark.parametrize("raw, fragments", [
    ({"age": 130}, ["Age (age) = 130", "18-110 years"]),
    ({"anc": -1}, ["ANC (anc) = -1", "0-60 10^9/L"]),
    ({"pdl1": 140}, ["PD-L1 TPS (pdl1) = 140", "0-100 %"]),
    ({"anc": 4500}, ["ANC (anc) = 4500", "cells/µL", "divide by 1000"]),
    ({"alc": 1500}, ["ALC (alc) = 1500", "cells/µL"]),
    ({"weight": 70}, ["Unknown clinical variable 'weight'", "known variables: age"]),
    ({"age": "sixty"}, ["Age (age) = 'sixty' is not a number"]),
    ({"cea": True}, ["CEA (cea) = True is not a number"]),
    ({"sex": "x"}, ["Sex (sex) = 'x' is not one of female, male"]),
    ({"race": 3}, ["Race (race) = 3 is not one of white, black, asian, other"]),
    ({"anc": 4.0, "alc": 1.0, "nlr": 8.0}, ["NLR (nlr) = 8", "ANC/ALC = 4/1 = 4.00"]),
    ({"pdl1": 60, "pdl1_category": "<1%"}, ["disagrees with PD-L1 TPS (pdl1) = 60"]),
    ({"pdl1_category": "medium"}, ["PD-L1 category (pdl1_category) = 'medium'"]),
])
def test_bad_values_are_rejected_naming_field_value_and_expectation(raw, fragments):
    with pytest.raises(ClinicalValueError) as error:
        parse_clinical(raw)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ClinicalValueError) as error:
        parse_clinical({"age": 130, "anc": 4500, "pdl1": -3, "smoker": "yes"})
    assert len(error.value.problems) == 4


def test_nlr_within_rounding_is_accepted():
    record = parse_clinical({"anc": 4.6, "alc": 1.3, "nlr": 3.5})  # 4.6 / 1.3 = 3.54
    assert record["nlr"] == 3.5 and "nlr" not in record.derived


@pytest.mark.parametrize("word", [None, "", "NA", "unknown", float("nan"), " n/a "])
def test_missing_values_stay_missing_and_are_listed(word):
    record = parse_clinical({**COMPLETE, "cea": word, "race": word})
    assert record["cea"] is None and record["race"] is None
    assert record.missing() == ["race", "cea"]
    with pytest.raises(ClinicalValueError) as error:
        record.require_complete()
    assert "Race (race) is missing" in str(error.value)
    assert "CEA (cea) is missing" in str(error.value)


def test_pdl1_category_alone_counts_as_known():
    record = parse_clinical({**COMPLETE, "pdl1": "1-49%"})
    assert record["pdl1"] is None and record.pdl1_category == "1-49%"
    assert record.missing() == []


def test_encoding_groups_values_and_masks_missing_as_zero_with_mask_zero():
    full = parse_clinical(COMPLETE)
    partial = parse_clinical({"age": 70, "sex": "female", "pdl1": "<1%"})
    encoded = encode_clinical([full, partial])
    layout = feature_layout()
    assert {g: t.shape for g, t in encoded.values.items()} == {
        g: (2, len(layout[g])) for g in ("C", "B", "I")}
    names = encoded.feature_names
    assert names["C"][:2] == ["age_z", "sex_male"] and len(names["B"]) == 6
    # complete record: everything observed; race one-hot; PD-L1 60 % -> 0.6 and >=50 %
    assert torch.all(encoded.mask["C"][0] == 1) and torch.all(encoded.mask["B"][0] == 1)
    assert encoded.values["C"][0, names["C"].index("race_white")] == 1
    assert encoded.values["I"][0].tolist() == pytest.approx([0.6, 0.0, 0.0, 1.0])
    # partial record: blood values missing -> value 0 AND mask 0; PD-L1 TPS missing, category known
    assert torch.all(encoded.mask["B"][1] == 0) and torch.all(encoded.values["B"][1] == 0)
    assert encoded.mask["I"][1].tolist() == [0.0, 1.0, 1.0, 1.0]
    assert encoded.values["I"][1].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert encoded.values["C"][1, 1] == 0 and encoded.mask["C"][1, 1] == 1  # female observed


def test_encoding_changes_when_a_value_changes():
    a = encode_clinical([parse_clinical(COMPLETE)])
    b = encode_clinical([parse_clinical({**COMPLETE, "anc": 9.0, "nlr": 6.0})])
    changed = (a.values["B"] != b.values["B"])[0].tolist()
    assert changed == [False, True, False, True, False, False]


def test_fitted_standardisation_gives_zero_mean_unit_sd():
    records = [parse_clinical({"age": a}) for a in (50, 60, 70, 80)]
    encoded = encode_clinical(records, fit_standardisation(records))
    ages = encoded.values["C"][:, 0]
    assert abs(ages.mean().item()) < 1e-6
    assert ages.std().item() == pytest.approx(1.0, abs=1e-5)


def test_record_names_cover_the_ten_variables():
    assert NAMES == ("age", "sex", "race", "cea", "anc", "alc", "nlr", "aec", "amc", "pdl1")
    assert isinstance(parse_clinical({}), ClinicalRecord)
