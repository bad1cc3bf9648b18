#!/usr/bin/env python
"""The installed package, as a user gets it: run from outside the repository with the Python of a
fresh environment where ``pip install ".[clip,text]"`` ran (``make check-install`` does all that).

Three cases, each a few lines of the public API on a tiny random model: MaPLe + adap_pos on an
open_clip CLIP, VPT-deep + adap_pos on a timm ViT, prompt tuning + adap_pos on a BERT. Each trains
3 steps in a plain PyTorch loop (the Gumbel temperature must move), saves, reloads and must give
the same logits. Prints one line per case; exit code 1 if any check fails.
"""

import os
import sys
import tempfile

import torch

import mmprompt


def temperatures(model):
    return [round(float(m.tau), 4) for m in model.modules() if type(m).__name__ == "TemperatureSchedule"]


def train_save_reload(name, model, batch, backbone, **load) -> bool:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    start = temperatures(model)
    model.train()
    for _ in range(3):
        model(batch)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        logits = model(batch)["logits"]
    folder = tempfile.mkdtemp(prefix="mmprompt-check-")
    model.save_pretrained(folder)
    back = mmprompt.from_pretrained(folder, model=backbone, **load)
    with torch.no_grad():
        same = torch.equal(back(batch)["logits"], logits)
    moved = temperatures(model)
    ok = same and moved != start and temperatures(back) == moved
    print(
        f"{name}: tau {start} -> {moved}, reloaded tau {temperatures(back)}, same logits after reload: {same}"
        f"{'' if ok else '  FAILED'}"
    )
    return ok


def clip_case() -> bool:
    import open_clip

    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=32, layers=2, width=64, head_width=32, patch_size=8),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
    )
    model = mmprompt.wrap(
        clip, "maple", classnames=["cat", "dog", "car"], n_ctx=2, prompt_depth=2, position="adap_pos", gamma=0.1
    )
    batch = {"image": torch.randn(4, 3, 32, 32), "label": torch.tensor([0, 1, 2, 0])}
    return train_save_reload("open_clip CLIP + MaPLe + adap_pos", model, batch, clip)


def timm_case() -> bool:
    import timm

    vit = timm.create_model(
        "vit_base_patch16_224",
        pretrained=False,
        num_classes=0,
        embed_dim=64,
        depth=2,
        num_heads=2,
        img_size=32,
        patch_size=8,
    )
    model = mmprompt.wrap(vit, "vpt", num_classes=3, num_tokens=4, deep=True, position="adap_pos", gamma=0.1)
    batch = {"image": torch.randn(4, 3, 32, 32), "label": torch.tensor([0, 1, 2, 0])}
    return train_save_reload("timm ViT + VPT-deep + adap_pos", model, batch, vit)


def bert_case() -> bool:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = os.path.join(tempfile.mkdtemp(), "vocab.txt")
    with open(vocab, "w") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "film"]))
    tokenizer = BertTokenizerFast(vocab_file=vocab)
    bert = BertModel(
        BertConfig(vocab_size=9, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    )
    model = mmprompt.wrap(
        bert, "prompt_tuning", num_classes=2, tokenizer=tokenizer, num_tokens=4, position="adap_pos", gamma=0.1
    )
    batch = {"text": ["good movie", "bad film", "good film", "bad movie"], "label": torch.tensor([1, 0, 1, 0])}
    return train_save_reload("BERT + prompt tuning + adap_pos", model, batch, bert, tokenizer=tokenizer)


def main() -> int:
    torch.manual_seed(0)
    print(
        f"mmprompt {mmprompt.__version__} from {os.path.dirname(mmprompt.__file__)}, "
        f"{len(mmprompt.list_recipes())} packaged recipes"
    )
    results = [clip_case(), timm_case(), bert_case()]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
