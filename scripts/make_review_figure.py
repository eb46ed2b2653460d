"""Render the README's side-by-side review figure from a real MRML scene (slicer-core).

    .venv/bin/python scripts/make_review_figure.py [-o docs/images/review_lung2.png]

The sample CT ``lung2`` is loaded into a slicer-core MRML scene as a volume node, processed by
``mrml.process_case`` exactly as the panel's Apply button does (demo bundle, classic anatomy
unless lungmask/TotalSegmentator weights are installed, the demo clinical values), and the
review the panel shows (baseline with lobes and vessels | synthesized follow-up | difference,
axial and coronal through the tumour) is rendered offscreen by Slicer's own
``vtkMRMLSliceLogic``. Inside Slicer, the self-test saves a screenshot of the real views.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path,
                        default=REPO / "docs" / "images" / "review_lung2.png")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="model bundle (default: the demo bundle)")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()

    import slicer

    from ImmunoDiffLib import mrml
    from ImmunoDiffLib.demo import DEMO_CLINICAL, demo_bundle
    from ImmunoDiffLib.imaging import label_centroid, read_ct, read_image
    from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
    from ImmunoDiffLib.inference.sampling import SamplingOptions
    from ImmunoDiffLib.mrml import views as mrml_views
    from ImmunoDiffLib.reporting.case_report import save_review_figure
    from ImmunoDiffLib.sample_data import sample_case_paths

    _, image_path, label_path = sample_case_paths("lung2")
    ct = read_ct(image_path)
    label = read_image(label_path)
    point_lps = label_centroid(label)
    bundle, quick = (args.bundle, False) if args.bundle else demo_bundle()
    scene = slicer.vtkMRMLScene()
    mrml_views.ensure_display_defaults(scene)
    volume = mrml.image_to_volume_node(ct, scene, "lung2")
    volume.CreateDefaultDisplayNodes()
    volume.GetDisplayNode().SetAutoWindowLevel(False)
    volume.GetDisplayNode().SetWindowLevel(1500, -600)
    point_ras = mrml.lps_to_ras(point_lps)
    nodes = mrml.process_case(scene, volume, DEMO_CLINICAL, point_ras, ImmunoDiffPipeline(bundle),
                              SamplingOptions(steps=args.steps, samples=args.samples, seed=0),
                              tumour_mask=label)
    panels = mrml_views.render_review(scene, volume, nodes, point_ras, field_of_view_mm=110.0,
                                size_px=360)
    caption = ("Rendered offscreen from the MRML scene by Slicer's vtkMRMLSliceLogic "
               "(slicer-core), as the panel's side-by-side layout shows it. Model: "
               + ("QUICK UNTRAINED-QUALITY BUNDLE" if quick else "demo bundle")
               + ", trained on simulated data only.")
    path = save_review_figure(panels, nodes["result"].summary(), args.output,
                              title="lung2: baseline vs synthesized follow-up (demo clinical "
                                    "values)", caption=caption)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
