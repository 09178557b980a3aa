"""Module edges point one way, and every third-party import is a declared dependency."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("module", "must_not_load"),
    [
        ("dedupd.config", "dedupd.hashing"),
        ("dedupd.config", "scipy"),
        ("dedupd.watcher", "dedupd.pipeline"),
        ("dedupd.actions", "dedupd.pipeline"),
        ("dedupd.grouping", "dedupd.pipeline"),
    ],
)
def test_module_does_not_pull_in(module: str, must_not_load: str) -> None:
    """Importing a module in a fresh interpreter does not load what sits above it."""
    code = f"import sys, {module}; print({must_not_load!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"{module} imports {must_not_load}"


def test_every_third_party_import_is_a_declared_dependency() -> None:
    """Each top-level module dedupd/ imports outside the standard library comes from a
    distribution named in pyproject.toml's dependencies."""
    declared = {
        re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-")
        for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    providers = importlib.metadata.packages_distributions()
    missing = {}
    for source in (ROOT / "dedupd").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top == "dedupd" or top in sys.stdlib_module_names:
                    continue
                dists = {d.lower().replace("_", "-") for d in providers.get(top, [])}
                if not dists & declared:
                    missing[top] = source.name
    assert missing == {}
