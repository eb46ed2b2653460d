"""The bridge to 3D Slicer's MRML scene: nodes in, nodes out. With the web review built on it,
this package is the only part of the library that imports ``slicer``.

``volumes``: volume nodes <-> SimpleITK images; ``segmentations``: anatomy <-> segmentation
nodes; ``tables``: predictions (and a real follow-up's measurements) as a table node;
``cases``: one case's results as new nodes; ``views``: showing them side by side (or beside
a real follow-up), and rendering the review offscreen; ``saving``: the results to a case
folder, with ``dicom`` its DICOM outputs in the study of the baseline volume
(``dicom_identity``: that volume's identity, from Slicer's DICOM database). Everything is
re-exported here, so ``from ImmunoDiffLib import mrml; mrml.process_case(...)`` works.
"""

from __future__ import annotations

from .cases import load_case_folder, place_under_study, process_case
from .dicom_identity import instance_files, volume_identity
from .saving import save_results
from .segmentations import (
    APPROXIMATE_TAG,
    anatomy_to_segmentation_node,
    segment_centre_ras,
    segment_mask,
    segment_tag,
    segment_to_image,
    segmentation_to_anatomy,
    terminology_codes,
    terminology_entry,
)
from .tables import REAL_FOLLOWUP_TABLE_ROWS, TABLE_ROWS, predictions_to_table_node, table_rows
from .views import nodes_added_since, scene_node_ids
from .volumes import (
    LPS_TO_RAS,
    image_to_volume_node,
    lps_to_ras,
    ras_to_lps,
    volume_node_to_image,
)

__all__ = [
    "APPROXIMATE_TAG", "LPS_TO_RAS", "REAL_FOLLOWUP_TABLE_ROWS", "TABLE_ROWS",
    "anatomy_to_segmentation_node",
    "image_to_volume_node", "instance_files", "load_case_folder", "lps_to_ras",
    "nodes_added_since", "place_under_study", "predictions_to_table_node", "process_case",
    "ras_to_lps", "save_results", "scene_node_ids", "segment_centre_ras", "segment_mask",
    "segment_tag", "segment_to_image",
    "segmentation_to_anatomy", "table_rows", "terminology_codes", "terminology_entry",
    "volume_identity", "volume_node_to_image",
]
