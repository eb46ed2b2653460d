"""Settings of ``immunodiff evaluate``: the paper's, and the demo scaling that runs on a CPU.

| setting                     | paper (METHOD.md)          | demo (this file's DEMO)          |
|-----------------------------|----------------------------|----------------------------------|
| crop                        | 96x96x16 at 3x3x0.5 mm     | 48x48x8 at 3x3x2 mm              |
| diffusion U-Net channels    | not stated                 | (16, 32, 32), attention at level 3|
| training timesteps          | 1000                       | 1000                             |
| generator                   | ε-prediction of the        | the shipped one: x0-prediction of|
|                             | follow-up, U-Net frozen    | the change, U-Net fine-tuned,    |
|                             | in stage 2                 | lesion mask, tokens, scenario    |
| stage 1A / 1B / 1C steps    | to convergence             | 60 / 300 / 150 (once, shared)    |
| stage 2 steps (per fold)    | to convergence             | 150                              |
| learning rate               | 2.5e-5 (Adam)              | 1e-3 (Adam; few steps)           |
| CNN / transformer baselines | ResNet-50, DenseNet-121,   | same architectures, narrowed:    |
|                             | ViT-B/16, Swin             | ResNet-50 width x0.25; DenseNet-121 |
|                             |                            | growth 8, 16 initial features;   |
|                             |                            | ViT 4 layers x 96, patch 8x8x4;  |
|                             |                            | Swin embed 12, depths 2-2-2-2    |
| baseline training steps     | not stated                 | 60 per fold, batch 4 (per method:|
|                             |                            | ``image_steps``)                 |
| zero-shot / anomaly DDPM    | per their papers           | (8, 16, 16) class-conditional    |
|                             |                            | U-Net, 200 steps per fold        |
| sampling for Table 3        | DDPM 1000                  | DDIM 10 steps                    |

Every per-fold training budget has a key (``evaluate/budgets.py``): "1A", "1B", "1C", "2" and
"heads" (``stage_steps``), each image baseline by its Table 1 name, e.g. "ViT-B/16 + clinical"
(``image_steps``, else ``baseline_steps``), and "diffusion" (``diffusion_baseline_steps``, the
class-conditional DDPM both diffusion baselines share). ``immunodiff evaluate --budget KEY=STEPS``
sets one; ``--protocol fair`` chooses them from learning curves (``CurveSettings``).

Stages 1A-1C never see a response, survival or follow-up: they are trained once on every
patient's baseline crop (as the paper pre-trained them on public baseline CTs); everything
that sees outcomes or follow-ups (stage 2, heads, baselines) is trained per fold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from ..errors import SettingError
from ..imaging import CropSpec
from ..models.config import ModelConfig

IMAGE_BASELINES = ("ResNet-50", "DenseNet-121", "ViT-B/16", "Swin")


@dataclass(frozen=True)
class EvaluationConfig:
    n_folds: int = 5
    seed: int = 0
    crop: CropSpec = field(default_factory=lambda: CropSpec(size=(48, 48, 8),
                                                            spacing=(3.0, 3.0, 2.0)))
    model: ModelConfig = field(default_factory=lambda: ModelConfig(
        channels=(16, 32, 32), num_head_channels=(0, 0, 16), norm_num_groups=8, context_dim=32,
        control_channels=8, vl_widths=(8, 16), vl_embed_dim=32, vl_projection_dim=16,
        adapter_dim=32, adapter_heads=2, use_flash_attention=True,
        target="change"))  # the shipped generator's target (scripts/train_demo_bundle.py)
    learning_rate: float = 1e-3
    batch_size: int = 2
    stage_steps: dict = field(default_factory=lambda: {"1A": 60, "1B": 300, "1C": 150,
                                                       "2": 150, "heads": 300})
    baseline_steps: int = 60
    baseline_batch_size: int = 4
    baseline_learning_rate: float = 3e-4
    image_baselines: tuple[str, ...] = IMAGE_BASELINES
    paper_sizes: bool = False  # True: full-size ResNet-50/DenseNet-121/ViT-B/16/Swin
    diffusion_baseline_channels: tuple[int, ...] = (8, 16, 16)
    diffusion_baseline_steps: int = 200
    zero_shot_timesteps: int = 16  # shared (t, noise) pairs per class
    anomaly_noise_level: float = 0.5  # fraction of T the input is noised to (Wolleb et al.)
    anomaly_steps: int = 10  # DDIM steps back from that level
    anomaly_guidance: float = 3.0
    sampling_steps: int = 10  # DDIM steps of the Table 3 syntheses
    bootstrap_repeats: int = 1000
    # per image method (Table 1 name, or the network's name for both of its rows): its steps
    # per fold instead of baseline_steps
    image_steps: dict = field(default_factory=dict)
    # the Table 1 methods to run (None: all); "Stage 2 only" is Table 3's
    methods: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.n_folds < 2:
            raise SettingError(f"n_folds must be at least 2, got {self.n_folds}.")
        unknown = set(self.image_baselines) - set(IMAGE_BASELINES)
        if unknown:
            raise SettingError(f"Unknown image baseline(s) {sorted(unknown)}; choose from "
                             f"{IMAGE_BASELINES}.")

    def as_dict(self) -> dict:
        return asdict(self)

    def image_method_steps(self, method: str, network: str) -> int:
        """Training steps per fold of the image baseline ``method`` (e.g. "ResNet-50 +
        clinical") built on ``network``."""
        return int(self.image_steps.get(method, self.image_steps.get(network,
                                                                     self.baseline_steps)))

    def scaled(self, factor: float) -> EvaluationConfig:
        """Every step count times ``factor`` (at least 1): for quick checks and tests."""
        def scale(n):
            return max(1, int(round(n * factor)))

        return replace(self, stage_steps={k: scale(v) for k, v in self.stage_steps.items()},
                       baseline_steps=scale(self.baseline_steps),
                       image_steps={k: scale(v) for k, v in self.image_steps.items()},
                       diffusion_baseline_steps=scale(self.diffusion_baseline_steps))


DEMO = EvaluationConfig()


@dataclass(frozen=True)
class CurveSettings:
    """The learning curves of ``--protocol fair`` (``evaluate/learning_curve.py``).

    ``budgets``: per budget key, the training steps to measure (ascending); ``tolerance``: a
    budget is chosen as the smallest whose held-out AUC is within this of the curve's best
    (``evaluate/budgets.py``); ``validation_fraction``: the share of fold 0's training patients
    held out to measure the curve (the test folds are never used to choose a budget).
    """

    budgets: dict = field(default_factory=lambda: {
        "2": (150, 500, 1500, 3000), "heads": (100, 300, 1000, 3000),
        "DenseNet-121": (30, 60, 120, 250, 500), "ViT-B/16 + clinical": (30, 60, 120, 250, 500)})
    tolerance: float = 0.02
    validation_fraction: float = 0.25

    def __post_init__(self):
        if not 0.0 <= self.tolerance < 1.0:
            raise SettingError(f"curve tolerance must be in [0, 1), got {self.tolerance}.")
        if not 0.05 <= self.validation_fraction <= 0.5:
            raise SettingError("curve validation_fraction must be in [0.05, 0.5], got "
                               f"{self.validation_fraction}.")
        for key, steps in self.budgets.items():
            if not steps or any(int(s) < 1 for s in steps):
                raise SettingError(f"curve budgets of {key!r} must be positive step counts, "
                                   f"got {list(steps)}.")

    def scaled(self, factor: float) -> CurveSettings:
        """Every budget times ``factor`` (at least 1, duplicates dropped)."""
        return replace(self, budgets={
            key: tuple(sorted({max(1, int(round(s * factor))) for s in steps}))
            for key, steps in self.budgets.items()})
