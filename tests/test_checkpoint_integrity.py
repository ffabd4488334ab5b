"""tdam.checkpoint integrity: content digests, damaged tensors, dtype kinds, unsafe pickles in every protocol, write
errors (disk full, read-only) and stale temporary files."""
from __future__ import annotations

import errno
import io
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from tdam import checkpoint as ck
from tdam.checkpoint import (DIGEST_KEY, CheckpointDigestError, CheckpointDtypeError, CheckpointWriteError,
                             CorruptCheckpointError, UnsafeCheckpointError, export_safetensors, load_checkpoint,
                             read_checkpoint, remove_stale_temps, save_checkpoint)
from tdam.checkpoint.pickle_scan import scan_pickles


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 4))


def _ckpt(model: nn.Module) -> dict:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 3, 3)).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
            "rng": [{"torch": torch.get_rng_state()}], "config": {"lr": 0.1}}


def _storage_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """``archive/data/<n>`` member -> (offset of its bytes in the file, size): torch.save stores them uncompressed."""
    out = {}
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for info in z.infolist():
            if "/data/" not in info.filename:
                continue
            f.seek(info.header_offset)
            header = f.read(30)
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            out[info.filename] = (info.header_offset + 30 + name_len + extra_len, info.file_size)
    return out


def _flip_inside(path: Path, tensor: torch.Tensor, n: int = 3) -> None:
    """Flip ``n`` bytes in the middle of the storage that holds ``tensor``'s data, in place (the zip is not re-built,
    so only the tensor bytes change)."""
    target = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    data = bytearray(path.read_bytes())
    hits = [(off, size) for off, size in _storage_offsets(path).values() if bytes(data[off:off + size]) == target]
    assert len(hits) == 1, "the tensor's bytes identify exactly one storage"
    off, size = hits[0]
    for i in range(n):
        data[off + size // 2 + i] ^= 0xFF
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------------------------- digests
def test_digest_is_recorded_per_tensor_and_removed_on_reading(tmp_path):
    obj = _ckpt(_net())
    path = save_checkpoint(obj, tmp_path / "last.pth")
    raw = torch.load(path, weights_only=True)
    digest = raw[DIGEST_KEY]
    assert digest["format"] == "tdam-digest-1" and digest["algorithm"] == "sha256"
    assert {"model.0.weight", "model.1.running_var", "model.1.num_batches_tracked", "optimizer.state.0.momentum_buffer",
            "rng.0.torch"} <= set(digest["tensors"])
    back = read_checkpoint(path)
    assert DIGEST_KEY not in back and back.keys() == obj.keys()
    assert all(torch.equal(back["model"][k], v) for k, v in obj["model"].items())
    # a bare state dict saved by us loads by path and as an already-read dict
    bare = save_checkpoint(_net().state_dict(), tmp_path / "bare.pth")
    assert load_checkpoint(_net(), bare).missing_keys == []
    assert load_checkpoint(_net(), torch.load(bare, weights_only=True)).missing_keys == []


def test_resaving_a_raw_loaded_checkpoint_recomputes_the_digest(tmp_path):
    path = save_checkpoint(_ckpt(_net()), tmp_path / "a.pth")
    raw = torch.load(path, weights_only=True)
    raw["model"]["3.bias"] += 1  # changed after loading without our reader: the new file gets a fresh digest
    read_checkpoint(save_checkpoint(raw, tmp_path / "b.pth"))
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint({"model": {}, DIGEST_KEY: "mine"}, tmp_path / "c.pth")
    assert not (tmp_path / "c.pth").exists()


def test_three_flipped_bytes_inside_one_tensor_are_refused_naming_it(tmp_path):
    """The issue's case: bytes flipped inside a checkpoint's tensor data used to load without any error."""
    model = _net()
    obj = _ckpt(model)
    obj["model_config"] = None
    path = save_checkpoint(obj, tmp_path / "last.pth")
    _flip_inside(path, obj["model"]["3.weight"])
    assert torch.load(path, weights_only=True)["epoch"] == 3  # torch itself still reads it without complaint
    with pytest.raises(CheckpointDigestError) as err:
        read_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and "'model.3.weight'" in msg and err.value.tensors == ["model.3.weight"]
    assert isinstance(err.value, CorruptCheckpointError)
    with pytest.raises(CheckpointDigestError, match=r"model\.3\.weight"):
        load_checkpoint(_net(), path)
    with pytest.raises(CheckpointDigestError, match=r"model\.3\.weight"):
        ck.load_model(path)
    with pytest.raises(CheckpointDigestError):  # an already-read dict with a digest is checked too
        load_checkpoint(_net(), torch.load(path, weights_only=True))


def test_flipped_bytes_in_optimizer_state_are_named(tmp_path):
    obj = _ckpt(_net())
    path = save_checkpoint(obj, tmp_path / "last.pth")
    _flip_inside(path, obj["optimizer"]["state"][0]["momentum_buffer"], n=1)
    with pytest.raises(CheckpointDigestError, match=r"'optimizer\.state\.0\.momentum_buffer'"):
        read_checkpoint(path)


def test_a_digest_that_does_not_match_the_structure_is_refused(tmp_path):
    sd = _net().state_dict()
    entry = ck.digest.make_digest({"model": sd})
    del sd["3.bias"]
    path = tmp_path / "x.pth"
    torch.save({"model": sd, DIGEST_KEY: entry}, path)
    with pytest.raises(CheckpointDigestError, match=r"'model\.3\.bias' recorded in the digest are missing"):
        read_checkpoint(path)
    torch.save({"model": sd, DIGEST_KEY: {"format": "tdam-digest-9", "tensors": {}}}, path)
    with pytest.raises(CheckpointDigestError, match="tdam-digest-9"):
        read_checkpoint(path)


def test_files_without_digest_load_as_before(tmp_path):
    sd = _net().state_dict()
    path = tmp_path / "timm.pth"
    torch.save({"state_dict": sd, "epoch": 1}, path)
    _flip_inside(path, sd["0.weight"])  # nothing to check it against: loads, as from any other library
    assert read_checkpoint(path).keys() == {"state_dict", "epoch"}


def test_safetensors_digest_in_metadata_and_flipped_bytes_refused(tmp_path):
    model = _net()
    path = export_safetensors(model, tmp_path / "w.safetensors")
    back = read_checkpoint(path)
    assert DIGEST_KEY not in back["metadata"] and "format" in back["metadata"]
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        assert "0.weight" in json.loads(f.metadata()[DIGEST_KEY])["tensors"]
    data = bytearray(path.read_bytes())
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + header_len])
    start, _end = header["1.running_mean"]["data_offsets"]
    for i in range(3):
        data[8 + header_len + start + i] ^= 0x55
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointDigestError, match=r"'1\.running_mean'") as err:
        load_checkpoint(_net(), path)
    assert str(path) in str(err.value)
    with pytest.raises(ValueError, match="reserved"):
        export_safetensors(model, tmp_path / "v.safetensors", metadata={DIGEST_KEY: "x"})


