"""The code stays readable in pieces: no module of ``gridsearch/`` over 450 lines, no function of ``training/`` or
``engine/`` over 60."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gridsearch"


def test_no_module_over_450_lines_and_no_training_or_engine_function_over_60():
    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if source.count("\n") > 450:
            long_modules.append((str(path.relative_to(PACKAGE)), source.count("\n")))
        if path.parent.name not in ("training", "engine"):
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                if node.end_lineno - node.lineno + 1 > 60:
                    long_functions.append(
                        (f"{path.relative_to(PACKAGE)}:{node.name}", node.end_lineno - node.lineno + 1)
                    )
    assert long_modules == [] and long_functions == []
