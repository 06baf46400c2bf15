"""`fbm`: the command line of the pipeline (prepare → train → evaluate → index → serve).

Every subcommand takes the same settings options: `--artifacts`, any number of `--set
section.field=value` overrides of `listings.config.Config`, and `--data` where it reads a dataset
(the others refuse it: `DATA_UNREAD`).
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import json
import os
import shlex
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from listings.config import DEFAULT_K, REPO_ROOT, Config, IndexConfig
from scripts.terminal import TEXT_UNUSED, format_prediction, format_results, say, terminal_width


TRAINING_DATA_HELP = "dataset directory in the marketplace format (env FBM_DATA)"
# what the commands that read no dataset read instead: an explicit --data is refused there, not ignored
PREPARED = "the listings `fbm prepare` last wrote to the artifacts"
PREPARE_ANOTHER = "to use another dataset, run `fbm prepare --data DIR` first (or `fbm train all --data DIR`, which prepares and trains every stage)"
SERVE_ANOTHER = "to search another dataset, run `fbm train all --data DIR` and `fbm index` first"
DATA_UNREAD = {  # what it reads instead; what to do
    "train": (f"trains on {PREPARED}", PREPARE_ANOTHER),
    "index": (f"indexes {PREPARED}", PREPARE_ANOTHER),
    "similar": ("searches the index `fbm index` built", SERVE_ANOTHER),
    "serve": ("serves the models and the index built before", SERVE_ANOTHER),
    "weights": ("reads no dataset", "leave --data out"),
}


def settings_parser(data_help: str = TRAINING_DATA_HELP) -> argparse.ArgumentParser:
    """`--data`, `--artifacts` and `--set`; `data_help=argparse.SUPPRESS` for a command that reads
    no dataset (its `--data` is still parsed, to be refused in words)."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("settings")
    group.add_argument("--data", metavar="DIR", help=data_help)
    group.add_argument("--artifacts", metavar="DIR", help="artifacts directory (env FBM_ARTIFACTS)")
    group.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override any setting, e.g. --set image.epochs=5 (repeatable)",
    )
    return parser


def refuse_unread_data(args: argparse.Namespace) -> None:
    """A command that reads no dataset refuses `--data`: `fbm train text --data other/` trained
    on the listings prepared before, and said nothing of it."""
    command = getattr(args, "command", None)
    if args.data is None or command not in DATA_UNREAD or getattr(args, "stage", None) == "all":
        return
    name = f"{command} {args.stage}" if command == "train" else command
    reads, advice = DATA_UNREAD[command]
    raise ValueError(f"{name} does not read --data: it {reads}; {advice}")


def build_config(args: argparse.Namespace) -> Config:
    refuse_unread_data(args)
    for option, value in (("--data", args.data), ("--artifacts", args.artifacts)):
        if value is not None and not value.strip():  # an unset shell variable: not the default directory in its place
            hint = getattr(args, "empty_data_hint", None) if option == "--data" else None
            raise ValueError(f"{option} is empty: {hint or f'give a directory, or leave {option} out for the default'}")
    config = Config()
    if args.data:
        config.data.data_dir = args.data
    if args.artifacts:
        config.data.artifacts_dir = args.artifacts
    for assignment in args.overrides:
        config.override(assignment)
    config.validate()
    config.apply_nltk_data()
    return config


@contextmanager
def writing_artifacts(config: Config):
    """Hold the artifacts' training lock while a command writes them: two `fbm prepare` or `fbm
    train` at once would write the same files, so the second is refused. A command refused before
    it wrote anything leaves no artifacts folder behind."""
    from listings.artifacts import hold_lock

    root, lock = config.paths.root, config.paths.training_lock
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    busy = ValueError(f"another `fbm prepare` or `fbm train` is writing {root}: wait for it to finish, or give this one other --artifacts")
    descriptor = hold_lock(lock, True, busy)
    try:
        yield
    finally:
        os.close(descriptor)
        if created and list(root.iterdir()) == [lock]:
            lock.unlink()
            root.rmdir()