# ------------------------------------------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
@pytest.mark.parametrize("strict", [True, False])
def test_safetensors_with_integer_or_bool_weights_is_refused(tmp_path, dtype, strict):
    sd = _net().state_dict()
    sd["3.weight"] = (sd["3.weight"] * 10).to(dtype)
    path = export_safetensors(sd, tmp_path / "w.safetensors")
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointDtypeError) as err:
        load_checkpoint(model, path, strict=strict)
    msg = str(err.value)
    assert "3.weight" in msg and str(dtype) in msg and "torch.float32" in msg and str(path) in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing was loaded


def test_float_buffer_from_integer_counter_is_refused():
    sd = _net().state_dict()
    sd["1.num_batches_tracked"] = sd["1.num_batches_tracked"].float()
    with pytest.raises(CheckpointDtypeError, match=r"1\.num_batches_tracked: torch\.float32 in the checkpoint, "
                                                   r"torch\.int64 in the model"):
        load_checkpoint(_net(), sd)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_export_loads_as_a_precision_change(tmp_path, dtype):
    """Documented in load_checkpoint: within floating point the precision may differ (values converted)."""
    src = _net()
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in src.state_dict().items()}
    path = export_safetensors(sd, tmp_path / "half.safetensors")
    dst = _net()
    load_checkpoint(dst, path)
    for k, v in dst.state_dict().items():
        assert v.dtype == src.state_dict()[k].dtype and torch.equal(v, sd[k].to(v.dtype))


