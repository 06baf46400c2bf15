"""Whether a training stage is up to date, so that `fbm train` run again skips it.

A stage's fingerprint is a digest of what its outputs depend on: what it reads (some fields of the
prepared listings and the category names; for the fusion, also the branches' outputs), the
settings it uses (not those of speed alone), the code of the packages it runs, the pinned
requirements, and for the image branch the backbone weights at hand and whether a GPU is. It is
written beside the outputs once the stage has finished (`fingerprint.json`, with the SHA-256 of each
output file), and the stage is up to date while the fingerprint is the same and every output is
still there, its content as written. The fingerprint is taken before the stage starts (code edited
while it trains is not counted as trained) and the record is removed first, so a stage interrupted
half-way is never up to date. Any change retrains; a stage retrained gives its successors new
inputs, so they are retrained too, and until they are, the commands that use them say so
(`stale_stages`). Not in the fingerprint: the NLTK data the text branch tokenizes with (`--force`
after replacing it).

The index is no training stage (`fbm index` always rebuilds it, and the server changes it live),
but it holds the branches' embeddings and the listings' metadata: `fbm index` records the digest
of those inputs beside it, and the commands that search it say when they have changed since.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

from listings.artifacts import sha256_file
from listings.categories import CategoryEncoder
from listings.config import REPO_ROOT, Config
from listings.data import read_jsonl

FINGERPRINT_FILE = "fingerprint.json"
# how `inputs_digest` reads a training stage's inputs, recorded with it: a record taken another way
# (the branches began to read fields of the listings at fef4d42, the fusion at 2bdc5c8) says
# nothing of whether the inputs changed. The index's digest has always been of whole files.
INPUTS_SCHEME = 2
REQUIREMENTS = REPO_ROOT / "requirements.txt"
# the code each stage runs, by package; `listings` (data, settings, metrics) is every stage's
STAGE_PACKAGES = {
    "image": ("listings", "image_model"),
    "text": ("listings", "text_model"),
    "combined": ("listings", "image_model", "text_model", "combined_model"),
}
STAGE_SETTINGS = {"image": ("data", "image"), "text": ("data", "text"), "combined": ("data", "fusion")}
# data settings that name places or set the speed, not what is computed (the listings read are hashed themselves)
PLACES = ("data_dir", "artifacts_dir", "nltk_data", "workers")
# the settings, by section, that each stage's outputs do not depend on: besides PLACES, the photos'
# for the text branch, which never reads them, and the trunk's batch size (its outputs are the same
# at any, and its feature cache is shared across them)
NOT_FINGERPRINTED = {
    "image": {"data": PLACES, "image": ("trunk_batch_size",)},
    "text": {"data": PLACES + ("image_size", "max_image_pixels")},
    "combined": {"data": PLACES},
}
# the prepared listings' fields each stage reads: a price or a location changed leaves every stage
# up to date, and the index (which shows every field) stale
LISTING_FIELDS = {
    "image": ("product_id", "label", "split", "image_ids", "image_digests"),
    "text": ("product_id", "label", "split", "title", "description"),
    "combined": ("product_id", "label", "split", "image_ids"),
}


def output_dir(stage: str, config: Config) -> Path:
    return {"image": config.paths.image_model, "text": config.paths.text_model, "combined": config.paths.combined_model}[stage]


def input_files(stage: str, config: Config) -> list[Path]:
    """The files a stage reads: the prepared listings for a branch; those and both branches' outputs
    for the fusion (it trains on the listings' labels and splits) and for the index ("index")."""
    paths = config.paths
    branch_outputs = [path for stage_dir in (paths.image_model, paths.text_model) for path in output_files(stage_dir)]
    if stage == "index":
        return [paths.listings, *branch_outputs]
    if stage == "combined":
        return [paths.listings, paths.categories, *branch_outputs]
    return [paths.listings, paths.splits, paths.categories]


def output_files(stage_dir: Path) -> list[Path]:
    return sorted(path for path in stage_dir.rglob("*") if path.is_file() and path.name != FINGERPRINT_FILE)


def inputs_digest(stage: str, config: Config, file_digest: Callable[[Path], str] = sha256_file) -> str:
    """The digest of the files the stage reads (`file_digest` may remember files shared by stages)."""
    digest = hashlib.sha256()
    for path in input_files(stage, config):
        digest.update(path.name.encode() + b"\0" + read_digest(stage, path, config, file_digest).encode())
    return digest.hexdigest()


def read_digest(stage: str, path: Path, config: Config, file_digest: Callable[[Path], str]) -> str:
    """The digest of what a stage reads of one input file: a stage reads the fields `LISTING_FIELDS`
    names of the prepared listings, in their order, and the category names (not the sub-categories'
    counts); every other file, and one these readers refuse (the stage says what is wrong), counts whole."""
    try:
        if stage in LISTING_FIELDS and path == config.paths.listings:
            return _digest(read_jsonl(path).reindex(columns=list(LISTING_FIELDS[stage])).to_json(orient="values"))
        if stage in LISTING_FIELDS and path == config.paths.categories:
            return _digest(json.dumps(CategoryEncoder.load(path).classes))
    except (ValueError, KeyError, TypeError):
        pass
    return file_digest(path)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(stage: str, config: Config, inputs: str) -> str:
    """The digest of everything the stage's outputs depend on (the module docstring lists it), from
    the digest of its input files (`inputs_digest`)."""
    digest = hashlib.sha256(inputs.encode())
    settings = {name: dataclasses.asdict(getattr(config, name)) for name in STAGE_SETTINGS[stage]}
    for section, names in NOT_FINGERPRINTED[stage].items():
        for name in names:
            settings[section].pop(name)
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for package in STAGE_PACKAGES[stage]:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + sha256_file(path).encode())
    digest.update(sha256_file(REQUIREMENTS).encode())
    if stage == "image":
        digest.update(json.dumps(_image_environment(config)).encode())
    return digest.hexdigest()


