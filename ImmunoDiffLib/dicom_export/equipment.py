"""What every DICOM output says about the software that made it (General Equipment module)
and the series numbers the outputs take in the study."""

from __future__ import annotations

from .. import __version__

MANUFACTURER = "ImmunoDiff"
MODEL_NAME = "ImmunoDiff (research use only)"
SOFTWARE_VERSION = __version__
DEVICE_SERIAL_NUMBER = "none"  # software: there is no device serial number
RESEARCH_ONLY = "Research use only; not for clinical decisions."

# Series numbers: high, so that they sort after the scanner's series of the same study.
BASELINE_SERIES_NUMBER = 9000  # the baseline, when it had to be written (input not DICOM)
FOLLOWUP_SERIES_NUMBER = 9001
SEGMENTATION_SERIES_NUMBER = 9002
REPORT_SERIES_NUMBER = 9003
CAPTURE_SERIES_NUMBER = 9004
