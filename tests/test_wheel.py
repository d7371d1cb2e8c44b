"""A wheel works without the source tree: recipes and the studio's page are package data, so an
installed wavediff finds every shipped recipe by name and serves its page."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import sys
from pathlib import Path
import wavediff, wavediff.recipes
from wavediff.config import AERecipe, DiffusionRecipe, DistillRecipe, FinetuneRecipe, PreviewRecipe
from wavediff.config import load_recipe, recipe_path

installed = Path(wavediff.__file__).resolve()
assert Path(sys.prefix).resolve() in installed.parents, f"imported from {installed}, not the venv"
shipped = Path(wavediff.recipes.__file__).parent
kinds = {"ae": AERecipe, "loops": DiffusionRecipe, "finetune": FinetuneRecipe, "distill": DistillRecipe}
kinds["preview"] = PreviewRecipe
names = sorted(p.stem for p in shipped.glob("*.toml"))
assert names, shipped
for name in names:
    recipe = load_recipe(name, kinds[name.split("-")[0]])
    assert recipe_path(name).parent == shipped
assert sorted(p.name for p in (shipped / "accelerate").glob("*.yaml")), "no accelerate configs"
from importlib import resources
assert resources.files("wavediff.studio").joinpath("page.html").is_file(), "the studio's page is not in the wheel"
print(" ".join(names))
"""


@pytest.mark.slow
def test_an_installed_wheel_loads_every_shipped_recipe_by_name(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("wavediff-*.whl")
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"  # not the repository: nothing can be read from beside the source
    elsewhere.mkdir()
    done = subprocess.run([python, "-c", CHECK], cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    shipped = sorted(p.stem for p in (ROOT / "recipes").glob("*.toml"))
    assert done.stdout.split() == shipped
