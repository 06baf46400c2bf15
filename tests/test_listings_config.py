"""The configuration: defaults from the environment, typed `section.field=value` overrides."""
from __future__ import annotations

from pathlib import Path

import pytest

from listings import config as config_module
from listings.config import CLEAN_IMAGES_FORM, Config
from scripts.cli import main


def test_override_converts_to_the_field_type():
    config = Config()
    config.override("image.epochs=5")
    config.override("image.lr = 0.01")
    config.override("text.stem=true")
    config.override("image.random_init=0")
    config.override("text.kernel_sizes=3,4")
    config.override("image.backbone=resnet50")
    config.override("data.seed=7")
    assert config.image.epochs == 5 and isinstance(config.image.epochs, int)
    assert config.image.lr == 0.01 and isinstance(config.image.lr, float)
    assert config.text.stem is True and config.image.random_init is False
    assert config.text.kernel_sizes == (3, 4)
    assert config.image.backbone == "resnet50"
    assert config.data.seed == 7


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("image.epochs", "section.field=value"),
        ("epochs=5", "section.field=value"),
        ("nope.epochs=5", "unknown config section 'nope'"),
        ("paths.root=/tmp", "unknown config section 'paths'"),
        ("image.epoch=5", "unknown setting 'image.epoch'"),
        ("image.epochs=five", "bad value for image.epochs: expected a whole number, got 'five'"),
        ("image.epochs=1.5", "expected a whole number, got '1.5'"),
        ("image.lr=fast", "expected a number, got 'fast'"),
        ("text.kernel_sizes=3;4", "expected whole numbers separated by commas, got '3;4'"),
        ("image.backbone=resnet", "bad value for image.backbone: expected one of auto, resnet50, efficientnet_lite0, got 'resnet'"),
        ("image.trainable=all", "expected one of none, last_block, last_stage"),
        ("image.precision=fp16", "expected one of bfloat16, float32"),
        ("image.device=gpu", "expected one of auto, cpu, cuda"),
        ("text.stem=maybe", "bad value for text.stem"),
        ("image.epochs=-1", "expected 1 or more, got -1"),  # the range the setting has, not every number's
        ("image.epochs=0", "expected 1 or more"),
        ("image.lr=0", "expected a number above 0"),
        ("text.lr=-1", "expected a number above 0, got -1"),
        ("image.lr=nan", "expected a finite number"),
        ("data.train_frac=2", "expected a number from 0 to 1"),
        ("index.term_weight=7", "expected a number from 0 to 1"),
        ("image.dropout=1", "from 0 to less than 1"),
        ("text.kernel_sizes=", "expected at least one number"),
        ("text.kernel_sizes=3,0", "expected 1 or more"),
        ("serve.inference_workers=-1", "expected 0 or more, got -1"),
        ("index.term_weight=inf", "expected a finite number, got inf"),
        ("data.image_size=0", "expected 32 or more"),
        ("image.input_size=1", "expected 32 or more"),  # a network of stride 32 was trained on single pixels
        ("index.hnsw_m=1", "expected 2 or more"),
        ("serve.port=70000", "expected at most 65535"),
        # an empty path was the current directory: `prepare` wrote ./data there
        ("data.artifacts_dir=", r"bad value for data.artifacts_dir: the value is empty \(a path"),
        ("data.data_dir= ", "the value is empty"),
        ("serve.host=", "the value is empty"),
        # sizes that failed with an allocation error (or a thread error) after minutes of work
        ("text.embed_dim=1000000000000", "expected at most 4096"),
        ("text.w2v_dim=1000000000", "expected at most 1024"),
        ("fusion.hidden=1000000000000", "expected at most 8192"),
        ("serve.inference_workers=100000", "expected at most 64"),
    ],
)
def test_bad_overrides_are_clear_errors(assignment, message):
    with pytest.raises(ValueError, match=message):
        Config().override(assignment)


def test_environment_sets_the_directories(monkeypatch, tmp_path):
    monkeypatch.setenv("FBM_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FBM_ARTIFACTS", str(tmp_path / "artifacts"))
    config = Config()
    assert config.data.data_dir == str(tmp_path / "data")
    assert config.paths.listings == tmp_path / "artifacts" / "data" / "listings.jsonl"
    assert config.paths.clean_images(256) == tmp_path / "artifacts" / "data" / f"images_256-{CLEAN_IMAGES_FORM}"


