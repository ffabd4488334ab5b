"""What notebook 07 (transfer) runs: the transfer runs its parameters describe.

The parameters are validated by the shared notebook mechanism (:func:`tdam.notebook.parameters`, defaults from the
notebook's ``parameters`` cell). Embedded mode (``params_files`` empty, the default): the ImageNet backbones are the
cached runs of notebook 01 (:func:`tdam.notebook.checkpoint`, trained first when missing), and each WS-DAN / ASL run
is the paper's recipe (``params/transfer/_recipe_*.yaml``) with a tiny schedule on the embedded datasets. Real mode:
each name in ``params_files`` is a ``params/transfer/`` file (the same runs as ``python -m tdam.transfer --config
<name>``); ``data_dir`` overrides its placeholder, ``checkpoint`` its backbone (a path, a params/imagenet/ name or a
run folder: :mod:`tdam.transfer.backbone`); a dry run accepts a backbone not trained yet and says so.
"""
from __future__ import annotations

from typing import Any

from tdam.notebook import checkpoint, parameters
from tdam.transfer.run import TransferConfig, load_transfer_config

__all__ = ["TransferNotebookParams"]


class TransferNotebookParams:
    """Notebook 07's parameters (``TransferNotebookParams(**values)`` or ``(globals())``), validated on
    construction (``ValueError`` naming the valid choices), and the transfer runs they describe."""

    def __init__(self, values: dict[str, Any] | None = None, **overrides: Any) -> None:
        self.p = p = parameters("07_transfer", values, **overrides)
        if not p.params_files and not (p.wsdan_datasets or p.asl_datasets):
            raise ValueError("nothing to run: give params_files or at least one of wsdan_datasets / asl_datasets")
        if not p.params_files and not p.attentions:
            raise ValueError("attentions is empty: name at least one backbone (e.g. ['td', 'plain'])")
        if not p.params_files:
            self.embedded_configs({a: None for a in p.attentions})  # validates every run's config

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["p"], name)

    def backbones(self) -> dict[str | None, str | None]:
        """attention -> ImageNet checkpoint path (embedded mode), trained by the shared trainer when missing. In a dry
        run nothing is trained: a missing backbone's recipe is printed and its entry is None."""
        from tdam.train import checkpoint_config, describe_recipe, find_checkpoint

        p = self.p
        out: dict[str | None, str | None] = {}
        for a in p.attentions:
            att = None if a in (None, "plain") else a
            if not p.dry_run:
                out[att] = str(checkpoint(p.backbone, att, p.profile, device=p.device))
                continue
            cfg = checkpoint_config(p.backbone, att, p.profile, device=p.device)
            found = find_checkpoint(cfg)
            if found is None:
                print(f"dry run: backbone {cfg.model_tag()} is not trained yet; its recipe:\n"
                      f"{describe_recipe(cfg, gpus=None)}\n", flush=True)
            out[att] = None if found is None else str(found)
        return out

    def _overrides(self, task: str) -> dict[str, Any]:
        p = self.p
        o: dict[str, Any] = dict(img_size=p.img_size, batch_size=p.batch_size, epochs=p.epochs,
                                 steps_per_epoch=p.steps_per_epoch, val_batches=p.val_batches,
                                 data_size=p.data_size, device=p.device, seed=p.seed, workers=0,
                                 progress=False, log_interval=10**6)
        if task == "wsdan":
            o.update(num_attentions=p.num_attentions, lr=p.wsdan_lr)
        else:
            o.update(lr=p.asl_lr, model_ema_decay=p.ema_decay, onecycle_epochs=p.asl_onecycle_epochs)
        return o

    def embedded_configs(self, backbones: dict[str | None, str | None]) -> list[TransferConfig]:
        """One config per (dataset, backbone): recipe + tiny schedule; ``None`` checkpoints mean 'validate only'."""
        p = self.p
        configs = []
        for task, datasets in (("wsdan", p.wsdan_datasets), ("asl", p.asl_datasets)):
            for ds in datasets:
                for att, ckpt in backbones.items():
                    att = None if att == "plain" else att
                    tag = f"{p.backbone}_{att or 'plain'}"
                    kw = dict(backbone_checkpoint=ckpt) if ckpt else dict(
                        random_backbone=True, model={"arch": p.backbone, "attention": att})
                    configs.append(load_transfer_config(
                        f"_recipe_{task}", dataset=ds, name=f"{ds}_{task}_{tag}-embedded-s{p.seed}",
                        **kw, **self._overrides(task)))
        return configs

    def configs(self, backbones: dict[str | None, str] | None = None) -> list[TransferConfig]:
        """The transfer runs of this notebook."""
        p = self.p
        if p.params_files:
            return [load_transfer_config(f, data_dir=p.data_dir, backbone_checkpoint=p.checkpoint, device=p.device,
                                         require_backbone=not p.dry_run) for f in p.params_files]
        return self.embedded_configs(backbones if backbones is not None else self.backbones())

    def transfer_runs(self, configs: list[TransferConfig]) -> list:
        """The finished run of every config (:func:`tdam.transfer.ensure_transfer_run`: reused, resumed or trained);
        a dry run trains nothing, says so and returns no results."""
        from tdam.transfer.report import ensure_transfer_run

        if self.p.dry_run:
            print(f"dry run: {len(configs)} transfer run(s) resolved (the setup above); nothing trained", flush=True)
            return []
        return [ensure_transfer_run(c) for c in configs]
