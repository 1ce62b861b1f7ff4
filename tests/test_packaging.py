"""Packaging: operators/ and pipelines/ are installed into the invdiff namespace, and importing
invdiff stays light."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("where", ["repo_root", "elsewhere"])
def test_namespace_packages_import_from_anywhere(where: str, tmp_path: Path) -> None:
    cwd = REPO if where == "repo_root" else tmp_path
    code = "import invdiff.operators, invdiff.pipelines; print(invdiff.operators.LinearOperator.__module__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "invdiff.operators.base"


def test_import_invdiff_is_light(tmp_path: Path) -> None:
    code = (
        "import sys, invdiff, invdiff.operators, invdiff.schedule, invdiff.priors, invdiff.samplers\n"
        "heavy = sorted(m for m in ('monai', 'lightning', 'pytorch_lightning', 'pydicom', 'nibabel') if m in sys.modules)\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported by `import invdiff`: {out.stdout.strip()}"


def test_layers_import_one_way() -> None:
    """operators never import invdiff core or pipelines; the core never imports pipelines."""
    offenders = []
    for folder, forbidden in (("operators", r"(invdiff|\.\.)"), ("invdiff", r"(invdiff\.pipelines|\.+pipelines)")):
        pattern = re.compile(rf"^\s*(from|import)\s+{forbidden}", re.MULTILINE)
        for path in (REPO / folder).rglob("*.py"):
            if pattern.search(path.read_text()):
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders


def test_ci_runs_the_readme_commands() -> None:
    """.ci/run performs exactly the README's install, demo and test commands, so a green CI proves the README."""
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    commands = [line.strip() for line in readme.splitlines() if line.strip().startswith(("pip install", "invdiff demo", "pytest"))]
    assert commands[:3] == ['pip install torch==2.13.0 -e ".[dev]"', "invdiff demo", "pytest -q"], commands[:3]
    for command in commands[:3]:
        assert command in ci, f"README command not in .ci/run: {command}"
