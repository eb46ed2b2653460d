"""Scenario follow-ups held to their scenario: retried with firmer guidance, then without the
clinical variables, and marked (and worded) when the generator still cannot show it."""

import pytest

from ImmunoDiffLib.inference.sampling import SamplingOptions
from ImmunoDiffLib.inference.scenarios import (
    RETRY_GUIDANCE,
    not_obeyed_reason,
    obeys,
    synthesize_scenario,
)
from ImmunoDiffLib.progress import Task


def test_obeys_reads_recist_as_the_scenario_means_it():
    assert obeys("responder", "CR") and obeys("responder", "PR")
    assert not obeys("responder", "SD") and not obeys("responder", "PD")
    assert obeys("non-responder", "SD") and obeys("non-responder", "PD")
    assert not obeys("non-responder", "PR")
    assert obeys("responder", "NE") is None


def _generator(categories):
    """A stand-in for the sampler: the RECIST category of each attempt in turn, recording
    what each attempt was asked."""
    asked = []

    def synthesize(value, options, task, toward_non_response, drop_clinical):
        asked.append((value, options.scenario_guidance, toward_non_response, drop_clinical))
        return categories[len(asked) - 1]

    def measure(category):
        return None, 1.0, 10.0, category

    return asked, synthesize, measure


@pytest.mark.parametrize("name, categories, attempts", [
    ("responder", ["PR"], 1), ("responder", ["SD", "SD", "CR"], 3),
    ("non-responder", ["CR", "SD"], 2)])
def test_a_scenario_is_retried_until_it_obeys(name, categories, attempts):
    asked, synthesize, measure = _generator(categories)
    result = synthesize_scenario(name, synthesize, measure, SamplingOptions(), Task(None))
    assert len(asked) == attempts and result.obeyed
    assert result.recist == categories[-1]
    first = asked[0]
    assert first[1] == SamplingOptions().scenario_guidance and not first[3]
    if attempts > 1:  # firmer guidance, toward the scenario's own outcome
        assert asked[1][1] == SamplingOptions().scenario_guidance * RETRY_GUIDANCE[0][0]
        assert asked[1][2] == (name == "non-responder")
    if attempts > 2:
        assert asked[2][3] and result.clinical_left_out


def test_a_scenario_that_never_obeys_is_marked_and_worded():
    asked, synthesize, measure = _generator(["SD"] * 10)
    result = synthesize_scenario("responder", synthesize, measure, SamplingOptions(),
                                 Task(None))
    assert len(asked) == 1 + len(RETRY_GUIDANCE)
    assert result.obeyed is False
    largest = SamplingOptions().scenario_guidance * RETRY_GUIDANCE[-1][0]
    assert result.guidance == largest
    reason = not_obeyed_reason("responder", result)
    assert "a response (CR or PR)" in reason and "RECIST SD" in reason
    assert f"{largest:g}" in reason
