"""The Slicer module's background process: ``immunodiff predict`` run as a child process with
progress lines and a cancel file (ImmunoDiffLib.background), its case folder loaded into a real
slicer-core scene (mrml.load_case_folder)."""

import json
import sys
import time

import numpy as np
import pytest

from ImmunoDiffLib.background import (
    BackgroundJob,
    parse_progress_line,
    predict_command,
)
from ImmunoDiffLib.settings import default_bundle

slicer = pytest.importorskip("slicer")
from ImmunoDiffLib import mrml  # noqa: E402


def test_progress_lines_parse_and_other_lines_do_not():
    assert parse_progress_line("PROGRESS 0.4200 generating the follow-up") == (
        0.42, "generating the follow-up")
    assert parse_progress_line("PROGRESS 1.0000 ") == (1.0, "")
    assert parse_progress_line("PROGRESS 7 beyond") == (1.0, "beyond")  # clamped
    assert parse_progress_line("PROGRESS soon") is None
    assert parse_progress_line("immunodiff: error: ...") is None


def _job(tmp_path, sample_paths, point_lps, steps: int) -> tuple[BackgroundJob, object]:
    clinical = tmp_path / "clinical.json"
    # a favourable profile (high PD-L1, low NLR, eosinophils up; the other values missing):
    # the follow-up drawn is a response, so the crop changes
    clinical.write_text(json.dumps({"age": 64, "sex": "male", "pdl1": 95, "anc": 3.6,
                                    "alc": 2.4, "aec": 0.3}), encoding="utf-8")
    output = tmp_path / "case"
    command = predict_command(sys.executable, sample_paths["lung2_image"], output, point_lps,
                              clinical, cancel_file=tmp_path / "cancel", anatomy="classic",
                              steps=steps, samples=1, bundle=default_bundle())
    return BackgroundJob(command, tmp_path / "cancel").start(), output


def _drain(job: BackgroundJob, until=lambda events: False, timeout: float = 600.0) -> list:
    events, deadline = [], time.monotonic() + timeout
    while not job.finished and time.monotonic() < deadline:
        events += job.poll()
        if until(events):
            break
        time.sleep(0.05)
    return events + job.poll()


@pytest.mark.skipif(default_bundle() is None, reason="no demo bundle in Resources/")
def test_a_case_runs_in_the_background_and_its_folder_loads_into_the_scene(
        tmp_path, sample_paths, lung2, lung2_tumour_point):
    job, output = _job(tmp_path, sample_paths, lung2_tumour_point, steps=3)
    events = _drain(job)
    assert job.wait(60) == 0, job.output_tail()
    progress = [e for e in events if e[0] == "progress"]
    fractions = [f for _, f, _ in progress]
    assert len(progress) >= 5 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)  # one bar, never going back
    assert any("generating" in message for _, _, message in progress)
    scene = slicer.vtkMRMLScene()
    volume = mrml.image_to_volume_node(lung2, scene, "lung2")
    before = scene.GetNumberOfNodes()
    nodes = mrml.load_case_folder(scene, output, volume)
    written = json.loads((output / "predictions.json").read_text(encoding="utf-8"))
    assert nodes["summary"] == written
    followup = mrml.volume_node_to_image(nodes["followup"])
    assert followup.GetSize() == lung2.GetSize()
    assert np.allclose(followup.GetOrigin(), lung2.GetOrigin())
    assert written["recist"] in ("CR", "PR") and written["response_probability"] > 0.5
    difference = slicer.util.arrayFromVolume(nodes["difference"])
    assert np.abs(difference).max() > 0  # the crop changed
    table = nodes["table"].GetTable()
    values = {table.GetValue(r, 0).ToString(): table.GetValue(r, 1).ToString()
              for r in range(table.GetNumberOfRows())}
    assert values["RECIST category (synthesized)"] == written["recist"]
    assert nodes["segmentation"].GetSegmentation().GetNumberOfSegments() >= 5
    assert scene.GetNumberOfNodes() > before


@pytest.mark.skipif(default_bundle() is None, reason="no demo bundle in Resources/")
def test_cancel_stops_the_process_within_seconds_and_leaves_nothing(
        tmp_path, sample_paths, lung2_tumour_point):
    job, output = _job(tmp_path, sample_paths, lung2_tumour_point, steps=1000)
    _drain(job, until=lambda events: any(e[0] == "progress" and "denoising" in e[2]
                                         for e in events))
    assert not job.finished, "the job ended before it could be cancelled"
    asked = time.monotonic()
    job.cancel()
    job.wait(30)
    stopped_after = time.monotonic() - asked
    assert job.finished and stopped_after < 5.0, stopped_after
    assert job.returncode == 130 and not job.succeeded
    job.poll()
    assert "cancelled" in job.output_tail()
    assert not output.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(output.name)]
    assert leftovers == []


def test_command_names_every_choice_and_a_point_in_full_precision(tmp_path):
    from ImmunoDiffLib.cli import build_parser

    command = predict_command("python", "ct.nii.gz", tmp_path / "out", (1.25, -2.5, 1e-7),
                              "c.json", cancel_file="stop", bundle="b", scenarios=True,
                              steps=7, samples=3, seed=5, anatomy="classic")
    assert command[:4] == ["python", "-m", "ImmunoDiffLib.cli", "predict"]
    point = command.index("--point")
    assert [float(v) for v in command[point + 1:point + 4]] == [1.25, -2.5, 1e-7]
    for flag, value in (("--steps", "7"), ("--samples", "3"), ("--seed", "5"),
                        ("--anatomy", "classic"), ("--bundle", "b"), ("--cancel-file", "stop")):
        assert command[command.index(flag) + 1] == value
    assert "--scenarios" in command and "--progress-lines" in command
    # the commands the panel launches are ones the CLI accepts
    parsed = build_parser().parse_args(command[3:])
    assert parsed.progress_lines and str(parsed.cancel_file) == "stop"
    drawn = predict_command("python", "ct.nii.gz", tmp_path / "out", None, "c.json",
                            cancel_file="stop", mask="m.nii.gz")
    assert "--point" not in drawn and str(build_parser().parse_args(drawn[3:]).mask) == \
        "m.nii.gz"
    with pytest.raises(ValueError, match="either the tumour point or a tumour mask"):
        predict_command("python", "ct", "out", (1, 2, 3), "c.json", cancel_file="s",
                        mask="m.nii.gz")