# ------------------------------------------------------------------------------------------ unsafe pickles
class Download:
    """Unpickling would call torch.hub.download_url_to_file, here copying a local file to the marker path."""

    def __init__(self, src: Path, marker: Path) -> None:
        self.src, self.marker = src, marker

    def __reduce__(self):
        return torch.hub.download_url_to_file, (self.src.as_uri(), str(self.marker), None, False)


class Touch:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def download(tmp_path):
    src = tmp_path / "source.txt"
    src.write_text("payload")
    return Download(src, tmp_path / "PWNED")


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_plain_pickle_calling_download_is_unsafe_in_every_protocol(tmp_path, download, protocol):
    path = tmp_path / f"evil{protocol}.pth"
    path.write_bytes(pickle.dumps({"state_dict": {"w": 1.0}, "hook": download}, protocol=protocol))
    with pytest.raises(UnsafeCheckpointError) as err:
        read_checkpoint(path)
    assert "torch.hub.download_url_to_file" in err.value.offending and str(path) in str(err.value)
    assert not download.marker.exists()


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_torch_save_zip_calling_download_is_unsafe_in_every_protocol(tmp_path, download, protocol):
    path = tmp_path / f"evil{protocol}.pth"
    torch.save({"model": {"w": torch.ones(2)}, "hook": download}, path, pickle_protocol=protocol)
    with pytest.raises(UnsafeCheckpointError, match="torch.hub.download_url_to_file"):
        read_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(nn.Linear(2, 2), path)
    assert not download.marker.exists()


@pytest.mark.parametrize("protocol", [1, 4, 5])
def test_benign_torch_save_in_an_unsupported_protocol_is_not_called_unsafe(tmp_path, protocol):
    path = tmp_path / "p.pth"
    torch.save({"model": {"w": torch.ones(2)}}, path, pickle_protocol=protocol)
    with pytest.raises(CorruptCheckpointError) as err:
        read_checkpoint(path)
    assert not isinstance(err.value, UnsafeCheckpointError)
    assert f"protocol {protocol}" in str(err.value) and "re-save" in str(err.value)


def _op(name: str) -> bytes:
    import pickletools
    return next(code for code, op in pickletools.code2op.items() if op.name == name).encode("latin-1")


def _short_str(text: str) -> bytes:
    return _op("SHORT_BINUNICODE") + bytes([len(text)]) + text.encode()


def test_hand_written_pickles_name_the_global_however_it_is_spelled(tmp_path):
    """Memoised module names, decoy strings, INST, EXT codes, out-of-band buffers and damage after the global: the
    scan resolves what the unpickler would import; nothing runs."""
    marker = tmp_path / "PWNED"
    cmd = f"touch {marker}"
    memoised = (b"\x80\x04" + _short_str("posix") + _op("MEMOIZE") + _op("POP") + _short_str("decoy") + _op("POP")
                + _op("BINGET") + b"\x00" + _short_str("decoy2") + _op("POP") + _short_str("system")
                + _op("STACK_GLOBAL") + _short_str(cmd) + _op("TUPLE1") + _op("REDUCE") + b".")
    inst = f"(S'{cmd}'\niposix\nsystem\n.".encode()
    ext = b"\x80\x02" + _op("EXT1") + b"\xf0" + b")R."
    buffers = pickle.dumps([pickle.PickleBuffer(b"abc"), Touch(marker)], protocol=5, buffer_callback=lambda b: False)
    cases = {"memoised": (memoised, "posix.system"), "inst": (inst, "posix.system"),
             "ext": (ext, "<copyreg extension code 240>"), "buffers": (buffers, "posix.system"),
             "damaged_after": (memoised[:-1] + b"\xff\xfe garbage", "posix.system")}
    assert _op("NEXT_BUFFER") in buffers and _op("READONLY_BUFFER") in buffers
    for name, (data, expected) in cases.items():
        path = tmp_path / f"{name}.pth"
        path.write_bytes(data)
        with pytest.raises(UnsafeCheckpointError) as err:
            read_checkpoint(path)
        assert expected in err.value.offending, (name, err.value.offending)
    assert scan_pickles(memoised).globals == ["posix.system"]
    assert not marker.exists()


