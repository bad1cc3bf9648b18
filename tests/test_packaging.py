"""Packaging: one version source, extras that match the import guards, recipes found as package
data, console scripts next to the tools, and the registry reporting a broken module's own error."""

from __future__ import annotations

import builtins
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import mmprompt  # noqa: E402
from mmprompt import recipes  # noqa: E402
from mmprompt.errors import ConfigError, MMPromptError  # noqa: E402
from mmprompt.registry import Registry  # noqa: E402
from mmprompt.utils.extras import EXTRAS, require  # noqa: E402

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def pyproject():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_version_is_written_once():
    project = pyproject()
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mmprompt.__version__"}
    assert not os.path.exists(os.path.join(REPO, "setup.py"))
    assert mmprompt.__version__


def test_every_guarded_import_names_an_existing_extra():
    extras = pyproject()["project"]["optional-dependencies"]
    for module, (dist, extra) in EXTRAS.items():
        assert extra in extras, (module, extra)
        assert any(req.split(">")[0].split("=")[0].strip() == dist for req in extras[extra]), (module, dist)
    assert set(extras) >= {"clip", "timm", "text", "demo", "peft", "all"}


def test_missing_extra_names_the_pip_command(monkeypatch):
    real_import = builtins.__import__

    def no_open_clip(name, *args, **kwargs):
        if name.split(".")[0] == "open_clip":
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "open_clip", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_open_clip)
    monkeypatch.setattr("importlib.import_module", lambda name: no_open_clip(name))
    with pytest.raises(MMPromptError, match=r'pip install "mmprompt\[clip\]"'):
        require("open_clip", "open_clip backbones")


def test_base_package_imports_without_backbone_libraries():
    """The base install: config, registry names and the API import with no backbone library."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('open_clip', 'timm', 'transformers', 'datasets', 'tensorboard'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import mmprompt\n"
        "from mmprompt.config import get_cfg\n"
        "from mmprompt.registry import PROMPTS, MODELS, BACKBONES\n"
        "get_cfg(); print(len(PROMPTS.names()), len(MODELS.names()), len(BACKBONES.names()))\n"
        "print(len(mmprompt.list_recipes()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    counts = proc.stdout.split()
    assert all(int(n) > 0 for n in counts), proc.stdout


def test_recipes_are_listed_and_resolved():
    names = recipes.list_recipes()
    assert "maple_adap_pos" in names and "demo/adap_pos" in names
    assert not any(n.startswith("_base_/") for n in names)
    path = recipes.recipe_path("maple_adap_pos")
    assert path == recipes.recipe_path("configs/maple_adap_pos.yaml") == recipes.recipe_path("maple_adap_pos.yaml")
    assert os.path.isfile(path)
    with pytest.raises(ConfigError, match="maple_adap_pos"):
        recipes.recipe_path("maple_adap_po")


def test_configs_paths_resolve_from_any_working_directory(tmp_path, monkeypatch):
    """An installed package reads recipes' ``configs/...`` paths (bases, open_clip JSONs) from the
    packaged copy when the working directory has no configs/."""
    from mmprompt.config import load_cfg

    monkeypatch.chdir(tmp_path)
    assert recipes.packaged_path("configs/_base_/tiny_clip_model.json").endswith("tiny_clip_model.json")
    cfg = load_cfg("configs/_base_/tiny_clip.yaml")
    assert cfg.MODEL.BACKBONE.ARCH == "configs/_base_/tiny_clip_model.json"
    from mmprompt.backbones.open_clip import resolve_open_clip_arch

    pytest.importorskip("open_clip")
    assert resolve_open_clip_arch(cfg.MODEL.BACKBONE.ARCH) == "tiny_clip_model"


def test_package_data_ships_the_recipes():
    data = pyproject()["tool"]["setuptools"]["package-data"]["mmprompt"]
    assert any(p.startswith("_recipes/") and p.endswith(".yaml") for p in data)
    assert any(p.startswith("_recipes/") and p.endswith(".json") for p in data)
    assert os.path.realpath(recipes.RECIPE_ROOT) == os.path.realpath(os.path.join(REPO, "configs"))


@pytest.mark.parametrize(
    "script,target",
    [
        ("mmprompt-train", "mmprompt.cli.train:console_main"),
        ("mmprompt-zoo", "mmprompt.cli.zoo:console_main"),
        ("mmprompt-prep", "mmprompt.cli.prep:console_main"),
    ],
)
def test_console_scripts_point_at_the_cli_modules(script, target):
    assert pyproject()["project"]["scripts"][script] == target
    module, func = target.split(":")
    assert callable(getattr(__import__(module, fromlist=[func]), func))


def test_prep_dispatcher_runs_the_named_preparer(capsys):
    from mmprompt.cli import prep
    from mmprompt.utils.cli import call_cli

    assert call_cli(prep.main, ["fgvc", "--root", "/nonexistent-root", "--dataset", "cub"]) == 2
    assert "--root /nonexistent-root does not exist" in capsys.readouterr().err
    assert call_cli(prep.main, ["nope"]) == 2
    assert "clip, fgvc, fashion-mnist, text" in capsys.readouterr().err


def test_registry_reports_a_broken_module_own_import_error(tmp_path, monkeypatch):
    pkg = tmp_path / "broken_methods"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text("from mmprompt.registry import Registry\n")
    (pkg / "bad.py").write_text("import a_library_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("prompt method", ["broken_methods"])
    for _ in range(2):  # and again at the next lookup, not "Unknown prompt method"
        with pytest.raises(ModuleNotFoundError, match="a_library_that_is_not_installed"):
            registry.get("anything")