def digests(stage: str, config: Config) -> tuple[str, str] | None:
    """(`fingerprint`, `inputs_digest`) of a stage, taken before it runs; None while an input is missing."""
    if not all(path.is_file() for path in input_files(stage, config)):
        return None
    inputs = inputs_digest(stage, config)
    return fingerprint(stage, config, inputs), inputs


def up_to_date(stage: str, config: Config, current: str) -> bool:
    """Whether the stage's recorded fingerprint is `current` and its outputs are all still as written."""
    recorded = _recorded(stage, config)
    return recorded.get("fingerprint") == current and up_to_date_outputs(output_dir(stage, config), recorded)


def up_to_date_outputs(stage_dir: Path, recorded: dict) -> bool:
    """Whether every output the record lists is still in `stage_dir` with the content it recorded."""
    outputs = recorded.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        return False
    return all((stage_dir / name).is_file() and sha256_file(stage_dir / name) == digest for name, digest in outputs.items())


def forget(stage: str, config: Config) -> dict:
    """Remove the stage's record before it runs: outputs it leaves half rewritten are never up to
    date. Returns the record removed, for `restore_if_untouched`."""
    recorded = _recorded(stage, config)
    record_path = output_dir(stage, config) / FINGERPRINT_FILE
    if record_path.is_dir() and not record_path.is_symlink():
        shutil.rmtree(record_path)
    else:
        record_path.unlink(missing_ok=True)
    return recorded


def restore_if_untouched(stage: str, config: Config, recorded: dict) -> None:
    """Put back the record `forget` removed when the stage failed (a setting refused, an error)
    before it changed any of its outputs: the model it had is still the one recorded."""
    if recorded.get("fingerprint") and up_to_date_outputs(output_dir(stage, config), recorded):
        (output_dir(stage, config) / FINGERPRINT_FILE).write_text(json.dumps(recorded, indent=1))


def record(stage: str, config: Config, current: str, inputs: str) -> None:
    """Write the fingerprint the stage's outputs were made from (taken before it ran), once it has finished."""
    stage_dir = output_dir(stage, config)
    outputs = {str(path.relative_to(stage_dir)): sha256_file(path) for path in output_files(stage_dir)}
    (stage_dir / FINGERPRINT_FILE).write_text(json.dumps({"fingerprint": current, "inputs": inputs, "inputs_scheme": INPUTS_SCHEME, "outputs": outputs}, indent=1))


def index_digest(config: Config, file_digest: Callable[[Path], str] = sha256_file) -> str | None:
    """The digest of the index's inputs, taken before `fbm index` builds it; None while one is missing."""
    return inputs_digest("index", config, file_digest) if all(path.is_file() for path in input_files("index", config)) else None


def record_index(config: Config, inputs: str | None) -> None:
    """Write the digest of the inputs the index was built from beside it (none known: no record)."""
    record_path = config.paths.index / FINGERPRINT_FILE
    if inputs is None:
        record_path.unlink(missing_ok=True)
    else:
        record_path.write_text(json.dumps({"inputs": inputs}, indent=1))


def stale_stages(config: Config, index: bool = True) -> list[str]:
    """Warnings for the trained stages whose inputs have changed since they were trained (the text
    branch retrained alone leaves the fusion fitted to the one before), and, with `index`, for an
    index built from other branches or listings; stages trained without a record (the tests', the
    benchmark's) are not judged. Each file is read once, though several stages read it."""
    file_digest = functools.cache(sha256_file)
    warnings = []
    for stage in STAGE_PACKAGES:
        recorded = _recorded(stage, config)
        if "inputs" in recorded and all(path.is_file() for path in input_files(stage, config)):
            if recorded["inputs"] != inputs_digest(stage, config, file_digest):
                what = "branches or prepared listings" if stage == "combined" else "prepared listings"
                why = f"trained from other {what}" if _same_scheme(recorded) else EARLIER_RECORD
                warnings.append(f"warning: {output_dir(stage, config)} {'is' if _same_scheme(recorded) else 'may be'} out of date ({why}): run `fbm train all`")
    recorded = _read_record(config.paths.index / FINGERPRINT_FILE)
    if index and "inputs" in recorded and recorded["inputs"] != index_digest(config, file_digest):
        warnings.append(
            f"warning: the index in {config.paths.index} is out of date (built from other models or listings): "
            "run `fbm index`, which keeps the listings added through the API"
        )
    return warnings


EARLIER_RECORD = "its record, from an earlier version of fbm, cannot tell"


def _same_scheme(recorded: dict) -> bool:
    return recorded.get("inputs_scheme") == INPUTS_SCHEME


def _recorded(stage: str, config: Config) -> dict:
    return _read_record(output_dir(stage, config) / FINGERPRINT_FILE)


def _read_record(path: Path) -> dict:
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def _image_environment(config: Config) -> dict:
    """What the image branch finds on this machine: `image.backbone=auto` picks ResNet-50 once its
    weights are in the torch cache, and `image.device=auto` a GPU once torch sees one."""
    import torch

    environment = {}
    if config.image.backbone == "auto":
        checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
        environment["torch_checkpoints"] = sorted((p.name, p.stat().st_size) for p in checkpoints.glob("*")) if checkpoints.is_dir() else []
    if config.image.device == "auto":
        environment["cuda"] = torch.cuda.is_available()
    return environment