def cmd_prepare(args: argparse.Namespace) -> int:
    from listings.prepare import format_summary, prepare

    config = build_config(args)
    with writing_artifacts(config):
        summary = prepare(config)
    say(format_summary(summary))
    return 0


TRAINING = ("prepare", "image", "text", "combined")  # `fbm train all`, in order
STAGES = {  # stage → the function that runs it on a Config (imported when run: each pulls in its own stack)
    "prepare": "listings.prepare:prepare",
    "image": "image_model.train:train_image",
    "text": "text_model.train:train_text",
    "combined": "combined_model.train:train_combined",
    "index": "retrieval.build:build_index",
}


def trained_config(args: argparse.Namespace, index: bool = True) -> Config:
    """`build_config` for a command that uses the trained models, naming any stage trained from
    inputs that have changed since, and with `index` an index built from them (`scripts.freshness.stale_stages`)."""
    from scripts.freshness import stale_stages

    config = build_config(args)
    for warning in stale_stages(config, index):
        say(warning, sys.stderr)
    if config.image.device == "cuda":
        say(f"note: image.device=cuda is where the image branch trains; fbm {args.command} runs the trained models on the CPU, as they are served", sys.stderr)
    return config


def run_stage(stage: str, config: Config) -> dict:
    """Run one pipeline stage; its summary gains `stage_wall_time_s`."""
    module, function = STAGES[stage].split(":")
    start = time.perf_counter()
    if stage in TRAINING:  # a heading between the stages of `fbm train all`
        print(f"== {stage} ==", file=sys.stderr)
    summary = getattr(importlib.import_module(module), function)(config)
    summary["stage_wall_time_s"] = round(time.perf_counter() - start, 1)
    return summary


def cmd_train(args: argparse.Namespace) -> int:
    config = build_config(args)
    stages = TRAINING if args.stage == "all" else [args.stage]
    if "text" in stages:
        from text_model.preprocess import check_nltk_data

        check_nltk_data()  # before `train all` spends minutes on the image branch
    with writing_artifacts(config):
        summaries = {stage: train_stage(stage, config, args.force) for stage in stages}
    say(format_training(summaries))
    return 0


def format_training(summaries: dict[str, dict]) -> str:
    """`fbm train`'s last lines: each stage's time and headline figure (each stage printed all its
    figures as it finished; its folder's summary files hold them)."""
    lines = ["trained:"]
    for stage, summary in summaries.items():
        if "skipped" in summary:
            lines.append(f"  {stage:<9} up to date, not retrained")
            continue
        lines.append(f"  {stage:<9} {summary['stage_wall_time_s']:>6.1f} s  {_headline(stage, summary)}")
    return "\n".join(lines)


def _headline(stage: str, summary: dict) -> str:
    """The stage module's own `headline` of its summary."""
    return importlib.import_module(STAGES[stage].split(":")[0]).headline(summary)


def train_stage(stage: str, config: Config, force: bool) -> dict:
    """Run a training stage unless it is up to date (`scripts.freshness`); `prepare` always runs
    (seconds), and gives the same files for the same dataset, so the stages after it can be skipped."""
    if stage == "prepare":
        from listings.prepare import format_summary

        summary = run_stage(stage, config)
        say(format_summary(summary), sys.stderr)  # its counts and warnings, as `fbm prepare` prints them
        return summary
    from scripts import freshness

    digests = freshness.digests(stage, config)  # before the stage: code edited meanwhile is not trained
    if digests and not force and freshness.up_to_date(stage, config, digests[0]):
        where = freshness.output_dir(stage, config)
        say(f"== {stage} == up to date: {where} was trained from these inputs, settings and code (--force trains it again)", sys.stderr)
        return {"skipped": "up to date", "outputs": str(where)}
    recorded = freshness.forget(stage, config)  # an interrupted stage leaves no record
    try:
        summary = run_stage(stage, config)  # with an input missing, the stage says which and how to make it
    except Exception:
        freshness.restore_if_untouched(stage, config, recorded)  # refused before it changed its outputs
        raise
    if digests:
        freshness.record(stage, config, *digests)
    return summary


