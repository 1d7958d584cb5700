"""The wheel installs models/ and pipelines/ as recsys_embed subpackages and nothing top-level."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# what setup.py and setup.cfg build the wheel from
SOURCES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "recsys_embed", "models", "pipelines")


def source_tree(target: Path) -> list[str]:
    """A copy of the sources in ``target``; the kernels that `make setup` compiled from the same
    sources (AutoInt's field attention, DIN's Dice, QR's row product) go where the wheel's build looks for them
    (build/lib.<platform>-<tag>/), their times kept, so setuptools' build_ext takes them as up to
    date instead of compiling them again (a kernel older than its source is compiled again, as in
    any in-tree build). Returns the kernels' paths in the wheel."""
    target.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, target / name)
    build_lib = target / "build" / f"lib.{sysconfig.get_platform()}-{sys.implementation.cache_tag}"
    kernels = []
    for folder, package in ((REPO / "models" / "layers", "recsys_embed/models/layers"), (REPO / "recsys_embed" / "compression", "recsys_embed/compression")):
        for kernel in folder.glob("_*.so"):
            (build_lib / package).mkdir(parents=True, exist_ok=True)
            shutil.copy2(kernel, build_lib / package / kernel.name)
            kernels.append(f"{package}/{kernel.name}")
    return kernels


def test_wheel_installs_subpackages_only_under_recsys_embed(tmp_path: Path) -> None:
    kernels = source_tree(tmp_path / "src")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(tmp_path / "src")],
        check=True, cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("recsys_embed-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top_level == {"recsys_embed"}, top_level
    assert set(kernels) <= set(names), "a compiled kernel is missing from the wheel"
    # every package folder of the repo made it into the wheel
    for folder, package in (("models", "recsys_embed/models"), ("pipelines", "recsys_embed/pipelines"), ("recsys_embed", "recsys_embed")):
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.relative_to(REPO / folder).as_posix()
            assert f"{package}/{rel}" in names, f"{package}/{rel} missing from the wheel: list it in setup.cfg packages"

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True)
    assert not (target / "models").exists() and not (target / "pipelines").exists()
    code = (
        "import recsys_embed, recsys_embed.models, recsys_embed.pipelines, recsys_embed.tables, importlib.util;"
        "assert recsys_embed.__file__.startswith(%r), recsys_embed.__file__;"
        "assert importlib.util.find_spec('models') is None and importlib.util.find_spec('pipelines') is None;"
        "print('ok')" % str(target)
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
