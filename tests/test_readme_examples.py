"""The documented Python examples run as written: every ```python block of a section, in order, in one namespace,
in a fresh folder. Sections are named by (file, heading)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

SECTIONS = [
    ("README.md", "TD in your own model"),
    ("README.md", "Checkpoints from Python"),
    ("README.md", "Evaluate a folder of images from Python"),
    ("README.md", "Grad-CAM: where the model looks"),
]
# what a section's example leaves in its folder
WRITES = {"Grad-CAM: where the model looks": ["gradcam.png", "gradcam_step1.png", "gradcam_step2.png"]}

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^```python\s*\n(.*?)^```\s*$", re.S | re.M)


def python_blocks(path: str | Path, heading: str) -> list[str]:
    """The ```python blocks under the Markdown ``heading`` of ``path`` (up to the next heading of the same or a higher
    level; sub-sections included). Raises ValueError when the heading is missing or has no Python block."""
    lines = Path(path).read_text(encoding="utf-8").splitlines(keepends=True)
    start = level = None
    in_fence = False
    end = len(lines)
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_fence = not in_fence
        if in_fence:
            continue
        m = _HEADING.match(line)
        if not m:
            continue
        if start is None and m.group(2) == heading:
            start, level = i + 1, len(m.group(1))
        elif start is not None and len(m.group(1)) <= level:
            end = i
            break
    if start is None:
        raise ValueError(f"{path}: no heading {heading!r}")
    blocks = _FENCE.findall("".join(lines[start:end]))
    if not blocks:
        raise ValueError(f"{path}: the section {heading!r} has no ```python block")
    return blocks


def test_python_blocks_extractor(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# Top\n## A\n```python\nx = 1\n```\n```bash\nls\n```\n### A.1\n```python\n# not a heading\n"
                   "y = x\n```\n## B\n```python\nz = 2\n```\n")
    assert python_blocks(doc, "A") == ["x = 1\n", "# not a heading\ny = x\n"]
    assert python_blocks(doc, "B") == ["z = 2\n"]
    with pytest.raises(ValueError, match="no heading 'C'"):
        python_blocks(doc, "C")


@pytest.mark.parametrize("path,heading", SECTIONS, ids=[h for _, h in SECTIONS])
def test_documented_example_runs(path, heading, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # faster than two on a shared 2-core machine for these small inputs
    try:
        namespace: dict = {"__name__": "__doc_example__"}
        for i, code in enumerate(python_blocks(ROOT / path, heading)):
            exec(compile(code, f"{path} [{heading}] block {i + 1}", "exec"), namespace)  # noqa: S102
    finally:
        torch.set_num_threads(threads)
    for name in WRITES.get(heading, []):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG"), name