def cmd_evaluate(args: argparse.Namespace) -> int:
    from combined_model.evaluate import METRICS_FILE, PREDICTIONS_FILE, evaluate, format_table, report_dir, write_outputs

    config = trained_config(args, index=False)  # refuses an empty --data: not the test split scored in its place
    if args.json is not None:
        writable_file(args.json, "--json", config, args.data)  # before the evaluation, not after it
    result, predictions = evaluate(config, args.data)  # an explicit --data is the directory to score
    report = write_outputs(config, result, predictions, report_dir(config, args.data), args.json)
    say(format_table(result))
    written = [report, report.parent / METRICS_FILE, report.parent / PREDICTIONS_FILE, *([args.json] if args.json else [])]
    say("written: " + ", ".join(map(str, written)))
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from image_model.train import download_weights

    download_weights(build_config(args))
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from retrieval.build import EVALUATION_FILE, evaluate_retrieval, format_build, format_evaluation
    from retrieval.figures import EXAMPLES_FIGURE, PRECISION_FIGURE
    from retrieval.index import check_search
    from scripts import freshness

    config = trained_config(args, index=False)  # the index is rebuilt
    if args.k is not None and not args.evaluate:
        raise ValueError("-k sets the neighbours per query of --evaluate: give both, or neither")
    args.k = config.index.k_or_default(args.k)
    if args.evaluate:
        check_search(args.k, None, None, config.index.max_k, ("-k", "", ""))  # before the index is rebuilt
    inputs = freshness.index_digest(config)  # before the build: a branch retrained meanwhile is not indexed
    say(format_build(run_stage("index", config)))
    freshness.record_index(config, inputs)
    if args.evaluate:
        say(format_evaluation(evaluate_retrieval(config, k=args.k)))
        say("written: " + ", ".join(str(config.paths.reports / name) for name in (EVALUATION_FILE, PRECISION_FIGURE, EXAMPLES_FIGURE)))
    return 0


SIMILAR_NEEDS = "give a listing text (--text), one or more photos (--image) or both, or an indexed listing (--like)"


