"""tdam.checkpoint: safe reading, public TDAM layouts, mismatch diagnosis, atomic saving, safetensors."""
from __future__ import annotations

import argparse
import copy
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from tdam import checkpoint as ck
from tdam.checkpoint import (CheckpointError, CheckpointMismatchError, CorruptCheckpointError, UnsafeCheckpointError,
                             export_safetensors, extract_state_dict, load_checkpoint, read_checkpoint, save_checkpoint,
                             summarize_state_dict)


# ------------------------------------------------------------------------------------------------------- payloads
class WritesMarker:
    """A custom class whose unpickling would write a marker file (through __setstate__)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).write_text("executed")
        self.__dict__.update(state)


class SystemCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class ExecCall:
    def __reduce__(self):
        return exec, ("import os; os.environ['TDAM_PWNED'] = '1'",)


def _timm_style(sd: dict, **extra) -> dict:
    return {"epoch": 3, "arch": "resnet50", "state_dict": sd, "version": 2, "metric": 76.5,
            "args": argparse.Namespace(model="resnet50", lr=0.1, device=torch.device("cpu"), sched=None,
                                       input_size=(3, 224, 224), mean=[0.485, 0.456, 0.406], amp=True), **extra}


@pytest.fixture
def tiny_sd() -> dict:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).state_dict()


# -------------------------------------------------------------------------------------------------- safe reading
def test_read_timm_style_checkpoint_with_namespace(tmp_path, tiny_sd):
    path = tmp_path / "ckpt.pth.tar"
    torch.save(_timm_style(tiny_sd, state_dict_ema=tiny_sd), path)
    ckpt = read_checkpoint(path)
    assert isinstance(ckpt["args"], argparse.Namespace)
    assert ckpt["args"].lr == 0.1 and ckpt["args"].device == torch.device("cpu") and ckpt["args"].amp is True
    assert ckpt["epoch"] == 3 and ckpt["metric"] == 76.5
    for k, v in tiny_sd.items():
        assert torch.equal(ckpt["state_dict"][k], v)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("where", ["top", "in_namespace"])
def test_code_executing_pickle_is_refused_and_nothing_runs(tmp_path, monkeypatch, legacy, where):
    monkeypatch.delenv("TDAM_PWNED", raising=False)
    marker = tmp_path / "PWNED"
    payload = {"sys": SystemCall(marker), "exec": ExecCall(), "cls": WritesMarker(str(marker))}
    obj = {"state_dict": {"w": torch.ones(2)}, "payload": payload} if where == "top" else \
        {"state_dict": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=0.1, hook=payload)}
    path = tmp_path / "evil.pth"
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafeCheckpointError) as err:
        read_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and "nothing from the file was executed" in msg
    assert f"{os.system.__module__}.system" in msg  # 'posix.system' on Linux
    assert not marker.exists() and "TDAM_PWNED" not in os.environ
    if not legacy:  # the zip scan lists every offending global, the allowed Namespace is not among them
        assert {"builtins.exec", f"{__name__}.WritesMarker"} <= set(err.value.offending)
        assert "argparse.Namespace" not in err.value.offending
    with pytest.raises(UnsafeCheckpointError):  # load_checkpoint goes through the same gate
        load_checkpoint(nn.Linear(2, 2), path)
    assert not marker.exists() and "TDAM_PWNED" not in os.environ


def test_raw_pickle_with_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("TDAM_PWNED", raising=False)
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"a": SystemCall(marker), "b": ExecCall()}, f, protocol=4)
    with pytest.raises(UnsafeCheckpointError) as err:
        read_checkpoint(path)
    assert "posix.system" in err.value.offending or "nt.system" in err.value.offending
    assert not marker.exists() and "TDAM_PWNED" not in os.environ


def test_extra_safe_globals_is_opt_in(tmp_path):
    path = tmp_path / "frac.pth"
    from fractions import Fraction
    torch.save({"model": {"w": torch.ones(1)}, "lr": Fraction(1, 3)}, path)
    with pytest.raises(UnsafeCheckpointError, match="fractions.Fraction"):
        read_checkpoint(path)
    assert read_checkpoint(path, extra_safe_globals=[Fraction])["lr"] == Fraction(1, 3)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("cut", [0.9, 0.5, 0.05])
def test_truncated_file_error_names_the_file(tmp_path, legacy, cut):
    good = tmp_path / "good.pth"
    sd = {"conv.weight": torch.randn(64, 32, 3, 3), "bn.running_var": torch.rand(64)}
    torch.save(_timm_style(sd), good, _use_new_zipfile_serialization=not legacy)
    data = good.read_bytes()
    bad = tmp_path / "cut.pth"
    bad.write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(CorruptCheckpointError) as err:
        read_checkpoint(bad)
    assert str(bad) in str(err.value) and "truncated" in str(err.value)
    assert err.value.__cause__ is not None  # the original error is chained, not swallowed


@pytest.mark.parametrize("content, reason", [(b"", "empty"), (b"hello world, not a checkpoint", "not a torch.save"),
                                             (b"PK\x03\x04garbage", "zip archive")])
def test_foreign_or_empty_file(tmp_path, content, reason):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(CorruptCheckpointError, match=reason) as err:
        read_checkpoint(path)
    assert str(path) in str(err.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(CorruptCheckpointError, match="directory"):
        read_checkpoint(tmp_path)


def test_truncated_safetensors(tmp_path, tiny_sd):
    path = export_safetensors(tiny_sd, tmp_path / "w.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match=re.escape(str(path))):
        read_checkpoint(path)


# ------------------------------------------------------------------------------------------- finding the weights
def test_extract_finds_weights_and_strips_prefixes(tiny_sd):
    prefixed = {f"module._orig_mod.{k}": v for k, v in tiny_sd.items()}
    for ckpt in ({"state_dict": prefixed, "epoch": 1}, {"model": prefixed, "optimizer": {}}, prefixed):
        sd, layout = extract_state_dict(ckpt)
        assert sd.keys() == tiny_sd.keys() and layout == "timm"
    ema = {k: v + 1 for k, v in tiny_sd.items()}
    for key in ("state_dict_ema", "model_ema"):
        sd, _ = extract_state_dict({"state_dict": tiny_sd, key: ema}, use_ema=True)
        assert all(torch.equal(sd[k], ema[k]) for k in tiny_sd)
    with pytest.raises(CheckpointError, match="no EMA weights.*state_dict"):
        extract_state_dict({"state_dict": tiny_sd}, use_ema=True)
    with pytest.raises(CheckpointError, match="no weights found"):
        extract_state_dict({"epoch": 3, "args": {}})


def _public_td_block(prefix: str, mode: str, cb: int, ct: int, rd: int) -> dict:
    w = lambda *s: torch.randn(*s, 1, 1)  # noqa: E731
    if mode == "top":
        return {f"{prefix}.RA_block.Ug_mlp.0.weight": w(rd, ct), f"{prefix}.RA_block.Ug_mlp.2.weight": w(cb, rd)}
    if mode == "conv":
        return {f"{prefix}.RA_block.Ug_conv.weight": w(cb, ct)}
    return {f"{prefix}.RA_block.Ug_top_mlp.0.weight": w(rd, ct), f"{prefix}.RA_block.Ug_bottom_mlp.0.weight": w(rd, cb),
            f"{prefix}.RA_block.Ug_mlp.0.weight": w(cb, 2 * rd if mode == "joint" else rd)}


@pytest.mark.parametrize("mode, ours", [
    ("top", {"td.fc1.weight": (4, 64), "td.fc2.weight": (16, 4)}),
    ("joint", {"td.fc_top.weight": (4, 64), "td.fc_bottom.weight": (4, 16), "td.fc_out.weight": (16, 8)}),
    ("additive", {"td.fc_top.weight": (4, 64), "td.fc_bottom.weight": (4, 16), "td.fc_out.weight": (16, 4)}),
    ("conv", {"td.conv.weight": (16, 64)}),
])
def test_public_resnet_names_become_ours(mode, ours):
    backbone = {"conv1.weight": torch.randn(16, 3, 7, 7), "layer3.0.conv3.weight": torch.randn(64, 16, 1, 1),
                "layer3.0.bn3_1.weight": torch.randn(64), "fc.weight": torch.randn(10, 64)}
    public = {**backbone, **_public_td_block("layer3.0", mode, cb=16, ct=64, rd=4)}
    sd, layout = extract_state_dict({"state_dict": {f"module.{k}": v for k, v in public.items()}})
    assert layout == "public_tdam_resnet"
    expected = {**{k: tuple(v.shape) for k, v in backbone.items()},
                **{f"layer3.0.{k}": (*s, 1, 1) for k, s in ours.items()}}
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    leaf = {"top": "Ug_mlp.2", "conv": "Ug_conv"}.get(mode, "Ug_mlp.0")
    ours_leaf = {"top": "td.fc2", "conv": "td.conv"}.get(mode, "td.fc_out")
    assert torch.equal(sd[f"layer3.0.{ours_leaf}.weight"], public[f"layer3.0.RA_block.{leaf}.weight"])


def test_unknown_public_td_key_is_kept_and_reported():
    sd, _ = extract_state_dict({"layer4.0.RA_block.Ug_mlp.0.weight": torch.ones(1, 1, 1, 1),
                                "layer4.0.RA_block.Ug_mlp.2.weight": torch.ones(1, 1, 1, 1),
                                "layer4.0.RA_block.Ug_mlp.0.bias": torch.ones(1)})
    assert set(sd) == {"layer4.0.td.fc1.weight", "layer4.0.td.fc2.weight", "layer4.0.td.fc1.bias"}
    sd, _ = extract_state_dict({"layer4.0.RA_block.gate.weight": torch.ones(1)})
    assert set(sd) == {"layer4.0.RA_block.gate.weight"}  # not silently dropped: the load reports it as unexpected


# -------------------------------------------------------------------------------------------------- diagnosis
def _resnet_keys(bottleneck: bool, td_blocks: dict, mode: str, norms: tuple, k_max: int) -> dict:
    """A minimal ResNet-like state dict (one layer1 block, TD in `td_blocks`) with per-step norms bn{i}_{1..k_max}."""
    width, out = 16, (64 if bottleneck else 16)
    sd = {"conv1.weight": torch.zeros(16, 3, 7, 7), "fc.weight": torch.zeros(7, out)}
    convs = ("conv1", "conv2", "conv3") if bottleneck else ("conv1", "conv2")
    for layer, blocks in {"layer1": [0], **td_blocks}.items():
        for j in blocks:
            for c in convs:
                sd[f"{layer}.{j}.{c}.weight"] = torch.zeros(out if c == convs[-1] else width, width, 1, 1)
    for layer, blocks in td_blocks.items():
        for j in blocks:
            sd.update(_public_td_block(f"{layer}.{j}", mode, cb=width, ct=out, rd=out // 16))
            for i in norms:
                for k in range(1, k_max + 1):
                    sd[f"{layer}.{j}.bn{i}_{k}.weight"] = torch.ones(8)
    return extract_state_dict(sd)[0]


@pytest.mark.parametrize("bottleneck, norms, m", [
    (True, (3,), 1), (True, (2, 3), 2), (True, (1, 2, 3), 3), (True, (), 0), (False, (2,), 1), (False, (1, 2), 2),
    (False, (), 0)])
@pytest.mark.parametrize("mode", ["top", "joint", "additive"])
def test_summary_reads_mode_m_t_blocks(bottleneck, norms, m, mode):
    sd = _resnet_keys(bottleneck, {"layer3": [0, 1, 2, 5], "layer4": [0, 1]}, mode, norms, k_max=2)
    summary = summarize_state_dict(sd)
    assert list(summary.td) == ["layer3.0", "layer3.1", "layer3.2", "layer3.5", "layer4.0", "layer4.1"]
    block = summary.td["layer4.1"]
    assert (block.kind, block.mode, block.m, block.feedback) == \
        ("bottleneck" if bottleneck else "basic", mode, m, "attention")
    assert block.t_min == (3 if norms else None)
    text = summary.describe()
    steps = "t>=3" if norms else "t=?"
    assert f"td {mode}, m={m}, {steps}" in text and "layer3.0-2,5, layer4.0-1" in text and "7 classes" in text


def test_summary_feedback_conv_and_identity():
    sd = _resnet_keys(True, {"layer4": [0]}, "conv", (3,), k_max=1)
    assert summarize_state_dict(sd).td["layer4.0"].describe() == "feedback conv, m=1, t>=2"
    sd = {k: v for k, v in sd.items() if ".td." not in k}
    assert summarize_state_dict(sd).td["layer4.0"].describe() == "feedback identity, m=1, t>=2"


# ---------------------------------------------------------------------------------------- loading into a module
class TinyBlock(nn.Module):
    def __init__(self, steps: int) -> None:
        super().__init__()
        self.conv2 = nn.Conv2d(4, 4, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        for k in range(1, steps):
            setattr(self, f"bn2_{k}", nn.BatchNorm2d(4))


class Tiny(nn.Module):
    def __init__(self, steps: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 1, bias=False)
        self.layer1 = nn.Sequential(TinyBlock(steps))
        self.fc = nn.Linear(4, classes)


def test_load_strict_and_mismatch_message():
    torch.manual_seed(0)
    src, dst = Tiny(steps=3), Tiny(steps=3)
    result = load_checkpoint(dst, {"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}})
    assert result.missing_keys == result.unexpected_keys == result.mismatched_keys == []
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))

    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(Tiny(steps=2, classes=5), src.state_dict())
    msg = str(err.value)
    assert "unexpected in the checkpoint (5): layer1.0.bn2_2.weight" in msg
    assert "shape mismatch (checkpoint vs model) (2): fc.weight: [3, 4] vs [5, 4], fc.bias: [3] vs [5]" in msg
    assert "num_classes=3" in msg


def test_load_non_strict_reports_and_loads_the_rest():
    torch.manual_seed(0)
    src, dst = Tiny(steps=1, classes=5), Tiny(steps=3)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    result = load_checkpoint(dst, src.state_dict(), strict=False)
    assert set(result.missing_keys) == {f"layer1.0.bn2_{k}.{p}" for k in (1, 2) for p in
                                        ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    assert result.unexpected_keys == []
    assert result.mismatched_keys == [("fc.weight", (5, 4), (3, 4)), ("fc.bias", (5,), (3,))]
    after = dst.state_dict()
    assert torch.equal(after["conv1.weight"], src.conv1.weight) and torch.equal(after["fc.weight"], before["fc.weight"])


def test_old_checkpoint_without_num_batches_tracked_is_not_missing():
    src = Tiny(steps=1)
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert load_checkpoint(Tiny(steps=1), sd).missing_keys == []


# ----------------------------------------------------------------------------------------------------- saving
def test_save_roundtrip_and_no_temp_files(tmp_path, tiny_sd):
    path = tmp_path / "runs" / "last.pth"
    obj = {"model": tiny_sd, "epoch": 2, "rng": {"torch": torch.get_rng_state(), "python": (3, (1, 2), None)},
           "config": {"lr": 0.1, "stages": [3, 4]}, "metrics": [{"top1": 1.0}]}
    assert save_checkpoint(obj, path) == path
    back = read_checkpoint(path)
    assert back["epoch"] == 2 and back["config"] == obj["config"] and torch.equal(back["rng"]["torch"],
                                                                                obj["rng"]["torch"])
    assert [p.name for p in path.parent.iterdir()] == ["last.pth"]


def test_save_refuses_what_read_would_refuse(tmp_path):
    import numpy as np
    path = tmp_path / "x.pth"
    with pytest.raises(ValueError, match=r"obj\['rng'\]\['numpy'\]: a numpy.ndarray"):
        save_checkpoint({"rng": {"numpy": np.zeros(3)}}, path)
    assert not path.exists()


def test_crash_during_save_keeps_previous_file(tmp_path, monkeypatch, tiny_sd):
    path = tmp_path / "last.pth"
    save_checkpoint({"model": tiny_sd, "epoch": 1}, path)
    real_save = torch.save

    def crashing_save(obj, f, *a, **kw):
        import io
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {k: v + 1 for k, v in tiny_sd.items()}, "epoch": 2}, path)
    monkeypatch.undo()
    back = read_checkpoint(path)
    assert back["epoch"] == 1 and torch.equal(back["model"]["0.weight"], tiny_sd["0.weight"])
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_process_killed_during_save_keeps_previous_file(tmp_path):
    """A hard exit (no cleanup handlers run, as with SIGKILL) half-way through writing the new checkpoint."""
    path = tmp_path / "last.pth"
    save_checkpoint({"model": {"w": torch.zeros(1000)}, "epoch": 1}, path)
    pid = os.fork()
    if pid == 0:  # child: die in the middle of torch.save's write
        try:
            real = torch.save

            def dying_save(obj, f, *a, **kw):
                import io
                buf = io.BytesIO()
                real(obj, buf)
                f.write(buf.getvalue()[:1000])
                f.flush()
                os._exit(9)

            torch.save = dying_save
            save_checkpoint({"model": {"w": torch.ones(1000)}, "epoch": 2}, path)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9
    back = read_checkpoint(path)
    assert back["epoch"] == 1 and torch.equal(back["model"]["w"], torch.zeros(1000))
    leftovers = [p for p in tmp_path.iterdir() if p.name != "last.pth"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".last.pth.") and leftovers[0].suffix == ".tmp"


def test_safetensors_export_roundtrip(tmp_path):
    torch.manual_seed(0)
    src = Tiny(steps=2)
    path = export_safetensors(src, tmp_path / "w.safetensors", metadata={"note": "x", "top1": 71.2})
    back = read_checkpoint(path)
    assert back["metadata"]["note"] == "x" and back["metadata"]["top1"] == "71.2" and "tdam_version" in back["metadata"]
    dst = Tiny(steps=2)
    result = load_checkpoint(dst, path)
    assert result.layout == "tdam" and not result.missing_keys
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    with pytest.raises(ValueError, match="safetensors"):
        save_checkpoint({"model": {}}, tmp_path / "w.safetensors")


# ------------------------------------------------------------------------------ real models: public TDAM layouts
OURS_TO_PUBLIC_TD = {  # the authors' RA_block names, written out independently of tdam.checkpoint's table
    "top": {"td.fc1.": "RA_block.Ug_mlp.0.", "td.fc2.": "RA_block.Ug_mlp.2."},
    "joint": {"td.fc_top.": "RA_block.Ug_top_mlp.0.", "td.fc_bottom.": "RA_block.Ug_bottom_mlp.0.",
              "td.fc_out.": "RA_block.Ug_mlp.0."},
    "conv": {"td.conv.": "RA_block.Ug_conv."},
}
OURS_TO_PUBLIC_TD["additive"] = OURS_TO_PUBLIC_TD["joint"]

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Perturb every float entry of the state dict (BN statistics included), so any misplaced weight shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            if key.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=g) + 0.5)
            else:
                value.add_(torch.randn(value.shape, generator=g) * 0.05)
    return model.eval()


def _to_public_resnet(sd: dict, table: dict) -> dict:
    out = {}
    for key, value in sd.items():
        for ours, theirs in table.items():
            key = key.replace(f".{ours}", f".{theirs}")
        assert ".td." not in key, key
        out[key] = value
    return out


def _td_model(arch="resnet18", seed=0, num_classes=10, **opts):
    import tdam
    torch.manual_seed(seed)
    return _randomize(tdam.create_model(arch, attention="td", num_classes=num_classes, **opts), seed)


def _outputs(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(X)


def _assert_same(a: nn.Module, b: nn.Module, a_out: torch.Tensor | None = None) -> None:
    """Same state dict (keys and values) and the same logits on X."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(_outputs(a) if a_out is None else a_out, _outputs(b))


