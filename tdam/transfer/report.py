"""Transfer results: cached runs, the results table, the setup beside the paper's, and the crop/drop figure."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from tdam.checkpoint import read_checkpoint
from tdam.errors import ConfigError
from tdam.evaluation.provenance import EvalFacts, eval_facts
from tdam.reference import PROVENANCE_COLUMNS, model_key
from tdam.runs import BEST_FILE, LAST_FILE
from tdam.transfer.run import TransferConfig, build_transfer_datasets, run_transfer, transfer_key

__all__ = ["TransferResult", "ensure_transfer_run", "results_table", "setup_table", "PAPER_SETUP",
           "crop_drop_examples", "crop_drop_figure", "transfer_key", "dataset_summary", "chance_level",
           "save_results", "crop_drop_figures", "crop_drop_panels", "transfer_facts"]

# The paper's settings (supplement §1.3, which follows the WS-DAN and ASL recipes): what each run is compared against.
# ASL: the paper states 40 epochs and a one-cycle schedule (max lr 1e-4, pct_start 0.2); the 41 epochs of an
# 80-epoch one-cycle that tdam runs are the official ASL code's (Stop_epoch 40 checked after the epoch, OneCycleLR
# with epochs=80), not the paper's words. Mixed precision: the official ASL code trains with fp16 autocast and a
# GradScaler; tdam's `amp: auto` uses bf16 autocast where the GPU supports it (fp32's exponent range: no loss
# scaling), fp16 + GradScaler otherwise, fp32 on CPU -- a deviation in rounding, not in the recipe.
PAPER_SETUP = {
    "wsdan": {"img_size": 448, "batch_size": 12, "epochs": 160, "opt": "momentum", "lr": 1e-3,
              "schedule": "x0.9 every 2 epochs", "weight_decay": 1e-5, "num_attentions": 32, "beta": 0.05,
              "ema": False},
    "asl": {"img_size": 448, "batch_size": 64, "epochs": 40, "opt": "adam", "lr": 1e-4,
            "schedule": "one-cycle (pct 0.2)", "weight_decay": 1e-4, "num_attentions": None, "beta": None,
            "ema": True},
}
_METRICS = {"wsdan": ("top1_raw", "top1_refined"), "asl": ("mAP", "CF1", "OF1")}


@dataclass
class TransferResult:
    """A finished transfer run: its config, folder, per-epoch history (every task metric) and best epoch."""
    config: TransferConfig
    run_dir: Path
    history: list[dict[str, Any]]
    best: dict[str, Any] | None

    @property
    def checkpoint(self) -> Path:
        best = self.run_dir / BEST_FILE
        return best if best.is_file() else self.run_dir / LAST_FILE

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1]

    def model(self, use_ema: bool = False) -> torch.nn.Module:
        """The trained transfer model (WS-DAN with its feature centers, or the ASL backbone), in eval mode."""
        from tdam.checkpoint import load_model
        from tdam.transfer.models import load_wsdan

        loader = load_wsdan if self.config.task == "wsdan" else load_model
        return loader(self.checkpoint, use_ema=use_ema).eval()


def ensure_transfer_run(tcfg: TransferConfig, *, wait: bool = True, train_fn=None) -> TransferResult:
    """The finished run of ``tcfg``: reused when its folder holds a finished run of the same config, resumed when
    interrupted, else trained (``tdam.train.cache.ensure_run``: the same lock / reuse / resume mechanism as the
    ImageNet runs). The folder name carries a hash of :func:`transfer_key` (backbone digest included), so a changed
    input trains a new run beside the old one; only an explicit ``output_dir`` holding a DIFFERENT config raises
    ValueError (never silently reused). ``wait=False``: refuse at once when another process holds the run
    (:class:`~tdam.errors.RunLockedError`, ``python -m tdam.transfer``) instead of waiting. ``train_fn(tcfg)``: trains
    the config and returns its ``RunResult`` (default :func:`~tdam.transfer.run.run_transfer`)."""
    import dataclasses

    from tdam.train.cache import ensure_run

    if tcfg.backbone_assumed():
        raise ConfigError(f"backbone_checkpoint: {tcfg.backbone.note}; nothing can be trained without it")
    train = train_fn or run_transfer

    def train_cfg(cfg):
        return train(dataclasses.replace(tcfg, train=cfg))

    inputs = {"backbone_checkpoint": tcfg.backbone_checkpoint} if tcfg.backbone_checkpoint else None
    ensure_run(tcfg.train, key=transfer_key(tcfg), train_fn=train_cfg, inputs=inputs, wait=wait)
    run_dir = tcfg.train.run_dir()
    ck = read_checkpoint(run_dir / LAST_FILE)
    return TransferResult(tcfg, run_dir, list(ck["metrics"]["history"]), ck["metrics"]["best"])


def _backbone_label(tcfg: TransferConfig) -> str:
    return tcfg.train.model_tag() + (" (random init)" if tcfg.random_backbone else "")


def chance_level(tcfg: TransferConfig) -> float:
    """Chance of the task's main metric on the validation split: 100 / K top-1 for WS-DAN; for ASL the mAP of a
    random ranking, which in expectation is about 100 x the mean class prevalence."""
    _, val_set = build_transfer_datasets(tcfg)
    if tcfg.task == "wsdan":
        return 100.0 / len(val_set.classes)
    targets = torch.stack([torch.as_tensor(t) for t in val_set.targets]).float()
    return 100.0 * float(targets.mean(0).mean())


def dataset_summary(configs: Sequence[TransferConfig]) -> pd.DataFrame:
    """Images and classes of every dataset the runs use (read through the real readers)."""
    rows, seen = [], set()
    for c in configs:
        if (c.dataset, c.data_dir, c.data_size) in seen:
            continue
        seen.add((c.dataset, c.data_dir, c.data_size))
        train_set, val_set = build_transfer_datasets(c)
        rows.append({"dataset": c.dataset, "classes": len(train_set.classes), "train_images": len(train_set),
                     "val_images": len(val_set)})
    return pd.DataFrame(rows)


def transfer_facts(result: TransferResult) -> EvalFacts:
    """What the numbers of a transfer run were computed from (:class:`~tdam.evaluation.provenance.EvalFacts`): the
    run folder, the epochs its ``last.pth`` trained, the backbone's t as stored in the transfer checkpoint (the
    transfer model runs the backbone as built), the run's ``train_on`` (a TD backbone only), the validation images
    each epoch evaluated (the whole split, or ``val_batches`` batches per process), the dataset, the image size and
    the class count."""
    train = result.config.train
    last = result.run_dir / LAST_FILE
    stored = read_checkpoint(last)
    _, val_set = build_transfer_datasets(result.config)
    images = len(val_set)
    if train.val_batches:
        images = min(images, int(train.val_batches) * int(train.batch_size) * int(stored.get("world_size") or 1))
    stored_config = dict(stored["model_config"])
    # WS-DAN stores its backbone's config inside its own; ASL's model is the backbone itself
    backbone = dict(stored_config["backbone"]) if stored_config.get("transfer") == "wsdan" else stored_config
    return eval_facts(last, t_eval=model_key(backbone)["t"] or 1, images={"val": images}, img_size=train.img_size,
                      num_classes=len(val_set.classes), data_dir=result.config.data_dir, stored=stored,
                      model_config=backbone, dataset=result.config.dataset, data_size=result.config.data_size)


def results_table(results: Sequence[TransferResult], task: str | None = None) -> pd.DataFrame:
    """One row per run (of ``task`` 'wsdan' / 'asl' only, if given): framework, dataset, backbone, final and best
    values of the task's metrics (WS-DAN raw and refined top-1; ASL mAP / CF1 / OF1, regular and EMA; ASL's reported
    max(mAP, EMA mAP)), the chance level and the provenance columns of :func:`transfer_facts` (the run, its epochs,
    ``train_on``, profile, t, ``val_images``, data, image size, classes). Metric columns no row has are dropped."""
    if task is not None and task not in _METRICS:
        raise ValueError(f"task={task!r} is not valid: valid choices are {list(_METRICS)} or None")
    rows = []
    for r in results:
        if task is not None and r.config.task != task:
            continue
        t, h = r.config.task, r.history
        row: dict[str, Any] = {"framework": "WS-DAN" if t == "wsdan" else "ASL", "dataset": r.config.dataset,
                               "backbone": _backbone_label(r.config)}
        for m in _METRICS[t]:
            vals = [e.get(f"val_{m}") for e in h if e.get(f"val_{m}") is not None]
            row[f"{m}"] = vals[-1] if vals else None
            row[f"best_{m}"] = max(vals) if vals else None
            ema = [e.get(f"ema_val_{m}") for e in h if e.get(f"ema_val_{m}") is not None]
            if ema:
                row[f"ema_{m}"] = ema[-1]
        if t == "asl":
            row["reported_mAP"] = max(v for v in (row.get("best_mAP"), *[e.get("ema_val_mAP") for e in h])
                                      if v is not None)  # ASL reports max(mAP regular, mAP EMA)
        row["chance"] = chance_level(r.config)
        row.update(transfer_facts(r).columns())
        row["run_dir"] = str(r.run_dir)
        rows.append(row)
    table = pd.DataFrame(rows)
    empty = [c for c in table.columns if c not in PROVENANCE_COLUMNS and table[c].isna().all()]
    return table.drop(columns=empty)                # every row's facts stay, also one all rows lack (profile)


def save_results(results: Sequence[TransferResult], table: pd.DataFrame, setup: pd.DataFrame,
                 folder: str | Path | None = None) -> Path:
    """Write results.csv, setup.csv and provenance.json (backbone checkpoints, data, device, versions) to
    ``runs/07_transfer/`` (or ``folder``); returns the folder."""
    from tdam.notebook import provenance
    from tdam.paths import runs_dir
    from tdam.transfer.run import RUNS_SUBDIR, transfer_data_root

    out = Path(folder) if folder is not None else runs_dir() / RUNS_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "results.csv", index=False)
    setup.to_csv(out / "setup.csv")
    prov = [provenance(checkpoint=r.config.backbone_checkpoint, data=transfer_data_root(r.config),
                       device=r.config.train.device if r.config.train.device != "auto" else None,
                       run_dir=str(r.run_dir), transfer_checkpoint=str(r.checkpoint)) for r in results]
    (out / "provenance.json").write_text(json.dumps(prov, indent=2, default=str))
    return out


def setup_table(configs: Sequence[TransferConfig]) -> pd.DataFrame:
    """Our settings beside the paper's, one column pair per framework present in ``configs``."""
    out: dict[str, dict[str, Any]] = {}
    for c in configs:
        t = c.task
        if f"{t}: paper" in out:
            continue
        ours = {"img_size": c.train.img_size, "batch_size": c.global_batch(), "epochs": c.train.epochs,
                "opt": c.train.opt if t == "asl" else "momentum", "lr": c.train.resolved_lr(),
                "schedule": (f"x{c.lr_decay_rate} every {c.lr_decay_epochs} epochs" if t == "wsdan"
                             else f"OneCycle({c.onecycle_epochs} ep, pct {c.pct_start})"),
                "weight_decay": c.train.weight_decay, "num_attentions": c.num_attentions if t == "wsdan" else None,
                "beta": c.beta if t == "wsdan" else None, "ema": c.train.model_ema}
        if c.train.steps_per_epoch:
            ours["epochs"] = f"{c.train.epochs} x {c.train.steps_per_epoch} updates"
        out[f"{t}: paper"] = PAPER_SETUP[t]
        out[f"{t}: this run"] = ours
    return pd.DataFrame(out)