def cmd_similar(args: argparse.Namespace) -> int:
    if args.like is None and args.text is None and not args.image:  # before the index and models are imported and checked (seconds)
        raise ValueError(SIMILAR_NEEDS)
    from listings.categories import CategoryEncoder, canonical_category
    from listings.data import checked_price, clean_listing_text, without_controls
    from retrieval.index import ListingIndex, check_search
    from retrieval.query import search_like_listing, search_similar

    config = trained_config(args)
    args.k = config.index.k_or_default(args.k)
    args.text = text_argument(args.text)
    has_text = bool(clean_listing_text(args.text))  # a text of only Gumtree boilerplate is no text
    if args.like is not None:
        args.like = args.like.strip()  # an id pasted with a space beside it
    if args.like is not None and not args.like:
        raise ValueError("--like needs a product id (under each row of a results table, after its category)")
    if args.like and (args.image or has_text):
        raise ValueError("--like searches by an indexed listing's own photos and text: give it without --text or --image")
    if not args.like and not args.image and not has_text:
        raise ValueError(emptied_text(args.text) + SIMILAR_NEEDS)
    if args.category is not None and not args.category.strip():
        raise ValueError("--category is empty: give a root category or a category path, or leave the option out")
    prices = {}
    for option, raw in (("--min-price", args.min_price), ("--max-price", args.max_price)):
        try:
            prices[option] = checked_price(raw)  # as the API reads a price
        except ValueError as exc:
            raise ValueError(f"{option}: {exc}") from None
    min_price, max_price = prices["--min-price"], prices["--max-price"]
    check_search(args.k, min_price, max_price, config.index.max_k, ("-k", "--min-price", "--max-price"))
    check_photo_paths(args.image)
    category = canonical_category(args.category, CategoryEncoder.load(config.paths.categories).classes)
    filters = {"k": args.k, "category": category, "min_price": min_price, "max_price": max_price}
    with ListingIndex.open(config.paths.index, config.index) as index:
        index.check_category(category)  # before any model loads
        if args.like:
            try:
                listing, result = search_like_listing(index, args.like, **filters)
            except KeyError as exc:
                raise ValueError(f"{exc.args[0]}: --like takes a product id from the index (under each row of a results table, after its category)") from exc
            say(without_controls(f"listings like: {listing.title} ({listing.category}, {listing.product_id})"))
        else:
            from combined_model.inference import Predictor  # the models: not needed for --like
            from retrieval.terms import TermWeights

            predictor = Predictor.load(config)  # first: it refuses a data.image_size its model was not trained at
            photos = [photo_for_query(Path(path), config) for path in args.image]
            prediction = predictor.predict(photos, args.text, "combined")
            result = search_similar(index, prediction, TermWeights.load(config, predictor.tfidf), **filters)
            doubt = f"; uncertain, the runner-up is {prediction.runner_up()}" if prediction.uncertain else ""
            unused = f"; {TEXT_UNUSED}" if has_text and "text" not in prediction.modalities else ""
            query = f"query: predicted {prediction.pred} ({prediction.probabilities[0]:.2f}) from {' + '.join(prediction.modalities)}{unused}{doubt}"
            say(query)
    print(format_results(result, terminal_width()))
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    if args.data is None and args.text is None and not args.image:  # before the models are imported and checked (seconds)
        raise ValueError("give a listing text (--text), one or more photos (--image) or both; or a directory of listings (--data DIR)")
    from api.schemas import PredictionOut
    from combined_model.inference import Predictor
    from listings.data import clean_listing_text

    config = trained_config(args, index=False)
    if args.data is not None:
        return classify_a_directory(args, config)
    if args.out is not None:
        raise ValueError("--out names the CSV of --data DIR: give both, or neither")
    if args.json and args.top is not None:
        raise ValueError("--top shapes the table: --json prints every category, as the API answers")
    args.top = 5 if args.top is None else args.top
    args.text = text_argument(args.text)
    has_text = bool(clean_listing_text(args.text))  # a text of only Gumtree boilerplate is no text
    if args.top < 0:
        raise ValueError(f"--top must be 0 (every category) or more, got {args.top}")
    if args.mode == "text" and args.image or args.mode == "image" and has_text:
        unused = "--image" if args.mode == "text" else "--text"
        raise ValueError(f"--mode {args.mode} reads only --{args.mode}: leave out {unused}, or use --mode combined")
    if not args.image and not has_text:
        wanted = {"image": "give a photo (--image)", "text": "give a listing text (--text)"}.get(args.mode, "give a listing text (--text), one or more photos (--image) or both")
        raise ValueError((emptied_text(args.text) if args.mode != "image" else "") + wanted)
    check_photo_paths(args.image)
    predictor = Predictor.load(config)  # before cleaning: it refuses a data.image_size its model was not trained at
    photos = [photo_for_query(Path(path), config) for path in args.image]
    prediction = predictor.predict(photos, args.text, args.mode)
    if args.json:
        print(PredictionOut.of(prediction).model_dump_json(indent=2))
    else:
        say(format_prediction(prediction, args.top or len(prediction.classes), text_given=has_text))
    return 0