def test_zip_with_a_protocol_5_data_pkl_is_unsafe(tmp_path, download):
    """A torch.save archive whose data.pkl was replaced by a protocol-5 pickle (FRAME, STACK_GLOBAL): the case that
    was reported as 'corrupt (Unsupported operand 149)'."""
    good = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.ones(2)}}, good)
    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                data = pickle.dumps({"model": {}, "x": download}, protocol=5)
            dst.writestr(info, data)
    with pytest.raises(UnsafeCheckpointError, match="torch.hub.download_url_to_file") as err:
        read_checkpoint(evil)
    assert "corrupt" not in str(err.value) and not download.marker.exists()


# ------------------------------------------------------------------------------------------------ write errors
class _FailingFile:
    """Wraps the temp file; writes fail with ``error_no`` once ``limit`` bytes are written."""

    def __init__(self, f, error_no: int, limit: int) -> None:
        self.f, self.error_no, self.limit, self.written = f, error_no, limit, 0

    def write(self, b) -> int:
        if self.written + len(b) > self.limit:
            raise OSError(self.error_no, os.strerror(self.error_no))
        self.written += len(b)
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


@pytest.mark.parametrize("writer", ["save", "export"])
def test_disk_full_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch, writer):
    """ENOSPC simulated by a file whose write fails half-way (a real full disk needs a mount we cannot make)."""
    sd = _net().state_dict()
    path = tmp_path / ("last.pth" if writer == "save" else "w.safetensors")
    write = (lambda obj: save_checkpoint(obj, path)) if writer == "save" else \
        (lambda obj: export_safetensors(obj, path))
    write(sd)
    previous = path.read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **kw: _FailingFile(real_fdopen(fd, *a, **kw), errno.ENOSPC, 500))
    with pytest.raises(CheckpointWriteError) as err:
        write({k: v + 1 for k, v in sd.items()})
    monkeypatch.undo()
    e = err.value
    assert isinstance(e, OSError) and e.errno == errno.ENOSPC and e.filename == str(path)
    assert str(e) == f"cannot write checkpoint {str(path)!r}: no space left on device [ENOSPC]"
    assert path.read_bytes() == previous and [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("error_no, at", [(errno.EROFS, "open"), (errno.EACCES, "open"), (errno.EROFS, "replace"),
                                          (errno.ENOSPC, "fsync")])
def test_read_only_folder_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch, error_no, at):
    """A read-only folder / file system, simulated by making os.open (or os.replace) fail with EROFS/EACCES: the
    tests run as root, for whom chmod does not stop writes. ENOSPC at fsync (delayed allocation) likewise."""
    path = tmp_path / "last.pth"
    real = {"open": os.open, "replace": os.replace, "fsync": os.fsync}[at]

    def failing(*a, **kw):
        if at == "open" or at == "fsync" or str(a[1]) == str(path):
            raise OSError(error_no, os.strerror(error_no))
        return real(*a, **kw)

    monkeypatch.setattr(os, at, failing)
    with pytest.raises(CheckpointWriteError) as err:
        save_checkpoint({"model": _net().state_dict()}, path)
    monkeypatch.undo()
    words = "no space left on device" if error_no == errno.ENOSPC else "read-only or not writable"
    assert err.value.errno == error_no and str(path) in str(err.value) and words in str(err.value)
    assert "\n" not in str(err.value) and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_for_real(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(CheckpointWriteError, match="read-only or not writable"):
            save_checkpoint({"w": torch.ones(1)}, folder / "last.pth")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_other_errors_are_not_disguised(tmp_path, monkeypatch):
    def broken(obj, f, *a, **kw):
        raise RuntimeError("a bug, not I/O")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="a bug, not I/O"):
        save_checkpoint({"w": torch.ones(1)}, tmp_path / "last.pth")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------- stale temporaries
