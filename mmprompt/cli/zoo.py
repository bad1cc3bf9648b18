"""The model zoo from the command line.

    python tools/model_zoo.py list
    python tools/model_zoo.py download NAME             # verified file in $MMPROMPT_CACHE/zoo/NAME/
    python tools/model_zoo.py eval NAME --root $DATA [--dataset-config-file F] [--output-dir D] [KEY VALUE ...]

Publishing a finished run (then upload the file to URL and regenerate model_zoo.md):

    python tools/model_zoo.py add OUTPUT_DIR --name NAME --url URL --config configs/X.yaml --command "..."
    python tools/model_zoo.py markdown

``eval`` downloads the checkpoint, rebuilds the model from the config stored in it and runs
``tools/train_net.py --eval-only`` on your data. With ``--dataset-config-file`` the checkpoint's
DATASET keys are replaced by that file's (cross-dataset evaluation); KEY VALUE pairs come last.
``--index`` (or ``$MMPROMPT_ZOO_INDEX``) reads another index file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from .. import zoo
from ..utils.cli import run_cli
from . import train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", default=None, help="zoo index JSON (default: the package's)")
    p.add_argument("--cache-dir", default=None, help="download cache (default: $MMPROMPT_CACHE or ~/.cache/mmprompt)")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the checkpoints in the zoo")
    d = sub.add_parser("download", help="download and verify one checkpoint")
    d.add_argument("name")
    e = sub.add_parser("eval", help="download one checkpoint and evaluate it with train_net --eval-only")
    e.add_argument("name")
    e.add_argument("--root", required=True, help="DATASET.ROOT of your data")
    e.add_argument("--dataset-config-file", default="", help="evaluate on this dataset instead of the training one")
    e.add_argument("--output-dir", default="", help="where metrics.json goes (default output/zoo_eval/NAME)")
    e.add_argument("--overwrite", action="store_true", help="replace the results already in --output-dir")
    e.add_argument("opts", nargs="*", help="KEY VALUE config overrides (before or after the flags)")
    a = sub.add_parser("add", help="add a finished run's final weights to the index")
    a.add_argument("run_dir")
    a.add_argument("--name", required=True)
    a.add_argument("--url", required=True, help="where the file will be downloaded from")
    a.add_argument("--config", required=True, help="the recipe it was trained with, e.g. configs/maple.yaml")
    a.add_argument("--command", dest="train_command", required=True, help="the exact command that trained it")
    sub.add_parser("markdown", help="print the model_zoo.md table of the index")
    return p


def cmd_list(entries) -> None:
    if not entries:
        print("The model zoo is empty: no checkpoint trained with mmprompt has been published yet.")
        return
    for e in entries:
        metrics = ", ".join(
            f"{k} {v:.2f}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in (e.get("metrics") or {}).items()
        )
        size = f"{e['size'] / 2**20:.1f} MiB" if e.get("size") else "?"
        print(f"{e['name']}\t{e.get('dataset', '')}\t{metrics}\t{size}\t{e.get('config', '')}")


def cmd_eval(args, entry, path) -> int:
    import yaml

    from mmprompt.config import drop_unknown_keys, get_cfg
    from mmprompt.engine.checkpoint import load_weights

    _, meta = load_weights(path)
    if "config" not in meta:
        raise zoo.MMPromptError(f"{path} carries no config; it was not saved by mmprompt's trainer.")
    try:
        config = yaml.safe_load(meta["config"])
    except yaml.YAMLError:
        config = None
    if not isinstance(config, dict):
        raise zoo.MMPromptError(
            f"The config stored in {path} is not a yaml mapping; the checkpoint was not saved by mmprompt's trainer."
        )
    obsolete = drop_unknown_keys(get_cfg(), config)
    if obsolete:
        print(
            f"warning: {path} was saved by an older mmprompt; its config keys {', '.join(obsolete)} "
            "no longer exist and are ignored.",
            file=sys.stderr,
        )
    if args.dataset_config_file:
        config.pop("DATASET", None)
    out = args.output_dir or os.path.join("output", "zoo_eval", entry["name"])
    # the recipe name metrics.json records is the config file's; it lives outside OUTPUT_DIR so a
    # refused output dir (train_net checks it) is left as it was
    with tempfile.TemporaryDirectory(prefix="mmprompt-zoo-") as tmp:
        config_file = os.path.join(tmp, f"{entry['name']}.yaml")
        with open(config_file, "w", encoding="utf-8") as f:
            yaml.safe_dump(config, f)
        argv = [
            "--config-file",
            config_file,
            "--root",
            args.root,
            "--output-dir",
            out,
            "--eval-only",
            "--model-dir",
            path,
        ]
        if args.dataset_config_file:
            argv += ["--dataset-config-file", args.dataset_config_file]
        if args.overwrite:
            argv.append("--overwrite")
        return train.main(argv + list(args.opts))


def parse_args(argv=None):
    """The documented ``eval NAME --root R KEY VALUE`` order: argparse fills the eval parser's
    KEY VALUE positionals before it sees --root, so pairs after the flags arrive as extras."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras and (args.action != "eval" or any(x.startswith("--") for x in extras)):
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    if args.action == "eval":
        args.opts = list(args.opts) + extras
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.action == "add":
        entry = zoo.entry_from_run(
            args.run_dir, name=args.name, url=args.url, config=args.config, command=args.train_command
        )
        zoo.add_entry(entry, args.index or zoo.INDEX_PATH)
        print(f"added {entry['name']} (sha256 {entry['sha256']}, {entry['size']} bytes)")
        return 0
    entries = zoo.load_index(args.index)
    if args.action == "markdown":
        print(zoo.markdown(entries))
        return 0
    if args.action == "list":
        cmd_list(entries)
        return 0
    entry = zoo.find(args.name, entries)
    path = zoo.download(entry, cache=args.cache_dir)
    if args.action == "download":
        print(path)
        return 0
    return cmd_eval(args, entry, path)


def console_main() -> None:
    """The console script's entry point (exit code as :func:`mmprompt.utils.cli.run_cli` sets it)."""
    run_cli(main)


if __name__ == "__main__":
    console_main()
