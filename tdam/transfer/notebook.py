"""What notebook 07 (transfer) runs: its validated parameters and the list of transfer runs they describe.

Embedded mode (``params_files`` empty, the default): the ImageNet backbones come from
``tdam.train.ensure_checkpoint`` (the runs notebook 01 trains; trained here first when missing), and each WS-DAN /
ASL run is the paper's recipe (``params/transfer/_recipe_*.yaml``) with a tiny schedule on the embedded datasets.
Real mode: each name in ``params_files`` is a ``params/transfer/`` file; ``data_dir`` / ``backbone_checkpoint``
override its placeholders.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tdam.transfer.run import TASK_DATASETS, TransferConfig, load_transfer_config

__all__ = ["TransferNotebookParams"]

_ATTENTIONS = (None, "td", "se", "cbam", "eca", "fca")


@dataclass
class TransferNotebookParams:
    """Notebook 07's parameters (validated on construction; ValueError naming the valid choices)."""

    params_files: list[str] = field(default_factory=list)
    data_dir: str | None = None
    backbone_checkpoint: str | None = None
    imagenet_arch: str = "resnet18"
    imagenet_attentions: list[str | None] = field(default_factory=lambda: ["td"])
    imagenet_profile: str = "smoke"
    wsdan_datasets: list[str] = field(default_factory=lambda: ["cub200"])
    asl_datasets: list[str] = field(default_factory=lambda: ["coco2014"])
    data_size: str = "default"
    img_size: int = 64
    batch_size: int = 16
    epochs: int = 1
    steps_per_epoch: int | None = 6
    val_batches: int | None = None
    num_attentions: int = 8
    wsdan_lr: float | None = None
    asl_lr: float | None = 1e-3
    ema_decay: float | None = 0.9
    asl_onecycle_epochs: int | None = 2
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.params_files, (list, tuple)):
            raise ValueError(f"params_files={self.params_files!r}: expected a list of params/transfer names")
        for a in self.imagenet_attentions:
            if a not in _ATTENTIONS and a != "plain":
                raise ValueError(f"imagenet_attentions: {a!r} is not valid: valid choices are {list(_ATTENTIONS)}")
        for name, valid in (("wsdan_datasets", TASK_DATASETS["wsdan"]), ("asl_datasets", TASK_DATASETS["asl"])):
            for d in getattr(self, name):
                if d not in valid:
                    raise ValueError(f"{name}: {d!r} is not valid: valid choices are {list(valid)}")
        if not self.params_files and not (self.wsdan_datasets or self.asl_datasets):
            raise ValueError("nothing to run: give params_files or at least one of wsdan_datasets / asl_datasets")
        if not self.params_files and not self.imagenet_attentions:
            raise ValueError("imagenet_attentions is empty: name at least one backbone (e.g. ['td', None])")
        for name in ("img_size", "batch_size", "epochs", "num_attentions"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r}: expected a positive integer")
        if self.data_size not in ("default", "tiny"):
            raise ValueError(f"data_size={self.data_size!r} is not valid: valid choices are ['default', 'tiny']")
        if not self.params_files:
            self.embedded_configs({a: None for a in self.imagenet_attentions})  # validates every run's config

    def backbones(self) -> dict[str | None, str]:
        """attention -> ImageNet checkpoint path (embedded mode), trained by the shared trainer when missing."""
        from tdam.train import ensure_checkpoint

        out = {}
        for a in self.imagenet_attentions:
            att = None if a in (None, "plain") else a
            out[att] = str(ensure_checkpoint(self.imagenet_arch, att, profile=self.imagenet_profile,
                                             device=self.device))
        return out

    def _overrides(self, task: str) -> dict[str, Any]:
        o: dict[str, Any] = dict(img_size=self.img_size, batch_size=self.batch_size, epochs=self.epochs,
                                 steps_per_epoch=self.steps_per_epoch, val_batches=self.val_batches,
                                 data_size=self.data_size, device=self.device, seed=self.seed, workers=0,
                                 progress=False, log_interval=10**6)
        if task == "wsdan":
            o.update(num_attentions=self.num_attentions, lr=self.wsdan_lr)
        else:
            o.update(lr=self.asl_lr, model_ema_decay=self.ema_decay, onecycle_epochs=self.asl_onecycle_epochs)
        return o

    def embedded_configs(self, backbones: dict[str | None, str | None]) -> list[TransferConfig]:
        """One config per (dataset, backbone): recipe + tiny schedule; ``None`` checkpoints mean 'validate only'."""
        configs = []
        for task, datasets in (("wsdan", self.wsdan_datasets), ("asl", self.asl_datasets)):
            for ds in datasets:
                for att, ckpt in backbones.items():
                    att = None if att == "plain" else att
                    tag = f"{self.imagenet_arch}_{att or 'plain'}"
                    kw = dict(backbone_checkpoint=ckpt) if ckpt else dict(
                        random_backbone=True, model={"arch": self.imagenet_arch, "attention": att})
                    configs.append(load_transfer_config(
                        f"_recipe_{task}", dataset=ds, name=f"{ds}_{task}_{tag}-embedded-s{self.seed}",
                        **kw, **self._overrides(task)))
        return configs

    def configs(self, backbones: dict[str | None, str] | None = None) -> list[TransferConfig]:
        """The transfer runs of this notebook."""
        if self.params_files:
            return [load_transfer_config(p, data_dir=self.data_dir, backbone_checkpoint=self.backbone_checkpoint,
                                         device=self.device) for p in self.params_files]
        return self.embedded_configs(backbones if backbones is not None else self.backbones())
