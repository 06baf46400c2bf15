"""`fbm`: the command line of the pipeline (prepare → train → evaluate → index → serve).

Every subcommand takes the same settings options: `--data`, `--artifacts` and any number of
`--set section.field=value` overrides of `listings.config.Config`.
"""
from __future__ import annotations

import argparse
import sys

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


def build_parser() -> argparse.ArgumentParser:
    settings = _settings_parser()
    parser = argparse.ArgumentParser(prog="fbm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prepare = commands.add_parser("prepare", parents=[settings], help="load, clean, encode and split the listings")
    prepare.set_defaults(handler=cmd_prepare)
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
