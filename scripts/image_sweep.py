"""Compare image-branch settings on the validation split, sharing one trunk-feature cache.

    python -m scripts.image_sweep [--data DIR] [--artifacts DIR] [--set ...] \
        --variant "image.views=3" --variant "image.dropout=0.5 image.epochs=15" ...

Each variant (space-separated `section.field=value` overrides on top of the common `--set`s) fills
whatever the cache lacks, trains the tail and head with `image_model.train.fit` and reports
validation accuracy per photo and per product; the defaults run first unless `--skip-defaults`. Nothing is saved but the
cache, and test figures are not computed: settings are chosen on validation only. Prints a table
and one JSON line per variant.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time

from image_model.train import fit, predict_features, prepare_training, score_split
from listings.config import Config
from scripts.cli import build_config, settings_parser


def run_variant(base: Config, overrides: list[str]) -> dict:
    config = copy.deepcopy(base)
    for assignment in overrides:
        config.override(assignment)
    start = time.perf_counter()
    run = prepare_training(config)
    history, best_epoch, _ = fit(run.network, run.data["train"], run.data["val"], config)
    val = score_split(predict_features(run.network, run.data["val"].features[0])[2], run.data["val"])
    return {
        "variant": " ".join(overrides) or "defaults",
        "val_photo": val["image"]["accuracy"],
        "val_product": val["product"]["accuracy"],
        "val_product_macro_f1": val["product"]["macro_f1"],
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "epoch_seconds": round(sorted(h["train_seconds"] for h in history)[len(history) // 2], 2),
        "cache_fill_seconds": round(run.fill.seconds, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.image_sweep", description=__doc__.splitlines()[0], parents=[settings_parser()])
    parser.add_argument("--variant", action="append", default=[], help="space-separated overrides (repeatable)")
    parser.add_argument("--skip-defaults", action="store_true", help="run only the variants (their reference is known)")
    args = parser.parse_args(argv)
    base = build_config(args)
    results = []
    for variant in ([] if args.skip_defaults else [""]) + args.variant:
        result = run_variant(base, variant.split())
        results.append(result)
        print(json.dumps(result), flush=True)
    print(f"{'variant':<48} {'val photo':>9} {'val product':>11} {'best/run':>8} {'epoch s':>7} {'fill s':>7}", file=sys.stderr)
    for r in results:
        print(
            f"{r['variant']:<48} {r['val_photo']:>9.4f} {r['val_product']:>11.4f} {r['best_epoch']:>4}/{r['epochs_run']:<3} "
            f"{r['epoch_seconds']:>7} {r['cache_fill_seconds']:>7}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
