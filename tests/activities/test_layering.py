"""``activities`` sits below ``matching``: it signals, and never imports the app above it."""

from __future__ import annotations

import ast
from pathlib import Path

import activities


def test_activities_never_imports_matching() -> None:
    offenders = []
    for path in Path(activities.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n == "matching" or n.startswith("matching.")]
    assert offenders == []