@pytest.mark.parametrize("arch, opts, table", [
    ("resnet18", dict(t=2, m=2, td_mode="top"), "top"),
    ("resnet18", dict(t=3, m=1, td_mode="additive"), "additive"),
    ("resnet18", dict(t=2, m=1, td_feedback="conv"), "conv"),
    ("resnet50", dict(t=2, m=1, td_mode="joint"), "joint"),
])
def test_public_td_resnet_checkpoint_loads_strict_with_same_outputs(tmp_path, arch, opts, table):
    src = _td_model(arch, seed=1, **opts)
    public = _to_public_resnet(src.state_dict(), OURS_TO_PUBLIC_TD[table])
    assert any(".RA_block." in k for k in public) and any(re.search(r"\.bn\d_1\.", k) for k in public)
    path = tmp_path / f"TD_{arch}.pth.tar"
    torch.save(_timm_style({f"module.{k}": v for k, v in public.items()},
                           optimizer={"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}), path)
    dst = _randomize(copy.deepcopy(src), seed=2)
    wrapped = nn.DataParallel(dst) if table == "conv" else dst  # also: loading into a wrapped model
    result = load_checkpoint(wrapped, path)
    assert result.layout == "public_tdam_resnet" and not (result.missing_keys or result.unexpected_keys)
    _assert_same(src, dst)


@pytest.fixture(scope="module")
def public_joint_resnet18() -> dict:
    """A timm-style checkpoint of a TD-ResNet-18 (joint, t=2, m=1) under the authors' key names."""
    src = _td_model(t=2, m=1, td_mode="joint")
    return {"state_dict": _to_public_resnet(src.state_dict(), OURS_TO_PUBLIC_TD["joint"]),
            "args": argparse.Namespace(model="td_resnet18")}


@pytest.mark.parametrize("opts, says, hint", [
    (dict(t=2, m=2, td_mode="top"), "model is:              resnet18, td top, m=2, t=2 in layer3.0-1, layer4.0-1",
     "td_mode='joint', m=1"),
    (dict(t=2, m=2, td_mode="joint"), "td joint, m=2, t=2", "m=1"),
    (dict(t=3, m=1, td_mode="joint"), "td joint, m=1, t=3", "t=2"),
    (dict(t=2, m=1, td_mode="additive"), "td additive, m=1, t=2", "td_mode='joint'"),
    (dict(t=2, m=1, td_stages=(4,)), "td joint, m=1, t=2 in layer4.0-1", "td_stages=(3, 4)"),
])
def test_wrong_configuration_names_the_mismatch(public_joint_resnet18, opts, says, hint):
    import tdam
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(tdam.create_model("resnet18", attention="td", num_classes=10, **opts), public_joint_resnet18)
    msg = str(err.value)
    assert "checkpoint looks like: resnet18, td joint, m=1, t>=2 in layer3.0-1, layer4.0-1, 10 classes" in msg
    assert says in msg and f"hint: build the model with {hint}" in msg
    assert re.search(r"(missing in the checkpoint|unexpected in the checkpoint|shape mismatch).*\(\d+\): ", msg)


def test_shape_mismatch_lists_both_shapes(public_joint_resnet18):
    import tdam
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(tdam.create_model("resnet18", attention="td", num_classes=7), public_joint_resnet18)
    assert "fc.weight: [10, 512] vs [7, 512]" in str(err.value) and "hint: build the model with num_classes=10" in \
        str(err.value)


def _to_public_convnext(sd: dict) -> dict:
    """Our (timm) TD-ConvNeXt names -> the ConvNeXt code base's names + RA_block, independently."""
    rules = [
        (r"^stem\.(\d)\.", r"downsample_layers.0.\1."),
        (r"^stages\.(\d)\.downsample\.(\d)\.", r"downsample_layers.\1.\2."),
        (r"^stages\.(\d)\.blocks\.(\d+)\.conv_dw\.", r"stages.\1.\2.dwconv."),
        (r"^stages\.(\d)\.blocks\.(\d+)\.mlp\.fc(\d)\.", r"stages.\1.\2.pwconv\3."),
        (r"^stages\.(\d)\.blocks\.(\d+)\.(norm|gamma)", r"stages.\1.\2.\3"),
        (r"^stages\.(\d)\.blocks\.(\d+)\.td\.fc_top\.", r"stages.\1.\2.RA_block.Ug_top_mlp.0."),
        (r"^stages\.(\d)\.blocks\.(\d+)\.td\.fc_bottom\.", r"stages.\1.\2.RA_block.Ug_bottom_mlp.0."),
        (r"^stages\.(\d)\.blocks\.(\d+)\.td\.fc_out\.", r"stages.\1.\2.RA_block.Ug_mlp.0."),
        (r"^head\.norm\.", "norm."),
        (r"^head\.fc\.", "head."),
    ]
    out = {}
    for key, value in sd.items():
        for pattern, repl in rules:
            new = re.sub(pattern, repl, key)
            if new != key:
                out[new] = value
                break
        else:
            raise AssertionError(f"no public name for {key}")
    return out


def test_public_td_convnext_names_map_to_ours():
    """Every key of the real TD-ConvNeXt-T under the ConvNeXt code base's names maps back to ours, same tensor."""
    import tdam
    model = tdam.create_model("convnext_tiny", attention="td", t=2, m=1, td_mode="joint")
    ours = model.state_dict()
    public = _to_public_convnext(ours)
    assert any(k.startswith("downsample_layers.3.1.") for k in public)
    assert "stages.3.2.RA_block.Ug_mlp.0.weight" in public
    sd, layout = extract_state_dict({"model": public, "args": argparse.Namespace(model="convnext_tiny")})
    assert layout == "public_tdam_convnext" and sd.keys() == ours.keys()
    assert all(sd[k] is ours[k] or torch.equal(sd[k], ours[k]) for k in ours)
    assert summarize_state_dict(sd).describe() == ("convnext_tiny, td joint, m=1, t=? (no per-step norms) in "
                                                   "stages.2.blocks.0-8, stages.3.blocks.0-2, 1000 classes")
    # a plain checkpoint of the ConvNeXt code base initialises everything but the TD modules
    plain = {k: v for k, v in public.items() if ".RA_block." not in k}
    assert extract_state_dict({"model": plain})[1] == "convnext_official"
    result = load_checkpoint(model, {"model": plain, "epoch": 299}, strict=False)
    assert set(result.missing_keys) == {k for k in ours if ".td." in k} and not result.unexpected_keys


@pytest.mark.parametrize("m", [1, 2])
def test_public_td_convnext_checkpoint_roundtrip(tmp_path, m):
    """A narrow ConvNeXt (convnext_tiny with smaller depths/dims, same block and key structure) saved by the ConvNeXt
    code base (model + model_ema + args) loads strict with the same outputs; use_ema picks the EMA weights."""
    small = dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128))
    src = _td_model("convnext_tiny", seed=1, t=2, m=m, td_mode="joint", **small)
    dst, ema = _randomize(copy.deepcopy(src), seed=2), _randomize(copy.deepcopy(src), seed=3)
    path = tmp_path / "td_convnext.pth"
    torch.save({"model": _to_public_convnext(src.state_dict()), "model_ema": _to_public_convnext(ema.state_dict()),
                "epoch": 299, "args": argparse.Namespace(model="convnext_tiny", drop_path=0.1)}, path)
    result = load_checkpoint(dst, path)
    assert result.layout == "public_tdam_convnext"
    _assert_same(src, dst)
    load_checkpoint(dst, path, use_ema=True)
    _assert_same(ema, dst)
    summary = summarize_state_dict(extract_state_dict(read_checkpoint(path))[0])
    assert {b.describe() for b in summary.td.values()} == {f"td joint, m={m}, t=? (no per-step norms)"}
    assert list(summary.td) == ["stages.2.blocks.0", "stages.2.blocks.1", "stages.3.blocks.0"]


# -------------------------------------------------------------------------- real models: baselines and our format
@pytest.mark.parametrize("library", ["timm", "torchvision"])
def test_td_model_from_plain_resnet_misses_only_td_parts(library):
    import tdam
    torch.manual_seed(0)
    if library == "timm":
        plain = tdam.create_model("resnet18", num_classes=10)
    else:
        import torchvision
        plain = torchvision.models.resnet18(num_classes=10)
    plain = _randomize(plain, 1)
    td = _td_model(t=2, m=2, td_mode="top")
    expected_missing = set(td.state_dict()) - set(plain.state_dict())
    result = load_checkpoint(td, {"state_dict": plain.state_dict()}, strict=False)
    assert set(result.missing_keys) == expected_missing and not result.unexpected_keys and not result.mismatched_keys
    assert all(re.match(r"^layer[34]\.\d\.(td\.fc[12]\.weight|bn[12]_1\.\w+)$", k) for k in expected_missing)
    assert len(expected_missing) == 4 * (2 + 2 * 5)  # 4 TD blocks: fc1, fc2, bn1_1 and bn2_1 (5 entries each)
    td_sd = td.state_dict()
    assert all(torch.equal(td_sd[k], v) for k, v in plain.state_dict().items())
    with pytest.raises(CheckpointMismatchError, match="checkpoint looks like: resnet18, no TD blocks, 10 classes"):
        load_checkpoint(td, plain.state_dict())


def test_our_checkpoint_and_safetensors_rebuild_with_load_model(tmp_path):
    src = _td_model(t=2, m=1, td_mode="joint", td_stages=(3, 4), td_blocks={3: [1]})
    ema = _randomize(copy.deepcopy(src), 5)
    path = save_checkpoint({"model": src.state_dict(), "model_ema": ema.state_dict(),
                            "model_config": src.model_config, "config": {"lr": 0.1}, "epoch": 1,
                            "tdam_version": "0.1.0"}, tmp_path / "last.pth")
    out = _outputs(src)
    _assert_same(src, ck.load_model(path), out)
    ckpt = read_checkpoint(path)
    _assert_same(ema, ck.load_model(ckpt, use_ema=True))
    exported = export_safetensors(src, tmp_path / "w.safetensors")
    _assert_same(src, ck.load_model(exported), out)
    with pytest.raises(CheckpointMismatchError, match="num_classes=10"):
        ck.load_model(ckpt, num_classes=3)
    with pytest.raises(CheckpointError, match="no 'model_config'"):
        ck.load_model({"state_dict": src.state_dict()})
