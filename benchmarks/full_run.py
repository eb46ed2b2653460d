"""The whole prediction on the real lung2 CT: classic anatomy (not cached) + conditions +
generate (the default sampling options: DDIM-25, two samples, the device's default precision
and layout, flash attention, the fused forward) + predictions + paste-back.

By default at the default model size and the paper's crop: a bundle of the default
configuration with random weights is made in a temporary folder (speed does not depend on the
weights). ``--bundle DIR`` times a real bundle instead (e.g. Resources/demo_bundle, what
``immunodiff predict`` uses by default).
Usage: python benchmarks/full_run.py [--repeats 2] [--bundle DIR]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

import torch

from ImmunoDiffLib.bundle import BundleInfo, save_bundle
from ImmunoDiffLib.imaging import label_centroid, read_ct, read_image
from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
from ImmunoDiffLib.inference.sampling import SamplingOptions
from ImmunoDiffLib.models import ImmunoDiffModel, ModelConfig
from ImmunoDiffLib.sample_data import fetch_sample_data

CLINICAL = {"age": 64, "sex": "male", "race": "white", "cea": 6.1, "anc": 4.6, "alc": 1.4,
            "aec": 0.21, "amc": 0.55, "pdl1": 70}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-memory-reuse", action="store_true",
                        help="let glibc unmap freed buffers (SamplingOptions.reuse_freed_memory)")
    parser.add_argument("--no-fused", action="store_true",
                        help="MONAI's forward at every step (SamplingOptions.fused)")
    parser.add_argument("--bundle", type=Path, help="time this bundle instead of a "
                        "default-configuration one with random weights")
    args = parser.parse_args()
    paths = fetch_sample_data()
    ct = read_ct(paths["lung2_image"])
    point = label_centroid(read_image(paths["lung2_tumour"]))
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        bundle = args.bundle
        if bundle is None:
            config = ModelConfig(use_flash_attention=True)
            bundle = save_bundle(Path(scratch) / "b", ImmunoDiffModel(config),
                                 BundleInfo(model=config))
        pipeline = ImmunoDiffPipeline(bundle, anatomy_backend="classic", anatomy_cache=False)
        print(f"bundle: {args.bundle or 'default configuration, random weights'}; crop "
              f"{pipeline.info.crop.size}, channels {pipeline.model.config.channels}")
        print(f"{'run':<5} {'arithmetic':<22} {'anatomy':>8} {'conditions':>11} "
              f"{'generate':>9} {'predict':>8} {'total s':>8}")
        for run in range(args.repeats):
            options = SamplingOptions(reuse_freed_memory=not args.no_memory_reuse,
                                      fused=not args.no_fused)
            result = pipeline.run(ct, CLINICAL, point, options)
            t = result.timings
            print(f"{run + 1:<5} {result.arithmetic:<22} {t['anatomy']:>8.1f} "
                  f"{t['conditions']:>11.2f} {t['generate']:>9.1f} {t['predict']:>8.1f} "
                  f"{t['total']:>8.1f}", flush=True)
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
