"""`fbm`: the command line of the pipeline (prepare → train → evaluate → index → serve).

Every subcommand takes the same settings options: `--data`, `--artifacts` and any number of
`--set section.field=value` overrides of `listings.config.Config`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from listings.config import Config


def _settings_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("settings")
    group.add_argument("--data", help="dataset directory in the marketplace format (env FBM_DATA)")
    group.add_argument("--artifacts", help="artifacts directory (env FBM_ARTIFACTS)")
    group.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override any setting, e.g. --set image.epochs=5 (repeatable)",
    )
    return parser


def build_config(args: argparse.Namespace) -> Config:
    config = Config()
    if args.data:
        config.data.data_dir = args.data
    if args.artifacts:
        config.data.artifacts_dir = args.artifacts
    for assignment in args.overrides:
        config.override(assignment)
    config.apply_nltk_data()
    return config


def cmd_prepare(args: argparse.Namespace) -> int:
    from listings.prepare import format_summary, prepare

    print(format_summary(prepare(build_config(args))))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    config = build_config(args)
    stages = ["prepare", "image", "text", "combined"] if args.stage == "all" else [args.stage]
    summaries = {stage: _train_stage(stage, config) for stage in stages}
    print(json.dumps(summaries, indent=2, default=str))
    return 0


def _train_stage(stage: str, config: Config) -> dict:
    start = time.perf_counter()
    print(f"== {stage} ==", file=sys.stderr)
    if stage == "prepare":
        from listings.prepare import prepare

        summary = prepare(config)
        summary.pop("skipped_image_ids", None)
    elif stage == "image":
        from image_model.train import train_image

        summary = train_image(config)
    elif stage == "text":
        from text_model.train import train_text

        summary = train_text(config)
    else:
        from combined_model.train import train_combined

        summary = train_combined(config)
    summary["stage_wall_time_s"] = round(time.perf_counter() - start, 1)
    return summary


def cmd_evaluate(args: argparse.Namespace) -> int:
    from combined_model.evaluate import evaluate, format_table, write_outputs

    config = build_config(args)
    result = evaluate(config, args.data)  # an explicit --data is the directory to score
    report = write_outputs(config, result, args.json)
    print(format_table(result))
    print(f"report: {report}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    settings = _settings_parser()
    parser = argparse.ArgumentParser(prog="fbm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prepare = commands.add_parser("prepare", parents=[settings], help="load, clean, encode and split the listings")
    prepare.set_defaults(handler=cmd_prepare)

    train = commands.add_parser("train", parents=[settings], help="train a stage, or all of them in order")
    train.add_argument("stage", choices=["image", "text", "combined", "all"])
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser(
        "evaluate", parents=[settings], help="score every model on the test split, or on every listing of --data DIR"
    )
    evaluate.add_argument("--json", metavar="FILE", help="also write the metrics JSON here")
    evaluate.set_defaults(handler=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"fbm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
