"""The ImmunoDiff panel's inputs: the parameter node (every input, typed), what the library
needs installed, and whether the inputs are complete. No Qt here."""

import importlib.util
from pathlib import Path
from typing import Annotated

from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

UNKNOWN = -1.0  # spin boxes: their minimum, shown as "unknown"
MINIMUM_TORCH = "2.2"
# Python packages the library needs beyond what Slicer ships (numpy, SimpleITK, VTK): import
# name -> pip requirement. No exact pins: Slicer's Python is shared with other extensions.
# highdicom (the DICOM outputs) is held to the release series constraints.txt pins and the
# tests validate (~=: that version or a later patch of it), as its 0.x API changes between
# minor releases.
REQUIRED_PACKAGES = {"monai": "monai>=1.4", "safetensors": "safetensors",
                     "sksurv": "scikit-survival", "sklearn": "scikit-learn",
                     "skimage": "scikit-image", "scipy": "scipy", "pydicom": "pydicom>=2.4",
                     "highdicom": "highdicom~=0.28.2", "tqdm": "tqdm",
                     "matplotlib": "matplotlib"}
# parameters without a GUI connector in parameterNodeWrapper: synced by hand


@parameterNodeWrapper
class ImmunoDiffParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    tumourPoint: vtkMRMLMarkupsFiducialNode
    tumourSegmentation: vtkMRMLSegmentationNode
    tumourSegmentId: str = ""
    bundlePath: Path
    # optional: the patient's real follow-up CT, aligned and shown beside the synthesized one
    realFollowupVolume: vtkMRMLScalarVolumeNode
    anatomyBackend: Annotated[str, Choice(["auto", "paper", "lungmask", "totalsegmentator",
                                           "classic"])] = "auto"
    useExistingSegmentation: bool = False
    existingSegmentation: vtkMRMLSegmentationNode
    steps: Annotated[int, WithinRange(1, 1000)] = 25
    samples: Annotated[int, WithinRange(1, 16)] = 2
    seed: Annotated[int, WithinRange(0, 99999)] = 0
    device: Annotated[str, Choice(["cpu", "cuda"])] = "cpu"
    scenarios: bool = False
    # also the follow-ups "if it reaches CR / PR / SD / PD" (predict --recist-scenarios)
    recistScenarios: bool = False
    age: float = UNKNOWN
    sex: Annotated[str, Choice(["unknown", "female", "male"])] = "unknown"
    race: Annotated[str, Choice(["unknown", "white", "black", "asian", "other"])] = "unknown"
    cea: float = UNKNOWN
    anc: float = UNKNOWN
    alc: float = UNKNOWN
    aec: float = UNKNOWN
    amc: float = UNKNOWN
    pdl1: float = UNKNOWN
    pdl1Category: Annotated[str, Choice(["unknown", "<1%", "1-49%", ">=50%"])] = "unknown"


CLINICAL_PARAMETERS = {"age": "age", "sex": "sex", "race": "race", "cea": "cea", "anc": "anc",
                       "alc": "alc", "aec": "aec", "amc": "amc", "pdl1": "pdl1",
                       "pdl1_category": "pdl1Category"}  # library name -> parameter


def clinicalValues(parameters) -> dict:
    """The library's clinical dict from the parameter node; "unknown" entries left out."""
    values = {}
    for variable, name in CLINICAL_PARAMETERS.items():
        value = getattr(parameters, name)
        if isinstance(value, str):
            if value != "unknown":
                values[variable] = value
        elif value > UNKNOWN:
            values[variable] = value
    return values


def missingPackages() -> list:
    """pip requirements of the packages not importable here (torch first, when missing)."""
    missing = [] if importlib.util.find_spec("torch") else [f"torch>={MINIMUM_TORCH}"]
    return missing + [r for m, r in REQUIRED_PACKAGES.items() if importlib.util.find_spec(m)
                      is None]


def applyProblems(parameters, clinicalError=None) -> list:
    """Why Apply cannot run yet (empty list: it can)."""
    problems = []
    if parameters.inputVolume is None:
        problems.append("Choose the baseline CT.")
    point = parameters.tumourPoint
    hasPoint = point is not None and point.GetNumberOfDefinedControlPoints() > 0
    hasSegment = parameters.tumourSegmentation is not None and bool(parameters.tumourSegmentId)
    if not hasPoint and not hasSegment:
        problems.append("Place the tumour point (one click in a slice view) or choose a tumour "
                        "segment.")
    if parameters.realFollowupVolume is not None and \
            parameters.realFollowupVolume is parameters.inputVolume:
        problems.append("The real follow-up CT must be another volume than the baseline CT "
                        "(or none).")
    if parameters.useExistingSegmentation and parameters.existingSegmentation is None:
        problems.append("Choose the existing lobe/vessel segmentation, or untick it.")
    if clinicalError:
        problems.append(clinicalError)
    return problems


METHOD_NAMES = {"lungmask": "lungmask", "totalsegmentator": "TotalSegmentator",
                "classic": "classic (no weights; lobes approximate)"}


def totalSegmentatorExtensionInstalled():
    import slicer

    return hasattr(getattr(slicer, "modules", None), "totalsegmentator")


def anatomyPlan(parameters):
    """(where the lobes and vessels will come from, as a sentence; the problem that stops the
    run, or None). The models of the TotalSegmentator extension are found where it installs
    them. Needs the library's packages (call only when :func:`missingPackages` is empty)."""
    from ImmunoDiffLib.anatomy import lungmask_backend, resolve_backends, totalseg_backend
    from ImmunoDiffLib.errors import BackendUnavailableError

    if parameters.useExistingSegmentation:
        return "Lobes and vessels: from the chosen segmentation.", None
    backend = parameters.anatomyBackend
    lobes, vessels, _ = resolve_backends(backend)
    try:
        if lobes == "lungmask":
            lungmask_backend.find_weights()
        for method, task in ((lobes, totalseg_backend.LOBES_TASK),
                             (vessels, totalseg_backend.VESSELS_TASK)):
            if method == "totalsegmentator":
                totalseg_backend.check_weights(task)
    except BackendUnavailableError as error:
        hint = ""
        if "TotalSegmentator" in str(error) and totalSegmentatorExtensionInstalled():
            hint = (" The TotalSegmentator extension installs these models the first time its "
                    "own module segments a CT (with the internet); after that they are used "
                    "here too.")
        return "", f"Anatomy '{backend}': {error}{hint}"
    return f"Ready. Lobes: {METHOD_NAMES[lobes]}; vessels: {METHOD_NAMES[vessels]}.", None
