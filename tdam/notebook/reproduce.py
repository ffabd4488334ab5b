"""Regenerate the paper's tables and figures: notebooks 01 -> 09 in order, headless, with papermill.

    python -m tdam.notebook.reproduce                                  # the embedded data (make reproduce)
    python -m tdam.notebook.reproduce --profile paper --data-dir /data/imagenet
    python -m tdam.notebook.reproduce --only 02 05 --force             # rerun two notebooks

Profiles:

- ``embedded`` (default): every notebook with its stored defaults, on the embedded tdam-shapes data (a CPU run; the
  numbers are pipeline checks, not paper results).
- ``paper``: every notebook that takes them gets ``data_dir`` (an ImageNet folder), ``profile=None`` (the params
  file's recipe, the paper's) and ``backbone='resnet50'``. This is the full-scale run (days on GPUs).

Each executed notebook is kept as ``runs/reproduce/<profile>/<notebook>.ipynb`` with a record beside it
(``<notebook>.json``: parameters, the notebook file's digest, status, wall time, files written). A notebook whose
record says it finished with the same parameters and the same notebook file is skipped unless ``--force``; so an
interrupted reproduction continues where it stopped. Each notebook's output (its progress lines: training updates,
images evaluated, rate, ETA) streams to the terminal as it runs, after a line naming the notebook (``--quiet``: only
that line and one when it ends). The run ends with one table: notebook, status, wall time, tables
and figures written. Exit status 1 when a notebook failed (the later ones still run; its traceback is in the
executed copy).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from tdam import paths
from tdam.validation import check_choice

from .params import NOTEBOOKS, notebook_defaults

__all__ = ["PROFILES", "ORDER", "notebook_parameters", "reproduce", "write_gallery", "summary_table", "main"]

PROFILES = ("embedded", "paper")
ORDER = tuple(sorted(NOTEBOOKS))     # 01 first: it trains what 02-09 evaluate


def _takes(notebook: str, name: str) -> bool:
    return name in NOTEBOOKS[notebook]


def notebook_parameters(notebook: str, profile: str, data_dir: str | None = None) -> dict[str, Any]:
    """The papermill parameters of ``notebook`` under ``profile`` (empty for ``embedded``: the stored defaults)."""
    check_choice("profile", profile, PROFILES)
    if profile == "embedded":
        if data_dir is not None:
            raise ValueError("data_dir is for profile='paper'; the embedded profile uses the generated data")
        return {}
    if not data_dir or not Path(data_dir).expanduser().is_dir():
        raise ValueError(f"profile='paper' needs data_dir, an ImageNet folder (train/, val/); got {data_dir!r}")
    # ResNet-50, the paper's main backbone; Table 2's rows each on their own paper backbone (ResNet-50, and the
    # ResNet-18 / MobileNetV3 of the steps set)
    wanted = {"data_dir": str(Path(data_dir).expanduser()), "profile": None,
              "backbone": None if notebook == "04_ablations" else "resnet50"}
    return {k: v for k, v in wanted.items() if _takes(notebook, k)}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _snapshot(folders: Sequence[Path]) -> dict[Path, float]:
    return {p: p.stat().st_mtime for d in folders if d.is_dir() for p in d.rglob("*") if p.is_file()}


def _written(before: dict[Path, float], folders: Sequence[Path]) -> list[Path]:
    return sorted(p for p, t in _snapshot(folders).items() if before.get(p) != t)


def reproduce(profile: str = "embedded", data_dir: str | None = None, *, only: Sequence[str] = (),
              force: bool = False, log_output: bool = False) -> list[dict[str, Any]]:
    """Run the notebooks (all, or those whose names start with one of ``only``); returns one record each."""
    import papermill

    check_choice("profile", profile, PROFILES)
    selected = [n for n in ORDER if not only or any(n.startswith(o) for o in only)]
    if not selected:
        raise ValueError(f"only={list(only)} matches no notebook; valid choices are {list(ORDER)}")
    out_dir = paths.runs_dir() / "reproduce" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for name in selected:
        source = paths.repo_root() / "notebooks" / f"{name}.ipynb"
        params = notebook_parameters(name, profile, data_dir)
        executed, record_path = out_dir / f"{name}.ipynb", out_dir / f"{name}.json"
        key = {"parameters": params, "notebook_sha256": _digest(source)}
        old = json.loads(record_path.read_text()) if record_path.is_file() else {}
        if not force and old.get("status") == "done" and {k: old.get(k) for k in key} == key and executed.is_file():
            records.append({**old, "status": "skipped (done)"})
            print(f"[reproduce] {name}: done before with the same parameters, skipped", flush=True)
            continue
        print(f"[reproduce] {name}: running {params or '(stored defaults)'}", flush=True)
        watched = [paths.runs_dir() / name, paths.figures_dir()]
        before, t0 = _snapshot(watched), time.perf_counter()
        status = "done"
        try:
            papermill.execute_notebook(str(source), str(executed), parameters=params, kernel_name="python3",
                                       progress_bar=False, log_output=log_output, cwd=str(paths.repo_root()))
        except Exception as e:  # noqa: BLE001 - the record names the failure; later notebooks still run
            status = f"failed: {type(e).__name__}: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else ''}"
        written = _written(before, watched)
        record = {**key, "notebook": name, "status": status, "wall_s": round(time.perf_counter() - t0, 1),
                  "executed": str(executed),
                  "tables": [str(p) for p in written if p.suffix in (".csv", ".json")],
                  "figures": [str(p) for p in written if p.suffix == ".png"]}
        tmp = record_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(record_path)
        records.append(record)
        print(f"[reproduce] {name}: {status} in {record['wall_s']:.0f} s", flush=True)
    return records


def write_gallery(records: Sequence[dict[str, Any]], folder: str | Path) -> list[Path]:
    """Copy one figure of each notebook (the PNGs listed in its record: ``figures/`` first, one showing an attention
    model before a plain-only one, then by name) into ``folder`` as
    ``<notebook>.png`` (stable names the README links to), with ``index.json`` saying where each came from and what
    ran it. Records of skipped notebooks are their earlier records, so a resumed reproduction keeps the gallery
    complete, and a run of some notebooks (``--only``) keeps the others' entries; a notebook that wrote no
    figure (or failed) is left out. Returns the copied files."""
    import shutil

    from tdam.evaluation.cost import device_name

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    old = folder / "index.json"
    copied, index = [], (json.loads(old.read_text()).get("figures", {}) if old.is_file() else {})
    for r in records:
        # the notebook's own figures first (not a run folder's), a figure with an attention model before a plain-only one
        figures = sorted((Path(f) for f in r.get("figures", []) if Path(f).is_file()),
                         key=lambda f: (f.parent != paths.figures_dir(), "-plain-" in f.name, f.name))
        if r["status"].startswith("failed") or not figures:
            continue
        target = folder / f"{r['notebook']}.png"
        shutil.copyfile(figures[0], target)
        copied.append(target)
        index[r["notebook"]] = {"figure": figures[0].name, "notebook_sha256": r.get("notebook_sha256"),
                                # every parameter in force: the notebook's defaults (its parameters cell) + overrides
                                "parameters": {**notebook_defaults(r["notebook"]), **r.get("parameters", {})}}
    import torch

    meta = {"made_by": "make gallery (python -m tdam.notebook.reproduce --gallery docs/gallery)", "data": "embedded tdam-shapes",
            "device": device_name(None), "torch": torch.__version__, "figures": index}
    (folder / "index.json").write_text(json.dumps(meta, indent=2) + "\n")
    return copied


def summary_table(records: Sequence[dict[str, Any]]) -> str:
    """The closing table: notebook, status, wall time, tables and figures written."""
    rows = [("notebook", "status", "wall (s)", "tables", "figures")]
    rows += [(r["notebook"], r["status"][:40], f"{r['wall_s']:.0f}", str(len(r["tables"])), str(len(r["figures"])))
             for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tdam.notebook.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="embedded", choices=PROFILES)
    parser.add_argument("--data-dir", help="an ImageNet folder (profile 'paper')")
    parser.add_argument("--only", nargs="*", default=(), help="notebook numbers or names to run (default: all)")
    parser.add_argument("--force", action="store_true", help="rerun notebooks that are already done")
    parser.add_argument("--quiet", action="store_true", help="print one line per notebook instead of streaming the "
                        "notebooks' outputs (their progress lines) to the terminal")
    parser.add_argument("--gallery", metavar="FOLDER", help="also copy each notebook's first figure into FOLDER "
                        "(profile 'embedded'; `make gallery` writes the README's gallery, docs/gallery/, which is "
                        "tracked: `make reproduce` leaves it alone)")
    args = parser.parse_args(argv)
    if args.gallery and args.profile != "embedded":
        print("error: --gallery shows the embedded-data figures; use it with --profile embedded", file=sys.stderr)
        return 2
    try:
        records = reproduce(args.profile, args.data_dir, only=args.only, force=args.force,
                            log_output=not args.quiet)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_table(records))
    print(f"executed notebooks and records: {paths.runs_dir() / 'reproduce' / args.profile}")
    if args.gallery:
        print(f"gallery: {len(write_gallery(records, args.gallery))} figures in {args.gallery}")
    return 1 if any(r["status"].startswith("failed") for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
