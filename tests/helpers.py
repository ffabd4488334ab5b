"""Small stand-ins and reference computations shared by several test files."""
import torch
import torch.nn as nn


class TinyBackbone(nn.Module):
    """A timm-style stand-in: ``forward_features`` gives a (B, 6, H/4, W/4) map, ``fc`` a 1000-way head."""

    num_features = 6

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, stride=4, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.fc = nn.Linear(6, num_classes)
        self.model_config = {}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x).mean((2, 3)))

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Identity() if num_classes == 0 else nn.Linear(6, num_classes)


def ref_iou(a, b) -> float:
    """IoU of two xyxy boxes with inclusive pixel corners (ILSVRC devkit convention), plain Python."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = iw * ih

    def area(r):
        return (r[2] - r[0] + 1) * (r[3] - r[1] + 1)
    return inter / (area(a) + area(b) - inter)