def classify_a_directory(args: argparse.Namespace, config: Config) -> int:
    from combined_model.classify import NEEDS, classified_file, classify_directory, format_summary
    from combined_model.evaluate import report_dir
    from listings.data import write_table

    if args.text is not None or args.image or args.json or args.top is not None:
        raise ValueError("--data classifies every listing of a directory into a CSV: give it without --text, --image, --json or --top")
    out = args.out if args.out is not None else str(report_dir(config, args.data) / classified_file(args.mode))
    writable_file(out, "--out", config, args.data)  # before the models run, not after (as given: Path() drops a trailing '/')
    out = Path(out)
    frame, summary = classify_directory(config, args.data, args.mode)
    if not summary["answered"]:
        raise ValueError(f"{args.data}: none of its {summary['n_listings']:,} listings could be answered: each has {NEEDS[args.mode]} (--mode {args.mode})")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_table(frame, out, ["title", "category"])
    say(format_summary(summary))
    say(f"written: {out}")
    return 0


def photo_for_query(path: Path, config: Config):
    """`--image PATH` cleaned as the API cleans an upload; a ValueError naming the file otherwise."""
    from listings.images import clean_photo

    with named_image_errors(path):
        return clean_photo(path, config.data.image_size, config.data.max_image_pixels)


def text_argument(text: str | None) -> str | None:
    """`--text` as given, or standard input's text for `-`; an empty input is a ValueError that says
    so (the refusal that follows would say no --text was given)."""
    if text != "-":
        return text
    not_text = ValueError("--text -: standard input is not UTF-8 text (a file of another kind?): pipe a listing's text in")
    try:
        read = sys.stdin.read()
    except UnicodeDecodeError:  # a strict reader (a UTF-8 locale other than C.UTF-8)
        raise not_text from None
    if not read.strip():
        raise ValueError("--text -: standard input was empty: pipe a listing's text in, or give it after --text")
    if "\0" in read or any("\udc80" <= char <= "\udcff" for char in read):  # bytes that are not UTF-8, as an escaping reader keeps them
        raise not_text
    return read


def emptied_text(text: str | None) -> str:
    """The start of a refusal for a `--text` given but cleaned away ("" when none was given)."""
    from listings.data import CLEANED_AWAY

    return f"--text holds {CLEANED_AWAY}: " if text else ""


def check_photo_paths(paths: list[str]) -> None:
    """Every `--image` a file, before any model loads (a second or more)."""
    from listings.images import require_file

    for path in paths:
        if not path.strip():  # Path("") is the current folder: "--image .: not a file"
            raise ValueError("--image is empty: give a photo's path")
        with named_image_errors(Path(path)):
            require_file(Path(path))


@contextmanager
def named_image_errors(path: Path):
    """An ImageError as a ValueError naming `--image` and its path (without control characters)."""
    from listings.data import without_controls
    from listings.images import ImageError

    try:
        yield
    except ImageError as exc:
        raise ValueError(without_controls(f"--image {path}: {str(exc).removesuffix(f': {path}')}")) from None


