"""Train a prompt method on a frozen backbone, or evaluate saved weights.

    python tools/train_net.py --config-file configs/maple_adap_pos.yaml --root $DATA --seed 1 \\
        --output-dir output/maple_adap_pos/oxford_pets/seed1 DATASET.NAME oxford_pets \\
        DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base

    # continue a killed run / replace a run / evaluate a finished one
    python tools/train_net.py ... --resume
    python tools/train_net.py ... --overwrite
    python tools/train_net.py ... --eval-only --model-dir output/maple_adap_pos/oxford_pets/seed1 [--load-epoch 5]

    # N processes on this node through torchrun; several nodes: call torchrun yourself
    python tools/train_net.py ... --num-gpus 4
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        tools/train_net.py ...

DATALOADER.TRAIN_X.BATCH_SIZE is the global batch, split evenly over the processes.

Config merge order: defaults -> --dataset-config-file -> --config-file -> --root/--seed/
--output-dir -> KEY VALUE overrides. The whole merged config is validated before anything is
built (mmprompt.config.validate). The merged config is written to OUTPUT_DIR/config.yaml.

One run per output dir (mmprompt.engine.run_dir): a dir that holds another run's results is
refused unless --resume (the same config: seed, shots, dataset ... all must match) or --overwrite;
a lock keeps two runs out of one dir.

The authors' CoOp / MaPLe yamls work as they are, with their --trainer flag and TRAINER.* overrides
(translated by mmprompt/config/dassl_compat.py):

    python tools/train_net.py --root $DATA --seed 1 --trainer MaPLe \
        --dataset-config-file configs/datasets/oxford_pets.yaml \
        --config-file configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml \
        --output-dir output/maple/oxford_pets/seed1 DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import ConfigError
from ..utils.cli import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default="", help="method config (yaml)")
    p.add_argument("--dataset-config-file", default="", help="dataset config (yaml), merged before the method config")
    p.add_argument(
        "--trainer",
        default="",
        help="a Dassl/CoOp trainer name (CoOp, CoCoOp, MaPLe, IVLP, VPT) "
        "for the authors' trainer yamls; reads the config Dassl-style",
    )
    p.add_argument("--root", default="", help="DATASET.ROOT: the folder holding the datasets")
    p.add_argument("--seed", type=int, default=None, help="SEED")
    p.add_argument("--output-dir", default="", help="OUTPUT_DIR")
    p.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in OUTPUT_DIR (same config)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the run already in OUTPUT_DIR (its results are deleted)"
    )
    p.add_argument("--eval-only", action="store_true", help="evaluate weights instead of training")
    p.add_argument("--model-dir", default="", help="weights for --eval-only: a run's output dir or a .safetensors file")
    p.add_argument(
        "--load-epoch",
        type=int,
        default=None,
        help="with --model-dir: the weights after this epoch (default: the final ones)",
    )
    p.add_argument("--num-gpus", type=int, default=1, help="processes on this node (relaunched through torchrun)")
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides (flags may come before or after them)")
    return p


def setup_cfg(args):
    from mmprompt.config import load_cfg

    if not args.config_file:
        raise ConfigError(
            "--config-file is required: the method's yaml, e.g. "
            "--config-file configs/maple_adap_pos.yaml (see configs/)."
        )
    flags = []
    if args.root:
        flags += ["DATASET.ROOT", args.root]
    if args.seed is not None:
        flags += ["SEED", str(args.seed)]
    if args.output_dir:
        flags += ["OUTPUT_DIR", args.output_dir]
    cfg = load_cfg(
        args.config_file, args.dataset_config_file, flags + list(args.opts), trainer=getattr(args, "trainer", "")
    )  # tools reusing setup_cfg may have no --trainer
    cfg.freeze()
    return cfg


def nothing_to_train(cfg) -> bool:
    """Zero-shot CLIP: the CLIP classifier has no head, so with no prompt method and a frozen
    backbone there are no weights to train or load."""
    return cfg.MODEL.NAME == "clip_prompt_classifier" and not cfg.PROMPT.METHODS and cfg.MODEL.BACKBONE.FREEZE


def check_args(args, cfg) -> None:
    if args.load_epoch is not None and not args.model_dir:
        raise ConfigError("--load-epoch needs --model-dir (the run whose epoch to load).")
    if nothing_to_train(cfg):
        if not args.eval_only:
            raise ConfigError(
                "A frozen CLIP with no prompt method (zero-shot CLIP) has nothing to train: "
                "evaluate it with --eval-only (no --model-dir needed)."
            )
    elif args.eval_only and not (args.model_dir or cfg.MODEL.INIT_WEIGHTS):
        raise ConfigError(
            "--eval-only needs weights to evaluate: --model-dir OUTPUT_DIR_OF_A_RUN "
            "(optionally --load-epoch N) or a .safetensors file, or MODEL.INIT_WEIGHTS."
        )
    if args.resume and (args.overwrite or args.eval_only):
        raise ConfigError(
            f"--resume cannot be combined with {'--overwrite' if args.overwrite else '--eval-only'}: choose one."
        )
    if args.num_gpus < 1:
        raise ConfigError(f"--num-gpus must be >= 1, got {args.num_gpus}.")
    from mmprompt.engine import distributed as du

    if args.num_gpus > 1 and not du.is_torchrun_worker():
        import torch

        if cfg.USE_CUDA and not torch.cuda.is_available():
            raise ConfigError(
                f"--num-gpus {args.num_gpus}, but no GPU is visible (torch.cuda.is_available() is "
                f"False). Add USE_CUDA False to run {args.num_gpus} CPU processes (gloo), or drop "
                "--num-gpus."
            )
        if cfg.USE_CUDA and torch.cuda.device_count() < args.num_gpus:
            raise ConfigError(
                f"--num-gpus {args.num_gpus} but this node has {torch.cuda.device_count()} GPU(s). "
                "Lower --num-gpus, or use USE_CUDA False for CPU processes (gloo)."
            )
        du.check_backend(cfg.TRAIN.DIST_BACKEND, cfg.USE_CUDA)
        if not cfg.USE_CUDA:
            print(
                f"--num-gpus {args.num_gpus} with USE_CUDA False: {args.num_gpus} CPU processes on this node "
                "(torch.distributed, gloo), each taking its share of every batch.",
                flush=True,
            )


def output_dir_mode(args) -> str:
    if args.eval_only:
        return "eval"
    return "resume" if args.resume else "overwrite" if args.overwrite else "fresh"


def open_output_dir(args, cfg):
    """Lock and check OUTPUT_DIR for this run (see mmprompt.engine.run_dir); None in processes
    that leave that to another (torchrun workers of a launching process, ranks > 0)."""
    from mmprompt.engine import distributed as du
    from mmprompt.engine.checkpoint import weights_path
    from mmprompt.engine.run_dir import open_run_dir

    if not du.owns_output_dir():
        return None
    mode = output_dir_mode(args)
    weights = None
    if args.eval_only:
        weights = weights_path(args.model_dir, args.load_epoch) if args.model_dir else cfg.MODEL.INIT_WEIGHTS
    if mode == "eval" and args.overwrite:
        mode = "overwrite"
    return open_run_dir(cfg, mode, eval_weights=weights)


def summary(results) -> str:
    main = results.get("main_metric", "accuracy")
    split = results.get("split", "test")
    if "hm" in results:
        line = f"base {results['base'][main]:.2f}  new {results['new'][main]:.2f}  HM {results['hm']:.2f}  ({main})"
    else:
        line = f"{split} {main} {results[split][main]:.2f}" if split in results else "no test run"
    for name, m in results.get("cross", {}).items():
        line += f"\n{name}: {main} {m.get(main, float('nan')):.2f}"
    return line


def main(argv=None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    cfg = setup_cfg(args)
    check_args(args, cfg)
    from mmprompt.config.validate import validate_config

    validate_config(cfg, training=not args.eval_only)

    from mmprompt.engine import distributed as du

    run_dir = open_output_dir(args, cfg)
    try:
        if args.num_gpus > 1 and not du.is_torchrun_worker():
            return du.relaunch_with_torchrun(args.num_gpus)
        return run(args, cfg)
    finally:
        if run_dir is not None:
            run_dir.close()


def run(args, cfg) -> int:
    from mmprompt.engine import distributed as du
    from mmprompt.engine.trainer import Trainer

    trainer, succeeded = None, False
    try:
        trainer = Trainer(cfg)
        # parse_results.py groups runs by recipe: MaPLe and MaPLe + adap_pos share PROMPT.METHODS
        trainer.run_info["recipe"] = os.path.splitext(os.path.basename(args.config_file))[0]
        if cfg.MODEL.INIT_WEIGHTS:
            trainer.load_weights(cfg.MODEL.INIT_WEIGHTS)
        if args.eval_only:
            weights = (
                trainer.load_weights(args.model_dir, args.load_epoch) if args.model_dir else cfg.MODEL.INIT_WEIGHTS
            )
            # zero-shot CLIP evaluates with no weights of its own
            results = trainer.test({"eval_only": True, "weights": os.path.abspath(weights) if weights else None})
        else:
            results = trainer.train(resume=args.resume)
        if trainer.is_main:
            print(summary(results), flush=True)
            print(f"results in {os.path.join(cfg.OUTPUT_DIR, 'metrics.json')}", flush=True)
        succeeded = True
    except RuntimeError as e:
        if not du.is_peer_failure(e):
            raise
        # a consequence, not a cause: the rank that failed printed its own error
        print(
            f"error (rank {du.rank()}): another rank stopped, so this one stops too ({type(e).__name__}).",
            file=sys.stderr,
            flush=True,
        )
        return 1
    finally:
        if trainer is not None:
            trainer.close()
        du.cleanup_distributed(succeeded)
    return 0


def console_main() -> None:
    """The console script's entry point (exit code as :func:`mmprompt.utils.cli.run_cli` sets it)."""
    run_cli(main)


if __name__ == "__main__":
    console_main()
