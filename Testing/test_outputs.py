"""Atomic files and folders: nothing half-written is ever left where a good output belongs."""

import pytest

from ImmunoDiffLib.errors import OutputPathError
from ImmunoDiffLib.outputs import atomic_folder, atomic_output, recover_folder


def test_failed_folder_write_keeps_the_previous_folder(tmp_path):
    target = tmp_path / "checkpoint"
    with atomic_folder(target) as staging:
        (staging / "weights").write_text("good", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_folder(target, overwrite=True) as staging:
        (staging / "weights").write_text("half", encoding="utf-8")
        raise RuntimeError("killed")
    assert (target / "weights").read_text(encoding="utf-8") == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_recover_puts_back_the_previous_folder_after_a_kill_between_renames(tmp_path):
    target = tmp_path / "checkpoint"
    with atomic_folder(target) as staging:
        (staging / "weights").write_text("good", encoding="utf-8")
    target.rename(tmp_path / ".checkpoint.previous")  # the state a kill there would leave
    assert (recover_folder(target) / "weights").read_text(encoding="utf-8") == "good"


def test_existing_outputs_are_refused_unless_allowed(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputPathError, match="exists already"), atomic_folder(tmp_path / "out"):
        pass
    (tmp_path / "f.txt").write_text("keep", encoding="utf-8")
    with pytest.raises(OutputPathError), atomic_output(tmp_path / "f.txt"):
        pass
    with atomic_output(tmp_path / "f.txt", overwrite=True) as temporary:
        temporary.write_text("new", encoding="utf-8")
    assert (tmp_path / "f.txt").read_text(encoding="utf-8") == "new"
