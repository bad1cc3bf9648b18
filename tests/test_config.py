import pytest

from mmprompt.config import get_cfg, load_cfg
from mmprompt.errors import ConfigError, RegistryError
from mmprompt.registry import Registry


def write(path, text):
    path.write_text(text)
    return str(path)


def test_every_default_key_has_a_comment():
    import inspect
    import re

    from mmprompt.config import data_defaults, defaults, engine_defaults, prompt_defaults

    for mod in (defaults, prompt_defaults, data_defaults, engine_defaults):
        for line in inspect.getsource(mod).splitlines():
            if re.match(r"\s*_C(\.[A-Z0-9_]+)+ = ", line) and "CN(" not in line.split("=", 1)[1][:5]:
                assert "#" in line, f"config key without a comment in {mod.__name__}: {line.strip()}"


def test_base_chain_and_overrides(tmp_path):
    write(tmp_path / "a.yaml", "MODEL:\n  BACKBONE:\n    ARCH: from_a\n    FREEZE: false\n")
    write(tmp_path / "b.yaml", "_BASE_: a.yaml\nMODEL:\n  BACKBONE:\n    ARCH: from_b\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    c = write(sub / "c.yaml", "_BASE_: ../b.yaml\nSEED: 7\n")
    cfg = load_cfg(c, opts=["OPTIM.LR", "0.5", "MODEL.BACKBONE.KWARGS.depth", "2"])
    assert cfg.MODEL.BACKBONE.ARCH == "from_b"
    assert cfg.MODEL.BACKBONE.FREEZE is False
    assert cfg.SEED == 7 and cfg.OPTIM.LR == 0.5
    assert cfg.MODEL.BACKBONE.KWARGS.depth == 2


def test_base_cycle_is_refused(tmp_path):
    write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    b = write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_cfg(b)


def test_unknown_key_names_the_closest(tmp_path):
    f = write(tmp_path / "x.yaml", "MODEL:\n  BACKBONE:\n    ARCHH: vit\n")
    with pytest.raises(ConfigError, match=r"MODEL\.BACKBONE\.ARCHH.*MODEL\.BACKBONE\.ARCH"):
        load_cfg(f)
    with pytest.raises(ConfigError, match="Did you mean OPTIM.LR"):
        load_cfg(opts=["OPTIM.LRR", "1"])


def test_wrong_type_names_key_and_type():
    with pytest.raises(ConfigError, match=r"MODEL\.BACKBONE\.FREEZE.*expects bool"):
        load_cfg(opts=["MODEL.BACKBONE.FREEZE", "maybe"])
    with pytest.raises(ConfigError, match=r"SEED.*expects int"):
        load_cfg(opts=["SEED", "1.5"])
    assert load_cfg(opts=["OPTIM.LR", "1"]).OPTIM.LR == 1.0  # int is fine where a float is expected


def test_defaults_are_not_shared():
    a = get_cfg()
    a.SEED = 99
    assert get_cfg().SEED != 99


def test_registry_lookup_suggests_names():
    reg = Registry("thing")
    reg.register("vpt_deep", object())
    with pytest.raises(RegistryError, match="Did you mean 'vpt_deep'"):
        reg.get("vpt_dep")
