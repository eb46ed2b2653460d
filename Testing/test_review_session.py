"""The web review's session without its page, on a real slicer-core scene: the clinical form's
messages per field, the folders it may read, one run at a time, and Save only after a run."""

from __future__ import annotations

import numpy as np
import pytest
import slicer

from ImmunoDiffLib.errors import ImageError
from ImmunoDiffLib.review.session import BusyError, ReviewSession, field_problems


def test_each_bad_clinical_value_gets_its_own_message_and_nlr_is_computed():
    problems, nlr = field_problems({"age": "abc", "anc": "4.6", "alc": "1.4", "pdl1": "300"})
    assert set(problems) == {"age", "pdl1"}
    assert "abc" in problems["age"] and "300" in problems["pdl1"]
    assert nlr is None  # nothing is computed while the form has errors
    problems, nlr = field_problems({"age": "64", "anc": "4.6", "alc": "1.4", "nlr": "",
                                    "sex": "unknown"})
    assert problems == {} and nlr == pytest.approx(4.6 / 1.4)


def test_paths_outside_the_allowed_folders_are_refused(tmp_path, sample_paths):
    session = ReviewSession(slicer.vtkMRMLScene(), [tmp_path], bundle=tmp_path,
                            work_dir=tmp_path / "work")
    for path in ("../../etc/passwd", "/etc/passwd", str(tmp_path / ".." / "x")):
        with pytest.raises(ImageError, match="outside the folders this review may read"):
            session.allowed(path)
    with pytest.raises(ImageError, match="does not exist"):
        session.allowed(str(tmp_path / "missing.nrrd"))
    with pytest.raises(ImageError, match="is not a CT file"):
        session.load_upload("notes.txt", b"not a CT")
    with pytest.raises(ImageError, match="Nothing to save yet"):
        session.save(str(tmp_path / "case"))


def test_a_second_run_is_refused_while_one_is_going(tmp_path, sample_paths):
    scene = slicer.vtkMRMLScene()
    session = ReviewSession(scene, [sample_paths["lung2_image"].parent], bundle=tmp_path,
                            work_dir=tmp_path / "work")
    node = session.load(str(sample_paths["lung2_image"]))
    assert node.GetImageData().GetDimensions() == (512, 512, 61)
    session.set_point((-52.613, 95.904, -256.5))
    assert session.point_ras == (-52.61, 95.9, -256.5)  # kept as predictions.json records it
    session._lock.acquire()  # a run in progress
    try:
        with pytest.raises(BusyError, match="A case is running"):
            session.start({"age": "64"}, options=None)
    finally:
        session._lock.release()


def test_a_tumour_mask_gives_the_point_and_the_drawn_tumour(tmp_path, sample_paths):
    session = ReviewSession(slicer.vtkMRMLScene(), [sample_paths["lung2_image"].parent],
                            bundle=tmp_path, work_dir=tmp_path / "work")
    with pytest.raises(ImageError, match="Load a CT first"):
        session.point_from_mask(str(sample_paths["lung2_tumour"]))
    session.load(str(sample_paths["lung2_image"]))
    point = session.point_from_mask(str(sample_paths["lung2_tumour"]))
    assert np.allclose(point, (-52.6, 95.9, -256.5), atol=0.6)  # the README's centre, RAS
    assert session.tumour_mask is not None
    session.set_point((0.0, 0.0, -250.0))  # a point placed by hand drops the mask
    assert session.tumour_mask is None
