"""DESIGN.md's floors: who may import whom, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLOOR_0 = {"recsys_embed.errors", "recsys_embed.files", "recsys_embed.yaml_strict"}  # of these, only errors imports nothing
FLOOR_1 = {"recsys_embed.features", "recsys_embed.batch", "recsys_embed.hashing", "recsys_embed.metrics", "recsys_embed.checkpoint",
           "recsys_embed.kernels"}
FLOOR_2 = ("recsys_embed.tables", "recsys_embed.compression", "recsys_embed.artifacts")


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[0] in ("models", "pipelines"):
        parts = ["recsys_embed", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def floor_of(module: str) -> int:
    if module in FLOOR_0:
        return 0
    if module in FLOOR_1:
        return 1
    if module.startswith(FLOOR_2):
        return 2
    if module.startswith(("recsys_embed.pipelines", "recsys_embed.models")):
        return 3
    if module.startswith("recsys_embed.jobs") or module == "recsys_embed":
        return 4
    raise AssertionError(f"{module} has no floor: add it to DESIGN.md's floors and to this test")


def our_imports(path: Path) -> set[str]:
    """Modules of ours that ``path`` imports; ``from recsys_embed.x import y`` counts as
    ``recsys_embed.x.y`` when ``y`` is a module (so ``from recsys_embed import jobs`` is a job)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recsys_embed"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if is_module(f"{node.module}.{a.name}"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("recsys_embed"))
    return found


def is_module(name: str) -> bool:
    """Whether ``name`` is a module or package of this repo (not a class or function)."""
    parts = name.split(".")[1:]
    if parts and parts[0] in ("models", "pipelines"):
        base = REPO.joinpath(*parts)
    else:
        base = REPO.joinpath("recsys_embed", *parts)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


SOURCES = [p for folder in ("recsys_embed", "models", "pipelines") for p in sorted((REPO / folder).rglob("*.py"))]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_respect_the_floors(path: Path) -> None:
    me = module_name(path)
    mine = floor_of(me)
    for target in our_imports(path):
        theirs = floor_of(target) if target != "recsys_embed" else 1
        if mine == 3 and theirs == 3:
            same_side = me.split(".")[:2] == target.split(".")[:2]
            assert same_side, f"{me} imports {target}: pipelines and models never import each other"
        if mine == 0 and target == "recsys_embed.errors":
            continue
        assert theirs < mine or (theirs == mine and mine > 1), (
            f"{me} (floor {mine}) imports {target} (floor {theirs})"
        )
    if mine < 4:
        assert not any(floor_of(t) == 4 for t in our_imports(path) if t != "recsys_embed"), f"{me} imports a job"


def test_no_bare_models_or_pipelines_imports() -> None:
    for path in SOURCES + sorted((REPO / "tests").glob("*.py")) + sorted((REPO / "examples").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                assert name.split(".")[0] not in ("models", "pipelines"), f"{path}: imports bare {name!r}"


def test_from_package_import_module_is_checked_as_that_module(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from recsys_embed import jobs, metrics\nfrom recsys_embed.jobs import trainer\n")
    assert {"recsys_embed.jobs", "recsys_embed.metrics", "recsys_embed.jobs.trainer"} <= our_imports(probe)
