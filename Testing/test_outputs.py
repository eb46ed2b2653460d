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


def test_drawing_the_pictures_leaves_matplotlib_settings_alone():
    """Inside 3D Slicer the library shares matplotlib with the application: importing and
    drawing must not switch the backend or leave pyplot figures behind."""
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); "
            "import ImmunoDiffLib.reporting.case_report, ImmunoDiffLib.reporting.figures; "
            "import ImmunoDiffLib.reporting.evaluation, ImmunoDiffLib.reporting.cohort_montage; "
            "from ImmunoDiffLib.reporting.figures import subplots, save_figure; "
            "import tempfile, os; "
            "f, a = subplots(1, 2); a[0].plot([0, 1]); "
            "p = save_figure(f, os.path.join(tempfile.mkdtemp(), 'x.png')); "
            "import matplotlib.pyplot as plt; "
            "print(matplotlib.get_backend(), len(plt.get_fignums()), "
            "open(p, 'rb').read(4) == b'\\x89PNG')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg", "0", "True"]


def test_outputs_keep_the_users_umask(tmp_path):
    """Atomic outputs are not private: a colleague on a shared server can read them (umask
    022 gives 0644 files and 0755 folders, as a plain write would)."""
    import os
    import stat

    from ImmunoDiffLib.outputs import atomic_folder, atomic_output

    previous = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "a.txt") as temporary:
            temporary.write_text("x")
        with atomic_folder(tmp_path / "case") as staging:
            (staging / "f.txt").write_text("y")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "case").stat().st_mode) == 0o755