@torch.no_grad()
def crop_drop_examples(model: torch.nn.Module, images: torch.Tensor, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Training-time augmentation of ``images`` (normalised) by a trained WS-DAN ``model``: the sampled maps, the
    attention crops (theta ~ U(0.4, 0.6), padding 0.1) with their boxes and the attention drops (U(0.2, 0.5))."""
    from tdam.transfer.wsdan import attention_crop, attention_drop, sample_attention_maps

    model.eval()
    g = torch.Generator().manual_seed(seed)
    out = model(images)
    maps = sample_attention_maps(out.attention_maps, 2, generator=g)
    crops, boxes = attention_crop(images, maps[:, :1], (0.4, 0.6), 0.1, generator=g)
    drops = attention_drop(images, maps[:, 1:], (0.2, 0.5), generator=g)
    return {"images": images, "crop_maps": maps[:, 0], "drop_maps": maps[:, 1], "crops": crops, "boxes": boxes,
            "drops": drops, "mean_map": out.attention_maps.mean(1)}


CROP_BOX_COLOUR = "#ff00ff"  # the crop box, on the jet-coloured attention map


def crop_drop_panels(images: torch.Tensor, examples: dict[str, torch.Tensor], *, title: str = ""):
    """Draw :func:`crop_drop_examples` of ``images`` (N, 3, H, W), normalised with the ImageNet mean/std: one row per
    image -- the image, the sampled crop attention map with the crop box, the resized crop, the drop attention map,
    the dropped image -- a legend for the box, a colour bar for the maps. ``title``: the model and the data.

    Printed at the full text width (:data:`tdam.evaluation.figures.PAGE_WIDTH_IN`)."""
    import matplotlib as mpl
    import matplotlib.pyplot as plt
    import torch.nn.functional as F

    from tdam.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from tdam.evaluation.figures import HEATMAP, PAGE_WIDTH_IN, PRINT_STYLE, figure_title, heatmap_colorbar

    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]

    def show(x):
        return (x * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()

    def heat(m):  # upsampled to the image, min-max normalised to [0, 1] like the colour bar
        up = F.interpolate(m[None, None], size=size, mode="bilinear", align_corners=True)[0, 0]
        return ((up - up.min()) / (up.max() - up.min()).clamp_min(1e-12)).numpy()

    n, size = len(images), images.shape[-2:]
    cols = ["image", "crop attention\nmap + crop box", "attention crop\n(resized)", "drop attention\nmap",
            "attention drop"]
    panel = PAGE_WIDTH_IN / len(cols)
    with mpl.rc_context(PRINT_STYLE):
        fig, axes = plt.subplots(n, len(cols), figsize=(PAGE_WIDTH_IN, n * panel + 1.3), squeeze=False,
                                 layout="constrained")
        for r in range(n):
            h0, h1, w0, w1 = examples["boxes"][r].tolist()
            panels = [(show(images[r]), None), (show(images[r]), heat(examples["crop_maps"][r])),
                      (show(examples["crops"][r]), None), (show(images[r]), heat(examples["drop_maps"][r])),
                      (show(examples["drops"][r]), None)]
            for c, (img, hm) in enumerate(panels):
                ax = axes[r][c]
                ax.imshow(img)
                if hm is not None:
                    ax.imshow(hm, cmap=HEATMAP, alpha=0.45, vmin=0, vmax=1)
                if c == 1:
                    ax.add_patch(mpl.patches.Rectangle((w0 - 0.5, h0 - 0.5), w1 - w0, h1 - h0, fill=False,
                                                       edgecolor=CROP_BOX_COLOUR, lw=1.2))
                ax.set_xticks([]), ax.set_yticks([])
                if r == 0:
                    ax.set_title(cols[c])
        box = mpl.patches.Patch(fill=False, edgecolor=CROP_BOX_COLOUR, lw=1.2,
                                label="crop box: where the crop map ≥ θ × its maximum, padded")
        fig.legend(handles=[box], loc="outside lower center", frameon=False)
        heatmap_colorbar(fig, axes, "attention map, normalised to [0, 1]")
        fig.suptitle(figure_title("WS-DAN attention cropping and dropping (training-time augmentation)", title,
                                  width_in=PAGE_WIDTH_IN))
    return fig


def crop_drop_figure(result: TransferResult, n: int = 4, *, seed: int = 0, name: str | None = None):
    """Figure of :func:`crop_drop_panels` for ``n`` validation images of a WS-DAN run, titled with the dataset and
    the backbone. Saved as PNG + PDF under figures/, by default as
    ``07_transfer_crop_drop_<dataset>-<backbone>-<attention>[-t<t>]-<data>`` (:func:`tdam.notebook.figure_name`; the
    tiny embedded set is ``shapes-tiny``), so runs on other backbones or data keep their own files; ``name`` overrides
    the file stem."""
    from tdam.models import TD_OPTION_DEFAULTS
    from tdam.notebook.outputs import EMBEDDED_DATA_TAG, figure_name, save_figure

    if result.config.task != "wsdan":
        raise ValueError("crop/drop examples need a WS-DAN run")
    _, val_set = build_transfer_datasets(result.config)
    idx = torch.linspace(0, len(val_set) - 1, n).long().tolist()
    images = torch.stack([val_set[i][0] for i in idx])
    ex = crop_drop_examples(result.model(), images, seed=seed)
    cfg = result.config
    data = cfg.data_dir or f"embedded tdam-shapes ({cfg.data_size})"
    fig = crop_drop_panels(images, ex, title=f"{_backbone_label(cfg)} on {cfg.dataset}, {data} val")
    model = cfg.train.model
    t = {**TD_OPTION_DEFAULTS, **{k: v for k, v in model.items() if v is not None}}["t"] \
        if model.get("attention") == "td" else None
    tag = cfg.data_dir or (None if cfg.data_size == "default" else f"{EMBEDDED_DATA_TAG}-{cfg.data_size}")
    stem = name or figure_name(f"07_transfer_crop_drop_{cfg.dataset}", backbone=model["arch"],
                               attention=model.get("attention"), t=t, data=tag)
    save_figure(fig, stem)
    return fig


def crop_drop_figures(results: Sequence[TransferResult], n: int = 4, *, seed: int = 0) -> list:
    """:func:`crop_drop_figure` for the first WS-DAN run of every dataset (the first backbone of the list)."""
    firsts: dict[str, TransferResult] = {}
    for r in results:
        if r.config.task == "wsdan":
            firsts.setdefault(r.config.dataset, r)
    return [crop_drop_figure(r, n, seed=seed) for r in firsts.values()]
