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


def spawn_ranks(fn, world: int, *args) -> None:
    """Run ``fn(world, *args)`` in ``world`` spawned processes that form one gloo process group on this machine
    (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set as torchrun sets them, one torch thread each). ``fn`` must be a
    module-level function (spawn pickles it by name)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_entry, args=(fn, world, port, args), nprocs=world, join=True, start_method="spawn")


def _rank_entry(rank: int, fn, world: int, port: int, args: tuple) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    fn(world, *args)