def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_remove_stale_temps_deletes_only_those_of_dead_writers(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    stale = tmp_path / f".last.pth.{dead}.0123abcd.tmp"
    mine = tmp_path / f".last.pth.{alive}.89abcdef.tmp"
    reused = tmp_path / f".best.safetensors.{os.getppid()}.fedcba98.tmp"  # written long before that process started
    others = [tmp_path / "last.pth", tmp_path / ".hidden.tmp", tmp_path / f".x.{dead}.nothex!.tmp"]
    for p in (stale, mine, reused, *others):
        p.write_bytes(b"x")
    os.utime(reused, (0, 0))
    removed = remove_stale_temps(tmp_path)
    assert sorted(removed) == sorted([stale, reused])
    assert sorted(tmp_path.iterdir()) == sorted([mine, *others])
    assert remove_stale_temps(tmp_path / "missing") == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_temp_of_a_writer_killed_mid_save_is_removed(tmp_path):
    path = tmp_path / "last.pth"
    save_checkpoint({"w": torch.zeros(1000)}, path)
    pid = os.fork()
    if pid == 0:
        try:
            def dying_save(obj, f, *a, **kw):
                f.write(b"PK" + bytes(1000))
                f.flush()
                os._exit(9)

            torch.save = dying_save
            save_checkpoint({"w": torch.ones(1000)}, path)
        finally:
            os._exit(1)
    os.waitpid(pid, 0)
    assert len(list(tmp_path.iterdir())) == 2
    assert [p.name for p in remove_stale_temps(tmp_path)][0].startswith(f".last.pth.{pid}.")
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]
    assert torch.equal(read_checkpoint(path)["w"], torch.zeros(1000))


def test_digest_covers_every_kind_of_tensor(tmp_path):
    """Sparse, conjugated, transposed, 0-dim, empty, bfloat16 and shared tensors round-trip; damage to any is seen."""
    shared = torch.randn(5)
    obj = {"sparse": torch.eye(3).to_sparse(), "conj": torch.randn(3, dtype=torch.complex64).conj(),
           "transposed": torch.randn(4, 2).t(), "scalar": torch.tensor(1.5), "empty": torch.empty(0, 3),
           "bf16": torch.ones(3, dtype=torch.bfloat16), "a": shared, "b": [shared, (shared,)]}
    path = save_checkpoint(obj, tmp_path / "x.pth")
    back = read_checkpoint(path)
    assert torch.equal(back["conj"], obj["conj"]) and torch.equal(back["transposed"], obj["transposed"])
    assert set(torch.load(path, weights_only=True)[DIGEST_KEY]["tensors"]) == {
        "sparse", "conj", "transposed", "scalar", "empty", "bf16", "a", "b.0", "b.1.0"}
    _flip_inside(path, obj["bf16"], n=1)
    with pytest.raises(CheckpointDigestError, match="'bf16'"):
        read_checkpoint(path)


def test_random_or_damaged_bytes_are_corrupt_not_unsafe(tmp_path):
    """The tolerant walk does not mistake noise for globals: random files and legacy checkpoints with flipped bytes
    need no global beyond the allowed ones (resuming inside 'collections' must not yield 'tions.OrderedDict')."""
    import random
    from tdam.checkpoint.read import allowed_global_names
    allowed = allowed_global_names()
    rng = random.Random(0)
    buf = io.BytesIO()
    torch.save({"a": torch.randn(300)}, buf, _use_new_zipfile_serialization=False)
    base = buf.getvalue()
    for i in range(300):
        noise = bytes(rng.randrange(256) for _ in range(2000))
        damaged = bytearray(base)
        for _ in range(3):
            damaged[rng.randrange(len(base))] ^= 0xFF
        for data in (noise, bytes(damaged)):
            assert set(scan_pickles(data, max_pickles=5).globals) <= allowed
    path = tmp_path / "noise.pth"
    path.write_bytes(bytes(rng.randrange(256) for _ in range(5000)))
    with pytest.raises(CorruptCheckpointError) as err:
        read_checkpoint(path)
    assert not isinstance(err.value, UnsafeCheckpointError)
