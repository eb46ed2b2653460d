"""Image classifiers on the baseline crop (MONAI's 3-D networks), with or without the clinical
variables: ResNet-50, DenseNet-121, ViT-B/16 and Swin, the paper's Table 1 baselines.

Each network ends in a ``FEATURES``-wide embedding; a linear layer maps the embedding (and, with
clinical variables, the clinical feature vector beside it) to the responder logit. Trained with
class-weighted binary cross-entropy (Adam), so the rarer responders count as much as the
non-responders.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks import nets
from monai.networks.nets.swin_unetr import SwinTransformer
from torch import nn

from .config import EvaluationConfig
from .data import descend, minibatches

FEATURES = 32


def _swin(crop_size, paper: bool) -> nn.Module:
    embed = 48 if paper else 12
    backbone = SwinTransformer(in_chans=1, embed_dim=embed, window_size=(4, 4, 4),
                               patch_size=(2, 2, 2), depths=(2, 2, 2, 2),
                               num_heads=(3, 6, 12, 24), spatial_dims=3)

    class SwinClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.out = nn.Linear(embed * 16, FEATURES)

        def forward(self, x):
            deepest = self.backbone(x, normalize=True)[-1]  # (B, 16 embed, ...)
            return self.out(deepest.mean(dim=(2, 3, 4)))

    return SwinClassifier()


class MinimumSize(nn.Module):
    """Interpolates thin inputs up to ``minimum`` voxels along every axis (DenseNet halves its
    input five times, so a 8-slice crop needs 32 slices: 0.5 mm, the paper's z spacing)."""

    def __init__(self, network: nn.Module, minimum: int):
        super().__init__()
        self.network, self.minimum = network, minimum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = [max(self.minimum, n) for n in x.shape[2:]]
        if size != list(x.shape[2:]):
            x = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
        return self.network(x)


def build_backbone(name: str, crop_size: tuple[int, int, int], paper: bool = False) -> nn.Module:
    """(B, 1, X, Y, Z) -> (B, FEATURES). ``paper``: the published sizes; else the demo's."""
    if name == "ResNet-50":
        return nets.resnet50(spatial_dims=3, n_input_channels=1, num_classes=FEATURES,
                             widen_factor=1.0 if paper else 0.25)
    if name == "DenseNet-121":
        width = {} if paper else dict(init_features=16, growth_rate=8)
        return MinimumSize(nets.DenseNet121(spatial_dims=3, in_channels=1,
                                            out_channels=FEATURES, **width), 32)
    if name == "ViT-B/16":
        patch = (16, 16, min(16, crop_size[2])) if paper else (8, 8, 4)
        size = dict(hidden_size=768, mlp_dim=3072, num_layers=12, num_heads=12) if paper else \
            dict(hidden_size=96, mlp_dim=384, num_layers=4, num_heads=4)
        vit = nets.ViT(in_channels=1, img_size=crop_size, patch_size=patch, classification=True,
                       num_classes=FEATURES, spatial_dims=3, post_activation="none", **size)

        class ViTClassifier(nn.Module):
            def __init__(self):
                super().__init__()
                self.vit = vit

            def forward(self, x):
                return self.vit(x)[0]

        return ViTClassifier()
    if name == "Swin":
        return _swin(crop_size, paper)
    raise ValueError(f"Unknown image baseline {name!r}.")


class ImageClassifier(nn.Module):
    """Backbone embedding [+ clinical features] -> responder logit."""

    def __init__(self, backbone: nn.Module, clinical_features: int = 0):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(FEATURES + clinical_features, 1)
        self.uses_clinical = clinical_features > 0

    def forward(self, image: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor:
        """image (B, 1, X, Y, Z), clinical (B, F) -> logits (B,)."""
        features = F.relu(self.backbone(image))
        if self.uses_clinical:
            features = torch.cat([features, clinical], dim=1)
        return self.head(features).squeeze(-1)


def positive_weight(labels: torch.Tensor) -> torch.Tensor:
    positives = labels.sum().clamp(min=1.0)
    return (len(labels) - labels.sum()).clamp(min=1.0) / positives


def train_image_classifier(name: str, images: torch.Tensor, clinical: torch.Tensor | None,
                           labels: torch.Tensor, config: EvaluationConfig, seed: int,
                           task=None, steps: int | None = None,
                           snapshot=None) -> ImageClassifier:
    """Fit one baseline on the training fold: images (N, 1, X, Y, Z), clinical (N, F) or None,
    labels (N,) in {0, 1}; ``steps`` (default ``config.baseline_steps``) minibatch steps.
    ``snapshot(done, model)`` (optional) is called after every step with the model in eval
    mode, then training goes on: the model after ``done`` steps is the one a run of ``done``
    steps returns (seeded minibatches), so one run gives a whole learning curve."""
    steps = config.baseline_steps if steps is None else int(steps)
    torch.manual_seed(seed)
    model = ImageClassifier(build_backbone(name, tuple(images.shape[2:]), config.paper_sizes),
                            0 if clinical is None else clinical.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=config.baseline_learning_rate)
    weight = positive_weight(labels)
    model.train()
    batch_size = min(config.baseline_batch_size, len(labels))
    for step, rows in enumerate(minibatches(len(labels), batch_size, steps, seed)):
        if task is not None:
            task.report(step / steps, f"{name} step {step + 1}")
        logits = model(images[rows], None if clinical is None else clinical[rows])
        loss = F.binary_cross_entropy_with_logits(logits, labels[rows], pos_weight=weight)
        descend(optimizer, loss)
        if snapshot is not None:
            model.eval()
            snapshot(step + 1, model)
            model.train()
    model.eval()
    return model


@torch.no_grad()
def predict_image_classifier(model: ImageClassifier, images: torch.Tensor,
                             clinical: torch.Tensor | None) -> torch.Tensor:
    """P(responder) (N,) for the test fold."""
    return torch.sigmoid(model(images, clinical))
