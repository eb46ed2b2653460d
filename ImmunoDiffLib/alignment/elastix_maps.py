"""The elastix parameter maps of each alignment stage, as plain settings.

Starting points are elastix's own defaults and the Model Zoo's intra-patient lung CT sets
(Par0011 EMPIRE10, Par0015 follow-up CT, Par0007 pre/post-radiotherapy CT with tumours):
Mattes mutual information (robust to the contrast and reconstruction differences of two
scans), adaptive stochastic gradient descent on random samples, a multi-resolution pyramid.

The default B-spline map of itk-elastix combines the metric with a bending-energy penalty
(``MultiMetricMultiResolutionRegistration``); on this stack it crashes the process while it
samples gradients for the step size. The B-spline stage here uses the image metric alone and
a coarse-to-fine control-point grid (final spacing ``grid_mm``), which keeps the transform
smooth without the penalty. elastix runs in a child process (``elastix_worker``), so a crash
there is an error message, not the end of the caller.

A map is ``(kind, final_grid_mm, overrides)``: elastix's default map of ``kind`` with
``overrides`` (name -> list of strings) applied and ``Metric0Weight``/``Metric1Weight`` removed
when the metric is single.
"""

from __future__ import annotations

RANDOM_SEED = 121  # elastix's sampler seed: the same seed gives the same alignment

ParameterMap = tuple[str, float, dict[str, list[str]]]


def _common(iterations: int, samples: int, resolutions: int) -> dict[str, list[str]]:
    return {"MaximumNumberOfIterations": [str(iterations)],
            "NumberOfSpatialSamples": [str(samples)],
            "NumberOfResolutions": [str(resolutions)],
            "RandomSeed": [str(RANDOM_SEED)],
            "WriteResultImage": ["false"],
            "DefaultPixelValue": ["-1024"]}


def linear_map(kind: str, iterations: int = 300, resolutions: int = 3) -> ParameterMap:
    """Rigid (``"rigid"``: Euler) or ``"affine"`` map; initialised at the images' geometric
    centres, so a shifted scan range or table height starts close."""
    overrides = _common(iterations, 2048, resolutions)
    overrides["AutomaticTransformInitialization"] = ["true"]
    overrides["AutomaticTransformInitializationMethod"] = ["GeometricalCenter"]
    return kind, 0.0, overrides


def bspline_map(grid_mm: float = 20.0, iterations: int = 500, resolutions: int = 3,
                samples: int = 4096) -> ParameterMap:
    """B-spline map with the image metric alone (see the module's note on the crash)."""
    overrides = _common(iterations, samples, resolutions)
    overrides["Metric"] = ["AdvancedMattesMutualInformation"]
    overrides["Registration"] = ["MultiResolutionRegistration"]
    return "bspline", float(grid_mm), overrides


def bending_energy_map(grid_mm: float = 20.0, iterations: int = 50) -> ParameterMap:
    """itk-elastix's default B-spline map (metric + bending-energy penalty): the map that
    crashes here; kept so a test can tell when a new itk-elastix fixes it."""
    overrides = _common(iterations, 2048, 2)
    return "bspline-default", float(grid_mm), overrides
