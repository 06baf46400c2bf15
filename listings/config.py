"""The one configuration object of the whole pipeline.

Every stage reads its settings from `Config`; defaults live here, the environment
(`FBM_DATA`, `FBM_ARTIFACTS`, `NLTK_DATA`, `FBM_API_KEY`) and the CLI (`--set section.field=value`)
override them. Artifact locations are derived from `artifacts_dir` by `Paths`: the shared files
and every stage's folder, inside which each stage names its own files (as module constants).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"
DEFAULT_NLTK_DATA = SHARED / "nltk_data"  # data.nltk_data when NLTK_DATA is not set and this folder exists


def available_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup v2 CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _default_data_dir() -> str:
    if os.environ.get("FBM_DATA"):
        return os.environ["FBM_DATA"]
    shared = SHARED / "fbm"
    return str(shared if shared.exists() else REPO_ROOT / "data")


def _default_nltk_data() -> str:
    if os.environ.get("NLTK_DATA"):
        return os.environ["NLTK_DATA"]
    return str(DEFAULT_NLTK_DATA) if DEFAULT_NLTK_DATA.exists() else ""


# The settings that take one of a few words, by section and field; the image stage reads its
# choices from here, so `--set` refuses a misspelt word before any work starts.
CHOICES: dict[str, tuple[str, ...]] = {
    "image.backbone": ("auto", "resnet50", "efficientnet_lite0"),
    "image.trainable": ("none", "last_block", "last_stage"),
    "image.precision": ("bfloat16", "float32"),
    "image.device": ("auto", "cpu", "cuda"),
}


@dataclass
class DataConfig:
    data_dir: str = field(default_factory=_default_data_dir)
    artifacts_dir: str = field(default_factory=lambda: os.environ.get("FBM_ARTIFACTS", str(REPO_ROOT / "artifacts")))
    nltk_data: str = field(default_factory=_default_nltk_data)
    seed: int = 42
    image_size: int = 256  # side of the letterboxed square written to the cleaned-image cache
    train_frac: float = 0.70
    val_frac: float = 0.15
    test_frac: float = 0.15
    max_image_pixels: int = 40_000_000  # a photo decoding to more is refused as a decompression bomb (a large baseline JPEG decodes reduced)
    workers: int = 0  # threads decoding photos (prepare, the trunk's cache fill, HOG); 0: one per core

    @property
    def loader_threads(self) -> int:
        return self.workers or min(available_cores(), _MAXIMUM["workers"])  # a 128-core host: 64 photos decoding at once


@dataclass
class ImageConfig:
    backbone: str = "auto"  # auto | resnet50 | efficientnet_lite0
    random_init: bool = False  # only on an explicit flag
    trainable: str = "last_block"  # none | last_block | last_stage
    input_size: int = 224
    views: int = 2  # trunk views cached per training photo: view 0 is the plain photo, the others augmented
    embed_dim: int = 256
    dropout: float = 0.3
    epochs: int = 10  # cosine schedule length; early stopping on validation product accuracy
    patience: int = 4
    batch_size: int = 128
    lr: float = 1e-3
    # the pretrained tail's learning rate, relative to the new layers'. Its convolutions carry their
    # folded batch norms' scales (0.15x to 7x in Lite0's last block), which change how far an Adam
    # step moves them: validation product accuracy 0.636 at 0.1, 0.633 at 0.3, 0.615 at 1.0
    tail_lr_scale: float = 0.1
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    trunk_batch_size: int = 32
    precision: str = "bfloat16"  # bfloat16 | float32: the network's autocast (part of the feature-cache key)
    device: str = "auto"  # where the trunk and training run: auto (a CUDA GPU when torch sees one) | cpu | cuda
    # the augmented views (1..views-1): a random resized crop keeping this fraction of the photo's area,
    # a mirror, brightness, contrast and saturation factors in [1 - jitter, 1 + jitter], a hue shift
    crop_scale: tuple[float, ...] = (0.35, 1.0)
    jitter: float = 0.3
    hue_jitter: float = 0.04
    hog_svm_cs: tuple[float, ...] = (3e-6, 1e-5, 3e-5)  # the HOG-SVM baseline's C, chosen on validation photos (larger C overfits 1,764-d HOG)


@dataclass
class TextConfig:
    stem: bool = False
    max_tokens: int = 380
    w2v_dim: int = 128
    w2v_window: int = 5
    w2v_negative: int = 10
    w2v_min_count: int = 2
    w2v_epochs: int = 20
    w2v_workers: int = 1  # gensim threads: one gives the same vectors every run (two: ~20 s faster, not reproducible)
    finetune_embeddings: bool = True
    kernel_sizes: tuple[int, ...] = (2, 3, 4, 5)
    channels: int = 128
    embed_dim: int = 256
    dropout: float = 0.5
    epochs: int = 25
    patience: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2  # with label smoothing 0.1: validation accuracy 0.797 vs 0.785 (1e-4, no smoothing)
    label_smoothing: float = 0.1
    # the TF-IDF model (a linear SVM over word and character n-grams of the tokens; late fusion's third input)
    tfidf_c: float = 0.5
    tfidf_min_df: int = 2  # an n-gram in fewer training texts is left out
    tfidf_word_ngrams: int = 2  # word 1- to n-grams
    tfidf_char_ngrams: tuple[int, ...] = (2, 5)  # character n-gram lengths, shortest and longest


@dataclass
class FusionConfig:
    hidden: int = 0  # 0: dropout + linear; >0: a one-hidden-layer MLP
    dropout: float = 0.3
    epochs: int = 60
    patience: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-3
    late_weight_step: float = 0.05  # late fusion's branch weights are searched on validation on this grid
    tfidf_powers: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # sharpenings of the TF-IDF model's probabilities searched


DEFAULT_K = 10  # results a search returns when it does not say how many (at most index.max_k)


@dataclass
class IndexConfig:
    exact_threshold: int = 50_000  # above this many listings an approximate index is built
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 256  # 1M×512 synthetic (retrieval.bench): recall@10 0.98 at p50 0.8 ms; 128 gives 0.957
    filter_exact_limit: int = 20_000  # a filtered HNSW search over at most this many listings is exact
    max_k: int = 100
    checkpoint_every: int = 256  # live adds/deletes between rewrites of the FAISS file (also written on close)
    term_weight: float = 0.3  # β: a query with text re-ranks candidates by (1-β)·score + β·word cosine (retrieval.terms)
    rerank_candidates: int = 100  # listings re-ranked by words
    word_candidates: int = 10  # re-ranked too: the listings that match the query's words best (an exact title the embeddings rank low); 0: none
    word_match_terms: int = 8  # the query's strongest words that find them (a listing-length query's ~35 took p50 from 1.8 to 7.4 ms)
    word_match_postings: int = 1000  # the listings each of those words is read to, its strongest: a cost the catalogue's size does not raise

    @property
    def default_k(self) -> int:
        """How many results a search returns when it does not say: 10, or max_k when that is lower."""
        return min(DEFAULT_K, self.max_k)

    def k_or_default(self, k: int | None) -> int:
        """A search's k as given, or `default_k` where it does not say."""
        return self.default_k if k is None else k


