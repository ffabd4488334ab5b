"""Where each value of the paper recipes comes from: the paper, the authors' script or the official code, or tdam.

The paper's supplement (§1.1) states some values and says the ResNet and MobileNetV3 models were trained with timm's
training script, ConvNeXt-T with the "official source code and settings"; every value it does not state is that
code's default. The two codes, as cited below:

- the authors' script: ``training_and_analysis_scripts/timm_td_train.py`` in shantanuj/TDAM_Top_down_attention_module
  (commit b8cf1f2), a copy of timm 0.5's ``train.py``; ``L<n>`` is its line. Their model's evaluation settings are in
  ``modules_and_models/timm_td_resnet.py`` (``_cfg``, line 309). The public README's command
  (``--sched cosine --epochs 150 --warmup-epochs 5 --lr 0.4 --batch-size 128 --amp`` on 4 GPUs) agrees.
- the official ConvNeXt code: facebookresearch/ConvNeXt ``main.py`` (``main L<n>``) and ``utils.py``.

**The reading of "160 epochs including 5 warm-up epochs"** (110 for ResNet-18/34): timm's script runs ``--epochs``
of cosine (the warm-up inside it) and then ``--cooldown-epochs`` (default 10) at ``--min-lr``. So 160 in all is
``--epochs 150`` plus the 10 cool-down epochs, which is what the public README's commands pass (150 for ResNet-50,
100 for ResNet-34); that is the recipe here (``epochs: 160, cooldown_epochs: 10``). The other reading, ``--epochs
160`` plus 10 cool-down epochs (170 in all), is ``--epochs 170`` with the same fields.

:func:`explain_config` prints a config field by field with the source of each value (``python -m tdam.train --config
<file> --explain``); :func:`provenance_table` writes the README's tables from :data:`SOURCES`, the one place these
facts live. A value that differs from the recipe file's (a profile, an override) is reported as such.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping

import yaml

from tdam.paths import params_dir
from tdam.train.config import TrainConfig, load_yaml_with_base

__all__ = ["SOURCES", "RECIPES", "recipe_family", "explain_config", "provenance_table"]

PAPER, SCRIPT, OFFICIAL, TDAM = "paper", "authors' script", "official code", "tdam"

_S = "timm_td_train.py"
_BF16 = ("tdam's choice: bf16 autocast on GPUs that have it (same exponent range as fp32: no loss scaling, no "
         "skipped steps), fp16 + GradScaler on older GPUs, fp32 on CPU")
_RUN = "not part of the recipe (where the data is, how many loader processes)"

#: the recipe files of each family, and where each field's value comes from: (kind, words)
SOURCES: dict[str, dict[str, tuple[str, str]]] = {
    "resnet": {
        "dataset": (PAPER, "ImageNet-1k (ILSVRC 2012) training set"),
        "data_dir": (TDAM, _RUN),
        "workers": (TDAM, _RUN),
        "img_size": (PAPER, "224 x 224 training crops and centre crop 224 (§1.1)"),
        "crop_pct": (SCRIPT, "the model's default_cfg crop_pct 0.875 (timm_td_resnet.py line 309): resize 256, "
                             "centre crop 224"),
        "interpolation": (SCRIPT, "the model's default_cfg interpolation 'bilinear' (timm_td_resnet.py line 309), "
                                  "used for evaluation"),
        "train_interpolation": (SCRIPT, f"--train-interpolation default 'random' ({_S} L211): bilinear or bicubic "
                                        "per image"),
        "color_jitter": (SCRIPT, f"--color-jitter default 0.4 ({_S} L173)"),
        "scale": (SCRIPT, f"--scale default 0.08 1.0 ({_S} L165)"),
        "hflip": (PAPER, "horizontal flips with probability 0.5 (§1.1)"),
        "epochs": (PAPER, "\"160 epochs\" (ResNet-50/101) / 110 (ResNet-18/34, MobileNetV3) \"including 5 warm-up "
                          "epochs\" (§1.1): read as --epochs 150 / 100 + the script's 10 cool-down epochs (see "
                          "cooldown_epochs)"),
        "batch_size": (PAPER, "lr 0.1 per 128 images (§1.1); the public command: 128 per GPU on 4 GPUs"),
        "opt": (PAPER, "SGD with momentum 0.9 (§1.1); timm's 'sgd' is Nesterov SGD, no weight decay on biases and "
                       f"norm weights ({_S} L544 create_optimizer_v2)"),
        "momentum": (PAPER, "momentum 0.9 (§1.1)"),
        "weight_decay": (PAPER, f"weight decay 1e-4 (§1.1; the script's default is 2e-5, {_S} L114)"),
        "lr_base": (PAPER, "learning rate 0.1 per 128 images, scaled linearly with the batch (§1.1)"),
        "lr_base_size": (PAPER, "learning rate 0.1 per 128 images (§1.1)"),
        "sched": (PAPER, "cosine learning-rate schedule (§1.1), timm's CosineLRScheduler"),
        "lr_step": (SCRIPT, f"the scheduler is stepped once per epoch: lr_scheduler.step(epoch + 1) ({_S} L772); "
                            "timm 0.5's cosine in epochs ignores step_update (L887)"),
        "warmup_epochs": (PAPER, "\"including 5 warm-up epochs\" (§1.1)"),
        "warmup_lr": (SCRIPT, f"--warmup-lr default 1e-4 ({_S} L141)"),
        "warmup_prefix": (SCRIPT, "timm's cosine counts the warm-up inside its length (no warmup_prefix in timm 0.5)"),
        "min_lr": (SCRIPT, f"--min-lr default 1e-6 ({_S} L143)"),
        "cooldown_epochs": (SCRIPT, f"--cooldown-epochs default 10 ({_S} L155): epochs at min_lr after the cosine; "
                                    "total = --epochs + 10 (L595 create_scheduler)"),
        "smoothing": (PAPER, "label smoothing 0.1 (§1.1; also the script's default, L209)"),
        "mixup": (PAPER, "Mixup 0.5 from ResNet-50 up (§1.1); smaller models: the script's default 0 (L195)"),
        "cutmix": (PAPER, "CutMix 0.5 from ResNet-50 up (§1.1); smaller models: the script's default 0 (L197)"),
        "amp": (TDAM, _BF16 + "; the authors' public command passes --amp (native fp16 autocast + GradScaler)"),
        "cudnn_benchmark": (SCRIPT, f"torch.backends.cudnn.benchmark = True ({_S} L47)"),
        "tf32": (SCRIPT, "PyTorch's defaults of early 2022 (matmul and cuDNN TF32 on; matmul off from PyTorch 1.12)"),
    },
    "convnext": {
        "dataset": (PAPER, "ImageNet-1k (ILSVRC 2012) training set"),
        "data_dir": (TDAM, _RUN),
        "workers": (TDAM, _RUN),
        "img_size": (OFFICIAL, "--input_size default 224 (main L62)"),
        "crop_pct": (OFFICIAL, "--crop_pct default None: 224/256 below 384 px (datasets.py L85-87)"),
        "interpolation": (OFFICIAL, "bicubic resize for evaluation (datasets.py L90)"),
        "train_interpolation": (OFFICIAL, "--train_interpolation default 'bicubic' (main L107); null here: the "
                                          "same as interpolation"),
        "scale": (OFFICIAL, "timm's create_transform default scale 0.08-1 (datasets.py L58)"),
        "hflip": (OFFICIAL, "timm's create_transform default hflip 0.5"),
        "auto_augment": (OFFICIAL, "--aa default 'rand-m9-mstd0.5-inc1' (main L103)"),
        "reprob": (OFFICIAL, "--reprob default 0.25 (main L114)"),
        "remode": (OFFICIAL, "--remode default 'pixel' (main L116)"),
        "epochs": (OFFICIAL, "--epochs default 300 (main L53)"),
        "batch_size": (PAPER, "122 images per GPU x 8 accumulation steps x 4 GPUs = 3904 (§1.1)"),
        "accum_steps": (PAPER, "gradient accumulation 8 (§1.1; main's --update_freq, L54)"),
        "opt": (OFFICIAL, "--opt default 'adamw' (main L74)"),
        "weight_decay": (OFFICIAL, "--weight_decay default 0.05 (main L84), constant (weight_decay_end None: L363)"),
        "lr": (OFFICIAL, "--lr default 4e-3 (main L90), used as given at any batch (main L358: not scaled); the "
                         "paper's 3904-image batch ran with it"),
        "lr_base": (TDAM, "only when lr is null (the smoke profile): 4e-3 per 4096 images"),
        "lr_base_size": (TDAM, "only when lr is null (the smoke profile)"),
        "sched": (OFFICIAL, "utils.cosine_scheduler (main L358, utils.py L428-445)"),
        "lr_step": (OFFICIAL, "a value per update (engine.py L36-41)"),
        "warmup_epochs": (OFFICIAL, "--warmup_epochs default 20 (main L95)"),
        "warmup_lr": (OFFICIAL, "cosine_scheduler's start_warmup_value default 0 (utils.py L429)"),
        "warmup_prefix": (OFFICIAL, "the warm-up precedes the cosine, which spans the remaining 280 epochs "
                                    "(utils.py L436-442)"),
        "min_lr": (OFFICIAL, "--min_lr default 1e-6 (main L93)"),
        "cooldown_epochs": (OFFICIAL, "none: the schedule ends with the run"),
        "smoothing": (OFFICIAL, "--smoothing default 0.1 (main L105)"),
        "mixup": (OFFICIAL, "--mixup default 0.8 (main L124)"),
        "cutmix": (OFFICIAL, "--cutmix default 1.0 (main L126)"),
        "model": (OFFICIAL, "TRAINING.md's ConvNeXt-T command: --drop_path 0.1; --layer_scale_init_value default 1e-6 "
                            "(main L64)"),
        "model_ema": (OFFICIAL, "TRAINING.md's ConvNeXt-T command: --model_ema true --model_ema_eval true; best and "
                                "best-EMA checkpoints (main L412-445): best.pth, best_ema.pth"),
        "model_ema_decay": (OFFICIAL, "--model_ema_decay default 0.9999 (main L69), constant from the first update "
                                      "(timm ModelEma, main L314)"),
        "amp": (TDAM, _BF16 + "; the official code: --use_amp (fp16 + GradScaler), off by default (main L191)"),
        "cudnn_benchmark": (OFFICIAL, "cudnn.benchmark = True (main L213)"),
        "tf32": (TDAM, "PyTorch's defaults of 2022 (matmul TF32 until PyTorch 1.12, cuDNN TF32 on)"),
    },
}
SOURCES["resnet"]["model"] = (PAPER, "the Table 1 model (the params file's model: mapping)")
SOURCES["convnext"]["dataset"] = SOURCES["resnet"]["dataset"]

#: the params file whose values :data:`SOURCES` describes, per family and architecture
RECIPES = {"resnet": "_recipe_resnet.yaml", "resnet_large": "_recipe_resnet_large.yaml",
           "convnext": "_recipe_convnext.yaml"}


def recipe_family(cfg: TrainConfig) -> str:
    """``'convnext'`` for a ConvNeXt model, else ``'resnet'`` (ResNets and MobileNetV3: the authors' timm script)."""
    return "convnext" if str(cfg.model.get("arch", "")).startswith("convnext") else "resnet"


def _recipe_file(cfg: TrainConfig) -> str:
    family = recipe_family(cfg)
    if family == "resnet" and cfg.model.get("arch") in ("resnet50", "resnet101"):
        return RECIPES["resnet_large"]
    return RECIPES[family]


def _format(value: Any) -> str:
    """``value`` as written in params files: ``null``, ``true``, ``[0.08, 1.0]``."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def explain_config(cfg: TrainConfig) -> str:
    """Every field of ``cfg``, its value and where that value comes from: ``paper``, ``authors' script``,
    ``official code`` or ``tdam`` (with the words and the file/line), as :data:`SOURCES` records for the model's
    recipe family; a value that is not the recipe file's says so (a profile or an override set it); a field the
    recipe leaves at tdam's default says that."""
    family, recipe_name = recipe_family(cfg), _recipe_file(cfg)
    recipe = load_yaml_with_base(params_dir() / "imagenet" / recipe_name)
    defaults = TrainConfig(model=cfg.model).to_dict()
    sources = SOURCES[family]
    lines = [f"# recipe family: {family} (params/imagenet/{recipe_name}); sources: paper = supplement §1.1, "
             f"authors' script / official code: see tdam/train/provenance.py"]
    for f in fields(TrainConfig):
        value = getattr(cfg, f.name)
        expected = recipe.get(f.name, defaults[f.name])     # the recipe file's value (tdam's default if unset)
        if not _same(expected, value):
            kind = "override"
            words = (f"not the recipe's value (recipe: {_format(expected)}): set by "
                     + (f"the profile {cfg.profile!r} or an override" if cfg.profile else "an override"))
        elif f.name in sources:
            kind, words = sources[f.name]
        else:
            kind, words = TDAM, "tdam's default (the paper and the code have no such setting, or it does not " \
                                "change the run)"
        lines.append(f"{f.name}: {_format(value)}  # [{kind}] {words}")
    return "\n".join(lines)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return all(b.get(k) == v for k, v in a.items())
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return [float(x) for x in a] == [float(x) for x in b]
    return a == b


def provenance_table(family: str) -> str:
    """The README's Markdown table of ``family``'s sources (``'resnet'`` or ``'convnext'``): field, value in the
    recipe file, source, words."""
    from tdam.validation import check_choice

    check_choice("family", family, list(SOURCES))
    recipe = load_yaml_with_base(params_dir() / "imagenet" / RECIPES[family])
    large = load_yaml_with_base(params_dir() / "imagenet" / RECIPES["resnet_large"]) if family == "resnet" else {}
    defaults = TrainConfig().to_dict()
    rows = ["| field | value | source | where / words |", "|---|---|---|---|"]
    for name, (kind, words) in SOURCES[family].items():
        if name == "model":
            value = "see the params file" if family == "resnet" else _format(recipe.get("model"))
        elif name in large and large[name] != recipe.get(name):
            value = f"{_format(recipe.get(name))} (R-50/101: {_format(large[name])})"
        else:
            value = _format(recipe.get(name, defaults[name]))
        rows.append(f"| `{name}` | {value} | {kind} | {words.replace('|', '/')} |")
    return "\n".join(rows)