def cmd_bench(args: argparse.Namespace) -> int:
    from scripts.bench import PARTS, BenchPlan, markdown, run_bench

    config = build_config(args)
    if args.repeats < 1:
        raise ValueError(f"--repeats must be 1 or more, got {args.repeats}")
    plan = BenchPlan.make(args.quick, args.repeats)
    parts = tuple(part.strip() for part in args.parts.split(",")) if args.parts else tuple(p for p in PARTS if not (args.reuse and p == "pipeline"))
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown bench part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    if args.reuse and "pipeline" in parts:
        raise ValueError("the pipeline part trains from a cold cache: drop --reuse or leave out pipeline")
    if not args.reuse and "pipeline" not in parts:  # a fresh run starts by clearing <artifacts>/bench: nothing to measure
        raise ValueError("without the pipeline part there is nothing trained afresh to measure: add --reuse to measure the artifacts in --artifacts")
    command = "fbm " + shlex.join(args.argv)
    reports = config.paths.reports  # before run_bench moves a fresh run's artifacts under <artifacts>/bench
    out = Path(args.out) if args.out else (reports / "BENCHMARKS.quick.md" if plan.quick else REPO_ROOT / "BENCHMARKS.md")
    json_out = Path(args.json) if args.json else out.with_suffix(".json")
    writable_file(args.out or str(out), "--out", config)  # before the run, not after it: its figures would be lost
    writable_file(args.json or str(json_out), "--json", config)  # as given: Path() drops a trailing '/'
    result = run_bench(config, plan, parts, fresh=not args.reuse, command=command)
    for path, text in ((out, markdown(result)), (json_out, json.dumps(result, indent=2))):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(markdown(result))
    print(f"written: {out} and {json_out}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from api.server import serve

    config = trained_config(args)
    if args.host:
        config.serve.host = args.host
    if args.port is not None:
        config.serve.port = args.port
    serve(config)
    return 0


def port_number(text: str) -> int:
    """`--port`, checked as the setting serve.port is."""
    config = Config()
    try:
        config.override(f"serve.port={text}")
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, got {text!r}") from None
    return config.serve.port


def writable_file(path: str, option: str, config: Config, data: str | None = None) -> None:
    """A ValueError naming `option` unless a file can be written at `path`: it is opened as the
    write will open it, so a read-only folder or a name too long shows now, not after the work. A
    file the commands read is refused too (`refuse_inputs`)."""
    if not path.strip():
        raise ValueError(f"{option} is empty: give a file name")
    if path.strip() == "-":  # a file named '-' was written, where standard output was meant
        raise ValueError(f"{option} takes a file name, and '-' (standard output) is not one: the command prints its own summary there")
    refuse_inputs(path, option, config, data)
    target = Path(path)
    missing, existed = [], True
    try:
        if target.is_dir() or path.endswith(("/", os.sep)):
            raise ValueError(f"{option} {path} is a folder: give a file name")
        if target.parent.exists() and not target.parent.is_dir():
            raise ValueError(f"{option} {path}: {target.parent} is a file, not a folder")
        missing = [folder for folder in (target.parent, *target.parent.parents) if not folder.exists()]
        existed = target.exists()
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a"):
            pass
    except OSError as exc:
        raise ValueError(f"{option} {path[:200]} cannot be written: {exc.strerror}") from None
    finally:  # the probe leaves nothing behind: the write creates what it needs
        if not existed:
            target.unlink(missing_ok=True)
        for folder in missing:  # deepest first
            with suppress(OSError):
                folder.rmdir()


def refuse_inputs(path: str, option: str, config: Config, data: str | None) -> None:
    """A ValueError when `path` is among what the commands read, which an output would replace: the
    CSV files and photos of the dataset `data` and of the training dataset, or the trained
    artifacts (the reports folder excepted); symbolic links followed on both sides."""
    from listings.data import IMAGES_FILE, PRODUCTS_FILE, dataset_photos

    target = Path(path).resolve()
    for dataset in {Path(folder).resolve() for folder in (data, config.data.data_dir) if folder}:
        tables = {(dataset / name).resolve() for name in (PRODUCTS_FILE, IMAGES_FILE)}
        if target in tables or target.is_relative_to(dataset_photos(dataset).resolve()):
            raise ValueError(f"{option} {path} is a file of the dataset {dataset}, which this command reads: give a file elsewhere")
    artifacts, reports = config.paths.root.resolve(), config.paths.reports.resolve()
    if target.is_relative_to(artifacts) and not target.is_relative_to(reports):
        raise ValueError(f"{option} {path} is among the trained artifacts in {artifacts}: give a file elsewhere (or under {reports})")


def build_parser() -> argparse.ArgumentParser:
    settings, unread = settings_parser(), settings_parser(argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="fbm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prepare = commands.add_parser("prepare", parents=[settings], help="load, clean, encode and split the listings")
    prepare.set_defaults(handler=cmd_prepare)

    train = commands.add_parser(
        "train",
        parents=[settings_parser(f"with `all`: {TRAINING_DATA_HELP}, prepared first (the other stages train on {PREPARED})")],
        help="train a stage, or all of them in order",
    )
    train.add_argument(
        "stage", choices=["image", "text", "combined", "all"], help="image, text, combined (needs both branches), or all: prepare → image → text → combined"
    )
    train.add_argument(
        "--force", action="store_true", help="train every stage named, even one whose inputs, settings and code are those it was trained on"
    )
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser(
        "evaluate",
        parents=[settings_parser("a marketplace-format directory whose every listing is scored; without it, the test split (FBM_DATA, the training dataset, does not stand in for it)")],
        help="score every model on the test split, or on every listing of --data DIR",
    )
    evaluate.add_argument("--json", metavar="FILE", help="also write the metrics JSON here")
    evaluate.set_defaults(handler=cmd_evaluate, empty_data_hint="give the dataset directory to score, or leave --data out for the test split")

    weights = commands.add_parser(
        "weights", parents=[unread], help="download ResNet-50 ImageNet weights into the torch cache (needs a network); `fbm train` then uses ResNet-50 (image.backbone=auto), which trains longer"
    )
    weights.set_defaults(handler=cmd_weights)

    index = commands.add_parser("index", parents=[unread], help="build the FAISS listing index from the trained branches")
    index.add_argument("--evaluate", action="store_true", help="also score retrieval: test listings against train+val")
    index.add_argument("-k", type=int, help=f"neighbours per query in --evaluate, 1 to index.max_k ({IndexConfig.max_k} unless --set; default {DEFAULT_K}, or index.max_k when lower)")
    index.set_defaults(handler=cmd_index)

    classify = commands.add_parser(
        "classify",
        parents=[settings_parser("a marketplace-format directory whose every listing is classified into a CSV (FBM_DATA, the training dataset, does not stand in for it)")],
        help="the category of a listing from its text and/or photos, or of every listing of --data DIR into a CSV (no server, no index)"
    )
    classify.add_argument("--text", help="a listing title and/or description ('-': read it from standard input)")
    classify.add_argument("--image", action="append", default=[], metavar="PATH", help="a photo (repeatable)")
    classify.add_argument("--mode", choices=["combined", "image", "text"], default="combined", help="the model to ask, as the API's /combined, /image and /text (default combined)")
    classify.add_argument("--top", type=int, help="categories the table lists (default 5; 0 for all); not with --json")
    classify.add_argument(
        "--json", action="store_true", help="print the API's answer, every category (pred, classes, probabilities, modalities, low_confidence); not with --top"
    )
    classify.add_argument("--out", metavar="FILE", help="with --data DIR: the CSV of answers (default: classified.csv, or classified-<mode>.csv, in the reports folder of DIR that evaluate uses; the path is printed)")
    classify.set_defaults(handler=cmd_classify, empty_data_hint="give the directory of listings to classify, or leave --data out to classify one listing")

    similar = commands.add_parser("similar", parents=[unread], help="listings similar to a text and/or photos, or to an indexed listing")
    similar.add_argument("--text", help="a listing title and/or description ('-': read it from standard input)")
    similar.add_argument("--image", action="append", default=[], metavar="PATH", help="a photo (repeatable)")
    similar.add_argument("--like", metavar="PRODUCT_ID", help="instead of a text or photos: listings like this indexed listing (no model runs)")
    similar.add_argument("-k", type=int, help=f"how many listings, 1 to index.max_k ({IndexConfig.max_k} unless --set; default {DEFAULT_K}, or index.max_k when lower)")
    similar.add_argument("--category", help="only listings in this root category (any case) or under a category path of whole levels, e.g. 'Home & Garden / Garden & Patio'")
    similar.add_argument("--min-price", help="only listings at or above this price (pounds: 45, 45.50 or £1,234.00)")
    similar.add_argument("--max-price", help="only listings at or below this price (pounds)")
    similar.set_defaults(handler=cmd_similar)

    bench = commands.add_parser("bench", parents=[settings], help="measure pipeline, accuracy, serving and retrieval; write BENCHMARKS.md")
    bench.add_argument("--quick", action="store_true", help="a smoke run: dataset subset, tiny settings, short loads")
    bench.add_argument("--repeats", type=int, default=3, help="serving runs per setting; medians are reported (default 3; one with --quick)")
    bench.add_argument("--parts", help="comma-separated, of pipeline (cold-cache training), accuracy, retrieval, serving, scale (default: all five; all but pipeline with --reuse)")
    bench.add_argument("--reuse", action="store_true", help="measure the trained artifacts in --artifacts instead of training afresh (leaves out the pipeline part)")
    bench.add_argument("--out", metavar="FILE", help="Markdown report (default BENCHMARKS.md; BENCHMARKS.quick.md in the reports with --quick)")
    bench.add_argument("--json", metavar="FILE", help="JSON of the same figures (default: next to the Markdown)")
    bench.set_defaults(handler=cmd_bench)

    serve = commands.add_parser("serve", parents=[unread], help="serve the HTTP API and search page (port 8008)")
    serve.add_argument("--host", help=f"interface to bind (default {Config().serve.host})")
    serve.add_argument("--port", type=port_number, help=f"port, 1-65535 (default {Config().serve.port})")
    serve.set_defaults(handler=cmd_serve)
    parser.set_defaults(subcommands=commands.choices)
    return parser


def refuse_unknown_arguments(args: argparse.Namespace, unknown: list[str]) -> None:
    """The command's own usage and error for arguments it does not take, with the option meant when
    one is close (`fbm classify --txt` → `--text`): argparse's top-level parser answered `fbm
    [-h] COMMAND ...`, naming neither the command nor its options."""
    command = args.subcommands[args.command]
    options = [option for action in command._actions for option in action.option_strings]
    typed = next((argument.split("=", 1)[0] for argument in unknown if argument.startswith("-")), "")
    close = difflib.get_close_matches(typed, options, n=1, cutoff=0.6) if typed else []
    command.error(f"unrecognized arguments: {' '.join(unknown)}" + (f" (did you mean {close[0]}?)" if close else ""))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv:  # the commands there are, rather than argparse's "COMMAND is required"
        parser.print_help(sys.stderr)
        return 2
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        refuse_unknown_arguments(args, unknown)
    args.argv = argv
    try:
        code = args.handler(args)
        sys.stdout.flush()  # a reader that stopped early (`| head -1`) shows here, not as Python exits
        return code
    except BrokenPipeError:
        silence_stdout()
        return 141  # as a program ended by SIGPIPE
    except (OSError, ValueError, LookupError) as exc:  # a missing or unreadable file, a bad setting or dataset, no NLTK data
        if isinstance(exc, (KeyError, IndexError)) and not isinstance(exc, ValueError):  # a bug, not a bad input: keep its traceback
            raise
        say(f"fbm {args.command}: error: {exc}{_dataset_hint(args, exc)}", sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fbm {args.command}: interrupted", file=sys.stderr)
        return 130


def _dataset_hint(args: argparse.Namespace, exc: Exception) -> str:
    """How to name the dataset, when a command read the default one (`../shared/fbm`, else
    `<repo>/data`) and found no dataset there."""
    from listings.data import MissingFileError

    from listings import config as settings

    if isinstance(exc, MissingFileError) and not getattr(args, "data", None) and not os.environ.get("FBM_DATA"):
        return f" (no dataset given: name its directory with --data DIR or FBM_DATA=DIR; the default is {settings.SHARED / 'fbm'}, else {settings.REPO_ROOT / 'data'})"
    return ""


def silence_stdout() -> None:
    """Standard output to /dev/null: its reader is gone, and Python's flush at exit would fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # a stream with no file descriptor (io.UnsupportedOperation is both)
        pass


if __name__ == "__main__":
    sys.exit(main())
