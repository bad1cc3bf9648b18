"""TRAIN.PRECISION as Dassl's PREC (fp32 / fp16 / amp) besides bf16 and auto."""

import os
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_cocoop import batch, tiny  # noqa: E402
from test_engine_cli import cli  # noqa: E402
from test_engine_train import write_config  # noqa: E402

from mmprompt.engine import trainer as trainer_module  # noqa: E402
from mmprompt.engine.trainer import Precision, cast_backbone, resolve_precision  # noqa: E402
from mmprompt.errors import ConfigError  # noqa: E402

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU


@pytest.mark.parametrize(
    "value, expected",
    [
        ("fp32", Precision("fp32")),
        ("float32", Precision("fp32")),
        ("auto", Precision("fp32")),
        ("bf16", Precision("bf16", autocast=torch.bfloat16)),
        ("BF16", Precision("bf16", autocast=torch.bfloat16)),
    ],
)
def test_cpu_values(value, expected):
    assert resolve_precision(value, CPU) == expected


def test_cuda_values():
    assert resolve_precision("amp", CUDA) == Precision("amp", autocast=torch.float16, grad_scaler=True)
    assert resolve_precision("fp16", CUDA) == Precision(
        "fp16", autocast=torch.float16, backbone_dtype=torch.float16, grad_scaler=True
    )
    assert resolve_precision("float16", CUDA).backbone_dtype == torch.float16
    with pytest.raises(ConfigError, match="MODEL.BACKBONE.FREEZE is False.*amp"):
        resolve_precision("fp16", CUDA, backbone_frozen=False)
    assert resolve_precision("amp", CUDA, backbone_frozen=False).backbone_dtype is None
    with pytest.raises(ConfigError, match="use auto, fp32, fp16, amp or bf16"):
        resolve_precision("half", CUDA)


@pytest.mark.parametrize("value", ["fp16", "amp"])
def test_float16_on_cpu_is_one_message(value):
    with pytest.raises(ConfigError, match=f"TRAIN.PRECISION {value} computes in float16, which needs a CUDA GPU"):
        resolve_precision(value, CPU)


def test_cpu_fp16_is_refused_before_the_model_is_built(tmp_path, capsys, monkeypatch):
    def build_model(*args, **kwargs):
        raise AssertionError("the model was built before the precision was checked")

    monkeypatch.setattr(trainer_module, "build_model", build_model)
    code, err = cli(
        [
            "--config-file",
            write_config(tmp_path),
            "--root",
            str(tmp_path),
            "--output-dir",
            str(tmp_path / "run"),
            "TRAIN.PRECISION",
            "fp16",
            "USE_CUDA",
            "False",
        ],
        capsys,
    )
    assert code == 2 and "needs a CUDA GPU" in err and "TRAIN.PRECISION fp32" in err


def test_fp16_casts_the_backbone_and_keeps_prompts_in_fp32():
    """What fp16 does to a CoCoOp CLIP. The autocast here is the CPU's (float16 autocast on CUDA is
    what the trainer uses; this machine has no GPU): the mixed dtypes must meet without a cast error,
    prompts get fp32 gradients and the logits stay near fp32's."""
    model = tiny()
    model.train()
    b = batch()
    reference = model(b)["logits"].detach()
    cast_backbone(model, Precision("fp16", autocast=torch.float16, backbone_dtype=torch.float16, grad_scaler=True))
    assert {p.dtype for p in model.backbone.parameters()} == {torch.float16}
    prompts = [p for p in model.parameters() if p.requires_grad]
    assert prompts and {p.dtype for p in prompts} == {torch.float32}
    with torch.autocast("cpu", dtype=torch.float16):
        out = model(b)
    out["loss"].float().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in prompts)
    assert (out["logits"].float() - reference).abs().max() <= 1e-2 * reference.abs().max()
    cast_backbone(model, Precision("fp32"))  # no backbone dtype: left as it is
    assert model.backbone.model.logit_scale.dtype == torch.float16
