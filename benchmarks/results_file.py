"""benchmarks/RESULTS.md is shared by the benchmark scripts: each one rewrites only its own marked section."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch

HEADER = "# invdiff benchmark results\n\nEach section is written by the script it names; rerun that script to refresh it.\n"


def update_section(path: Path, key: str, markdown: str) -> None:
    """Replace (or append) the text between ``<!-- key:begin -->`` and ``<!-- key:end -->``; atomic write."""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    block = f"{begin}\n{markdown.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def hardware() -> str:
    """CPU model, logical CPUs, torch version and threads; the GPU when one is used."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}; {os.cpu_count()} logical CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads{gpu}"
