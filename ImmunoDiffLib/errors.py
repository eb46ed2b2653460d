"""Errors the library raises for bad input. Each message names the input, the value and what
was expected, so it can be shown to the user as it is."""


class ImmunoDiffError(Exception):
    """Base class of every error the library raises on purpose."""


class ImageError(ImmunoDiffError, ValueError):
    """A CT file, folder or volume that cannot be used (unreadable, not CT, wrong shape...)."""


class TumourPointError(ImmunoDiffError, ValueError):
    """The tumour point is missing, malformed or outside the image."""


class ClinicalValueError(ImmunoDiffError, ValueError):
    """One or more clinical variables are unknown, malformed, implausible or missing.

    ``problems`` holds one sentence per bad variable; the message joins them all.
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("Clinical variables rejected:\n  - " + "\n  - ".join(self.problems))


class SettingError(ImmunoDiffError, ValueError):
    """An option or setting outside what it accepts (a step count of 0, an unknown stage or
    sampler, a training run without the data it needs...)."""


class OutputPathError(ImmunoDiffError, OSError):
    """An output path that exists already, or whose folder cannot be written."""


class SampleDataError(ImmunoDiffError, RuntimeError):
    """Sample data that could not be found, downloaded or verified."""


class BackendUnavailableError(ImmunoDiffError, RuntimeError):
    """A segmentation backend cannot run here (weights absent, package missing)."""


class CohortError(ImmunoDiffError, ValueError):
    """A cohort manifest with bad rows; ``problems`` lists every one, row by row."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = list(problems)
        super().__init__(f"Cohort manifest '{source}' has {len(self.problems)} problem(s):\n  - "
                         + "\n  - ".join(self.problems))


class BundleError(ImmunoDiffError, ValueError):
    """A model bundle that is missing, damaged, tampered with or incompatible."""


class AlignmentError(ImmunoDiffError, ValueError):
    """A follow-up CT could not be aligned to its baseline (the cause is in the message)."""