def test_default_split_fractions_sum_to_one():
    data = Config().data
    assert (data.train_frac, data.val_frac, data.test_frac) == (0.70, 0.15, 0.15)


def test_cli_reports_a_bad_setting_without_a_traceback(tmp_path: Path, capsys):
    assert main(["prepare", "--data", str(tmp_path), "--artifacts", str(tmp_path / "a"), "--set", "image.epoch=5"]) == 2
    assert "unknown setting 'image.epoch'" in capsys.readouterr().err


def test_settings_of_their_allowed_range_are_kept():
    config = Config()
    for assignment in ("serve.inference_workers=0", "fusion.hidden=0", "image.dropout=0", "index.term_weight=1", "image.patience=0", "image.device=cpu", "image.trainable=none", "serve.api_key="):
        config.override(assignment)
    assert config.serve.inference_workers == 0 and config.index.term_weight == 1.0 and config.serve.api_key == ""
    assert (config.image.device, config.image.trainable) == ("cpu", "none")


def test_photo_loader_threads_default_to_one_per_core(monkeypatch):
    """A GPU machine's trunk waits on JPEG decoding with two loader threads (254 photos/s on an H200 with 16 cores)."""
    monkeypatch.setattr(config_module, "available_cores", lambda: 16)
    config = Config()
    assert config.data.workers == 0 and config.data.loader_threads == 16
    config.override("data.workers=3")
    assert config.data.loader_threads == 3


def test_a_photo_limit_above_the_request_limit_is_refused(tmp_path: Path, capsys):
    argv = ["serve", "--artifacts", str(tmp_path), "--set", "serve.max_upload_bytes=100000000", "--set", "serve.max_request_bytes=1000"]
    assert main(argv) == 2
    assert "a photo that large could never arrive in a request" in capsys.readouterr().err


def test_split_fractions_that_do_not_sum_to_one_are_refused_before_any_work(tmp_path: Path, capsys):
    argv = ["prepare", "--data", str(tmp_path), "--artifacts", str(tmp_path / "a"), "--set", "data.train_frac=0.8"]
    assert main(argv) == 2
    assert "must sum to 1, got 0.8 + 0.15 + 0.15 = 1.1" in capsys.readouterr().err


def test_the_text_branch_is_not_retrained_for_a_photo_setting():
    """The text branch never reads photos: the cleaned photos' size or pixel limit leave it up to date."""
    from scripts.freshness import fingerprint

    config, photos_changed = Config(), Config()
    photos_changed.override("data.image_size=128")
    photos_changed.override("data.max_image_pixels=1000")
    assert fingerprint("text", config, "inputs") == fingerprint("text", photos_changed, "inputs")
    assert fingerprint("image", config, "inputs") != fingerprint("image", photos_changed, "inputs")
    photos_changed.override("data.seed=7")
    assert fingerprint("text", config, "inputs") != fingerprint("text", photos_changed, "inputs")


@pytest.mark.parametrize(
    ("stage", "setting"),
    [("image", "image.trainable=none"), ("text", "text.max_tokens=100"), ("combined", "fusion.dropout=0.4"), ("text", "data.seed=7")],
)
def test_a_stage_is_retrained_for_a_setting_of_its_own(stage, setting):
    from scripts.freshness import fingerprint

    changed = Config()
    changed.override(setting)
    assert fingerprint(stage, Config(), "inputs") != fingerprint(stage, changed, "inputs")


def test_the_image_branch_is_not_retrained_for_the_trunk_batch_size():
    """How many photos the frozen trunk takes at once changes its speed, not its features."""
    from scripts.freshness import fingerprint

    config, faster = Config(), Config()
    faster.override("image.trunk_batch_size=64")
    assert fingerprint("image", config, "inputs") == fingerprint("image", faster, "inputs")
    faster.override("image.batch_size=64")
    assert fingerprint("image", config, "inputs") != fingerprint("image", faster, "inputs")