@dataclass
class ServeConfig:
    host: str = "0.0.0.0"
    port: int = 8008
    api_key: str = field(default_factory=lambda: os.environ.get("FBM_API_KEY", ""))  # unset: writes refused
    max_upload_bytes: int = 10 * 1024 * 1024  # one photo
    max_request_bytes: int = 32 * 1024 * 1024  # a whole request body, refused while it streams in
    max_photos: int = 10  # photos in one request
    max_text_chars: int = 20_000
    inference_workers: int = 0  # model passes run side by side; 0: one per core
    torch_threads: int = 0  # torch threads inside each pass; 0: cores ÷ inference_workers
    batch_max_photos: int = 8  # micro-batch cap: requests waiting while the model runs share a pass
    decode_workers: int = 2  # photos decoded at once (bounds the memory of large uploads)
    request_timeout_s: float = 120.0  # a request (headers and body) must arrive whole within this, or a 408
    trusted_proxies: str = ""  # addresses of reverse proxies whose X-Forwarded-For is believed (comma-separated); empty: none


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    text: TextConfig = field(default_factory=TextConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    @property
    def paths(self) -> "Paths":
        return Paths(Path(self.data.artifacts_dir))

    def apply_nltk_data(self) -> None:
        """Point NLTK at the configured data directory before any NLTK resource is loaded."""
        if self.data.nltk_data:
            os.environ["NLTK_DATA"] = self.data.nltk_data
            import nltk

            if self.data.nltk_data not in nltk.data.path:
                nltk.data.path.insert(0, self.data.nltk_data)

    def override(self, assignment: str) -> None:
        """Apply one `section.field=value` override, converting the value to the field's type."""
        key, sep, raw = assignment.partition("=")
        section_name, dot, field_name = key.strip().partition(".")
        if not sep or not dot:
            raise ValueError(f"override {assignment!r} is not of the form section.field=value")
        if section_name not in self.sections():
            raise ValueError(f"unknown config section {section_name!r} (have: {', '.join(self.sections())})")
        section = getattr(self, section_name)
        fields = {f.name: f for f in dataclasses.fields(section)}
        if field_name not in fields:
            raise ValueError(f"unknown setting {key!r} (have: {', '.join(fields)})")
        try:
            value = _convert(raw.strip(), getattr(section, field_name))
            if value == "" and field_name not in _MAY_BE_EMPTY:
                raise ValueError("the value is empty" + (" (a path: the current directory is not meant in its place)" if field_name.endswith(("_dir", "_data")) else ""))
            _check_range(field_name, value)
            _check_choice(f"{section_name}.{field_name}", value)
        except ValueError as exc:
            raise ValueError(f"bad value for {key.strip()}: {exc}") from None
        setattr(section, field_name, value)

    def validate(self) -> None:
        """What no single setting shows: the split fractions must sum to 1, a photo must fit in a
        request, and a range is two numbers, the first at most the second."""
        for (section, name), example in _RANGES.items():
            bounds = getattr(getattr(self, section), name)
            if len(bounds) != 2 or bounds[0] > bounds[1]:
                raise ValueError(f"{section}.{name} must be two numbers, the first at most the second (e.g. {example}), got {','.join(map(str, bounds))}")
        steps = 1 / self.fusion.late_weight_step
        if self.fusion.late_weight_step < 0.01 or abs(steps - round(steps)) > 1e-6:
            raise ValueError(
                f"fusion.late_weight_step must divide 1 into whole steps, from 0.01 (e.g. 0.05, 0.1, 0.25), got {self.fusion.late_weight_step:g}: "
                "the grid must hold each branch alone, and a finer one takes hours to search"
            )
        fractions = (self.data.train_frac, self.data.val_frac, self.data.test_frac)
        if abs(sum(fractions) - 1.0) > 1e-6:
            raise ValueError(f"data.train_frac, val_frac and test_frac must sum to 1, got {' + '.join(map(str, fractions))} = {sum(fractions):g}")
        if self.serve.max_upload_bytes > self.serve.max_request_bytes:
            raise ValueError(
                f"serve.max_upload_bytes ({self.serve.max_upload_bytes:,}) is above serve.max_request_bytes ({self.serve.max_request_bytes:,}): "
                "a photo that large could never arrive in a request"
            )

    def sections(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Ranges of the numeric settings, by field name (the same name means the same thing in every
# section); every other number only has to be finite and not negative.
_MINIMUM = {
    name: 1
    for name in (
        "epochs", "batch_size", "trunk_batch_size", "views", "embed_dim", "w2v_dim", "w2v_window",
        "w2v_negative", "w2v_min_count", "w2v_epochs", "w2v_workers", "channels", "max_tokens", "decode_workers",
        "batch_max_photos", "max_photos", "max_text_chars", "max_upload_bytes", "max_request_bytes", "max_image_pixels",
        "max_k", "rerank_candidates", "word_match_terms", "word_match_postings", "checkpoint_every", "ef_construction", "ef_search", "port", "kernel_sizes",
        "tfidf_min_df", "tfidf_word_ngrams", "tfidf_char_ngrams",
    )
} | {
    "hnsw_m": 2,  # an HNSW graph of one link per node crashes FAISS
    # a photo's side: the image networks reduce it 32-fold, to one feature per 32x32 pixels
    "image_size": 32,
    "input_size": 32,
}
_MAXIMUM = {
    "port": 65535, "train_frac": 1, "val_frac": 1, "test_frac": 1, "label_smoothing": 1, "term_weight": 1,
    "crop_scale": 1, "late_weight_step": 1, "hue_jitter": 0.5,  # a hue shift of half the colour wheel either way is all of it
} | {
    # sizes of a network, and threads: far above any use, below what fails with an allocation error
    "embed_dim": 4096, "channels": 4096, "w2v_dim": 1024, "hidden": 8192, "hnsw_m": 256,
    "inference_workers": 64, "torch_threads": 256, "decode_workers": 64, "workers": 64, "w2v_workers": 64,
}
_MAY_BE_EMPTY = {"api_key", "trusted_proxies"}  # empty: writes refused; no proxy believed
_BELOW_ONE = {"dropout", "jitter"}  # 0 to less than 1
_ABOVE_ZERO = {"lr", "request_timeout_s", "crop_scale", "hog_svm_cs", "tfidf_c", "late_weight_step", "tfidf_powers"}
# settings of two numbers, the first at most the second, with an example each
_RANGES = {("image", "crop_scale"): "0.35,1", ("text", "tfidf_char_ngrams"): "2,5"}


def _check_range(name: str, value: object) -> None:
    numbers = value if isinstance(value, tuple) else (value,)
    if isinstance(value, tuple) and not value:
        raise ValueError("expected at least one number")
    for number in numbers:
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            continue
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {number}")
        if name in _ABOVE_ZERO and number <= 0:
            raise ValueError(f"expected a number above 0, got {number}")
        if number < _MINIMUM.get(name, 0):
            raise ValueError(f"expected {_MINIMUM.get(name, 0)} or more, got {number}")
        if number > _MAXIMUM.get(name, math.inf):
            raise ValueError(f"expected a number from 0 to 1, got {number}" if _MAXIMUM[name] == 1 else f"expected at most {_MAXIMUM[name]}, got {number}")
        if name in _BELOW_ONE and number >= 1:
            raise ValueError(f"expected a number from 0 to less than 1, got {number}")


def _check_choice(key: str, value: object) -> None:
    choices = CHOICES.get(key)
    if choices is not None and value not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")


def _convert(raw: str, current: object) -> object:
    if isinstance(current, bool):
        if raw.lower() in {"1", "true", "yes", "on"}:
            return True
        if raw.lower() in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"expected a boolean, got {raw!r}")
    try:
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, tuple):
            element = float if any(isinstance(x, float) for x in current) else int
            return tuple(element(x) for x in raw.split(",") if x)
    except ValueError:
        tuple_of = "numbers" if isinstance(current, tuple) and any(isinstance(x, float) for x in current) else "whole numbers"
        wanted = {int: "a whole number", float: "a number", tuple: f"{tuple_of} separated by commas"}[type(current)]
        raise ValueError(f"expected {wanted}, got {raw!r}") from None
    return raw


# How the cleaned-image cache stores photos; part of its directory's name and of the trunk-feature
# cache's key, so files written in another form are never mixed with these. v3: a large JPEG is
# decoded at a reduced scale; v2: a photo that is already clean is kept byte for byte
# (`listings.images.stored_form`); v1 re-encoded every photo.
CLEAN_IMAGES_FORM = "v3"


@dataclass(frozen=True)
class Paths:
    """Where every artifact lives under the artifacts directory."""

    root: Path

    @property
    def training_lock(self) -> Path:
        """Held by `fbm prepare` and `fbm train` while they write: one at a time on these artifacts."""
        return self.root / "TRAINING.lock"

    # listing data (fbm prepare)
    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def listings(self) -> Path:
        return self.data / "listings.jsonl"

    @property
    def categories(self) -> Path:
        return self.data / "categories.json"

    @property
    def splits(self) -> Path:
        return self.data / "splits.json"

    @property
    def prepare_summary(self) -> Path:
        return self.data / "prepare_summary.json"

    def clean_images(self, size: int) -> Path:
        return self.data / f"images_{size}-{CLEAN_IMAGES_FORM}"

    # stages
    @property
    def image_model(self) -> Path:
        return self.root / "image_model"

    @property
    def text_model(self) -> Path:
        return self.root / "text_model"

    @property
    def combined_model(self) -> Path:
        return self.root / "combined_model"

    @property
    def index(self) -> Path:
        return self.root / "index"

    def added_photos(self, size: int) -> Path:
        """Cleaned photos of listings added through `POST /listings` (the catalogue's are in `clean_images`)."""
        return self.root / "api" / f"photos_{size}"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def reports(self) -> Path:
        return self.root / "reports"
