"""Image branch on a tiny synthetic dataset: training, artifacts, reload, feature cache, backbones."""
from __future__ import annotations

import copy
import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw

from image_model.backbones import build_split, hub_checkpoint, pretrained_state_dict, resnet50_weight_options, resolve_backbone
from image_model.baseline import HogSvmBaseline
from image_model.cache import FeatureCache, cache_key, fill_views, view_name
from image_model.inference import EXPORT_FILE, MODEL_FILE, SIDECAR_FILE, ImageBranch
from image_model.model import Architecture, build_network
from image_model.preprocess import Augmentation, eval_view, make_view, to_batch
from image_model import train as train_module
from image_model.train import CURVES_FILE, SplitData, _trained_state, _warmup_cosine, fit, train_baseline, train_image
from listings.categories import CategoryEncoder
from listings.config import Config
from listings.data import write_jsonl
from listings.plots import plot_curves
from scripts import image_sweep

CLASSES = ["Appliances", "Baby & Kids Stuff", "Computers & Software", "Home & Garden"]
COLOURS = [(200, 40, 40), (40, 180, 60), (50, 60, 210), (220, 200, 40)]
SIZE = 64  # cleaned-image side and network input: tiny, so the trunk is cheap
BROKEN = "img-broken"


def _photo(label: int, variant: int) -> Image.Image:
    """A letterboxed photo whose colour and stripe direction carry the label."""
    rng = np.random.default_rng(variant)
    image = Image.new("RGB", (SIZE, SIZE), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    colour = tuple(int(np.clip(c + rng.integers(-30, 30), 0, 255)) for c in COLOURS[label])
    for k in range(0, SIZE, 8):
        if label % 2:
            draw.rectangle([k, 6, k + 3, SIZE - 7], fill=colour)
        else:
            draw.rectangle([0, k, SIZE - 1, k + 3], fill=colour)
    return image


def _tiny_artifacts(tmp_path, n_products: int = 40) -> Config:
    """Prepared listings (40 products, 1-2 photos each, one broken photo) in a temporary artifacts dir."""
    config = Config()
    config.data.artifacts_dir = str(tmp_path / "artifacts")
    config.data.image_size = SIZE
    config.image.backbone = "efficientnet_lite0"
    config.image.input_size = SIZE
    config.image.views = 2
    config.image.epochs = 1
    config.image.batch_size = 8
    config.image.trunk_batch_size = 16
    config.image.lr = 3e-3
    paths = config.paths
    image_dir = paths.clean_images(SIZE)
    image_dir.mkdir(parents=True)
    rows = []
    for p in range(n_products):
        label = p % len(CLASSES)
        split = ["train", "train", "train", "val", "test"][(p // len(CLASSES)) % 5]
        ids = [f"img-{p}-{j}" for j in range(1 + p % 2)]
        for j, image_id in enumerate(ids):
            _photo(label, 100 * p + j).save(image_dir / f"{image_id}.jpg", quality=95)
        if p == 0:
            (image_dir / f"{BROKEN}.jpg").write_bytes(b"not a jpeg at all")
            ids.append(BROKEN)
        rows.append({"product_id": f"prod-{p}", "root": CLASSES[label], "label": label, "split": split, "image_ids": ids, "image_digests": [f"digest-{i}" for i in ids]})
    write_jsonl(pd.DataFrame(rows), paths.listings)
    CategoryEncoder(classes=CLASSES).save(paths.categories)
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    config = _tiny_artifacts(tmp_path_factory.mktemp("image"))
    return config, train_image(config)


def test_tiny_run_trains_skips_the_broken_photo_and_writes_artifacts(trained):
    config, summary = trained
    out = config.paths.image_model
    for name in (MODEL_FILE, SIDECAR_FILE, CURVES_FILE, EXPORT_FILE, "hog_svm.npz", "hog_svm.json"):
        assert (out / name).exists(), name
    assert summary["best_val_loss"] < summary["initial_val_loss"]  # one epoch already lowers the loss
    assert summary["skipped_photos"] == {BROKEN: "not_an_image"}
    assert summary["backbone"] == "efficientnet_lite0" and len(summary["weights_sha256"]) == 64
    for model in ("branch", "baseline"):
        for split in ("val", "test"):
            for level in ("image", "product"):
                assert 0.0 <= summary[model][split][level]["accuracy"] <= 1.0
    assert summary["timing"]["trunk_passes_run"] > 0 and summary["timing"]["naive_over_cache_epoch_ratio"] > 0

    with np.load(out / EXPORT_FILE, allow_pickle=False) as export:
        ids, embeddings, probs = export["image_ids"], export["embeddings"], export["probs"]
    listings = pd.read_json(config.paths.listings, lines=True)
    expected = {i for ids_ in listings["image_ids"] for i in ids_} - {BROKEN}
    assert ids.dtype.kind == "U" and set(ids) == expected and len(ids) == len(expected)
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(ids), 256)
    assert probs.dtype == np.float32 and probs.shape == (len(ids), len(CLASSES))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    sidecar = json.loads((out / SIDECAR_FILE).read_text())
    assert sidecar["classes"] == CLASSES and sidecar["weights_sha256"] == summary["weights_sha256"]
    assert sidecar["preprocessing"]["input_size"] == SIZE


def test_checkpoint_reloads_with_identical_outputs(trained):
    config, _ = trained
    out = config.paths.image_model
    with np.load(out / EXPORT_FILE, allow_pickle=False) as export:
        ids, embeddings, probs = export["image_ids"][:12], export["embeddings"][:12], export["probs"][:12]
    photos = [Image.open(config.paths.clean_images(SIZE) / f"{i}.jpg").convert("RGB") for i in ids]

    branch = ImageBranch.load(config)
    assert branch.classes == CLASSES and branch.embed_dim == 256
    first = branch.embed_and_predict(photos)
    again = ImageBranch.load(config).embed_and_predict(photos)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    # the served network from raw pixels matches what training exported from the fp16 cache
    np.testing.assert_allclose(first[0], embeddings, atol=2e-3)
    np.testing.assert_allclose(first[1], probs, atol=2e-3)
    saved = torch.load(out / MODEL_FILE, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in branch.network.state_dict().items())

    other_size = copy.deepcopy(config)
    other_size.data.image_size = config.data.image_size * 2
    with pytest.raises(ValueError, match=rf"trained on photos cleaned to {config.data.image_size} px but data.image_size is {other_size.data.image_size}"):
        ImageBranch.load(other_size)
    # the compiled graph serving runs is the trained network's function, at any batch size
    with torch.inference_mode():
        for n in (1, 5, len(photos)):
            pixels = to_batch([branch.view(photo) for photo in photos[:n]])
            for eager, graph in zip(branch.network(pixels), branch.compiled(pixels)):
                torch.testing.assert_close(graph, eager, rtol=0, atol=1e-6)

    baseline = HogSvmBaseline.load(config).predict_proba(photos)
    assert baseline.shape == (len(photos), len(CLASSES))
    np.testing.assert_allclose(baseline.sum(axis=1), 1.0, atol=1e-5)


def _lite0_and_photos(tmp_path, ids: list[str]):
    """A tiny Lite0 network and one synthetic photo per id in `tmp_path/images`."""
    architecture = Architecture("efficientnet_lite0", "last_block", SIZE, len(CLASSES), 256, 0.0)
    network = build_network(architecture, pretrained_state_dict("efficientnet_lite0")[0])
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for i, image_id in enumerate(ids):
        _photo(i % len(CLASSES), i).save(image_dir / f"{image_id}.jpg")
    return network, image_dir


def test_the_served_graph_gives_each_thread_its_own_answer(tmp_path):
    """The API's inference threads call one compiled graph side by side."""
    network, _ = _lite0_and_photos(tmp_path, [])
    branch = ImageBranch(network, CLASSES, {"weights_sha256": "random"})
    rng = np.random.default_rng(0)
    batches = [[rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(n)] for n in (1, 3, 5, 2, 4, 6)]
    alone = [branch.embed_views(views) for views in batches]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(branch.embed_views, batches * 3))
    for i, (embeddings, probs) in enumerate(together):
        np.testing.assert_allclose(embeddings, alone[i % len(batches)][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(probs, alone[i % len(batches)][1], rtol=1e-5, atol=1e-6)


def test_cache_hit_skips_the_trunk(tmp_path):
    ids = [f"a{i}" for i in range(5)]
    network, image_dir = _lite0_and_photos(tmp_path, ids)
    cache = FeatureCache(tmp_path / "cache")
    digests = {i: f"digest-{i}" for i in ids}
    views = {0: digests, 1: {i: digests[i] for i in ids[:3]}}
    first = fill_views(cache, network, image_dir, views, SIZE, augmentation=_augmentation(0), batch_size=4)
    assert first.computed == 8 and not first.skipped

    def trunk_must_not_run(*_):
        raise AssertionError("the trunk ran on a cache hit")

    real_forward = network.trunk.forward
    network.trunk.forward = trunk_must_not_run
    again = fill_views(cache, network, image_dir, views, SIZE, augmentation=_augmentation(0), batch_size=4)
    assert again.computed == 0
    assert cache.gather(view_name(1, _augmentation(0)), ids[:3]).shape[0] == 3
    assert not torch.equal(cache.gather(view_name(0, _augmentation(0)), ids[:3]), cache.gather(view_name(1, _augmentation(0)), ids[:3]))

    # a photo replaced under the same id (prepare gives it a new digest) is computed again, and only it
    before = cache.gather(view_name(0, _augmentation(0)), ids)
    Image.new("RGB", (SIZE, SIZE), (250, 250, 0)).save(image_dir / "a2.jpg")
    network.trunk.forward = real_forward
    replaced = fill_views(cache, network, image_dir, {0: digests | {"a2": "digest-new"}}, SIZE, augmentation=_augmentation(0), batch_size=4)
    after = cache.gather(view_name(0, _augmentation(0)), ids)
    assert replaced.computed == 1 and len(cache.read(view_name(0, _augmentation(0)))[0]) == 5
    assert not torch.equal(after[2], before[2]) and torch.equal(after[[0, 1, 3, 4]], before[[0, 1, 3, 4]])


def test_a_cache_write_interrupted_before_its_commit_leaves_the_view_as_it_was(tmp_path, monkeypatch):
    """Rows are replaced in place of others now, so an array renamed before its ids could pair
    features with the wrong photos: the ids file, naming its array, is the one commit point."""
    cache = FeatureCache(tmp_path)
    rows = np.arange(12, dtype=np.float16).reshape(3, 4)
    cache.add("view0", ["a", "b", "c"], rows, ["da", "db", "dc"])

    def crash(source, target):
        raise OSError("the disk went away")

    monkeypatch.setattr(os, "replace", crash)  # the ids file's rename, the commit
    with pytest.raises(OSError):
        cache.add("view0", ["b"], np.full((1, 4), 9, np.float16), ["db2"])
    monkeypatch.undo()
    assert torch.equal(cache.gather("view0", ["a", "b", "c"]), torch.from_numpy(rows))
    assert cache.missing("view0", {"a": "da", "b": "db2", "c": "dc"}) == ["b"]
    cache.add("view0", ["b"], np.full((1, 4), 9, np.float16), ["db2"])
    assert cache.gather("view0", ["a", "b", "c"])[:, 0].tolist() == [0, 9, 8]
    assert len(list(tmp_path.glob("view0-*.npy"))) == 1  # the superseded and the interrupted arrays are gone
    with pytest.raises(KeyError, match="1 photo\\(s\\) not in the feature cache's view 'view0', e.g. 'z'"):
        cache.gather("view0", ["a", "z"])
    with pytest.raises(KeyError, match="2 photo\\(s\\) not in the feature cache's view 'view9'"):
        cache.gather("view9", ["a", "b"])  # a view never filled
    assert cache.gather("view9", []).shape == (0,)


def test_prefetched_cache_fill_matches_a_serial_one_in_order_and_values(tmp_path):
    """Loader threads fetch batches ahead of the trunk: rows stay aligned with their ids, broken photos are skipped."""
    ids = [f"p{i}" for i in range(11)]
    network, image_dir = _lite0_and_photos(tmp_path, ids)
    (image_dir / "p5.jpg").write_bytes(b"not a jpeg")
    fills = {}
    for loaders in (1, 3):
        cache = FeatureCache(tmp_path / f"cache{loaders}")
        stats = fill_views(cache, network, image_dir, {0: dict.fromkeys(ids, ""), 1: dict.fromkeys(ids[:7], "")}, SIZE, augmentation=_augmentation(0), batch_size=2, loaders=loaders)
        assert stats.computed == 16 and list(stats.skipped) == ["p5"]
        fills[loaders] = [cache.gather(view_name(v, _augmentation(0)), [i for i in subset if i != "p5"]) for v, subset in ((0, ids), (1, ids[:7]))]
    for serial, prefetched in zip(fills[1], fills[3]):
        assert torch.equal(serial, prefetched)


def test_training_device_is_the_cpu_without_a_gpu_and_cuda_is_refused_clearly(monkeypatch):
    from image_model.cache import cache_key
    from image_model.model import training_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device("auto") == torch.device("cpu") == training_device("cpu")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        training_device("cuda")
    with pytest.raises(ValueError, match="image.device must be one of"):
        training_device("tpu")
    assert cache_key("b", "0" * 64, 224, "c", "bfloat16", 256, "cpu") == cache_key("b", "0" * 64, 224, "c", "bfloat16", 256)
    assert cache_key("b", "0" * 64, 224, "c", "bfloat16", 256, "cuda").endswith("-cuda")
    assert cache_key("b", "0" * 64, 224, "c", "bfloat16", 320) != cache_key("b", "0" * 64, 224, "c", "bfloat16", 256)


def test_augmented_views_change_pixels_and_are_reproducible():
    photo = _photo(1, 7)
    plain = eval_view(photo, SIZE)
    augmented = make_view(photo, SIZE, 1, "img-x", _augmentation(42))
    assert plain.shape == augmented.shape == (SIZE, SIZE, 3) and augmented.dtype == np.uint8
    assert np.abs(plain.astype(int) - augmented).mean() > 3
    assert np.array_equal(augmented, make_view(photo, SIZE, 1, "img-x", _augmentation(42)))
    assert not np.array_equal(augmented, make_view(photo, SIZE, 2, "img-x", _augmentation(42)))
    assert np.array_equal(plain, make_view(photo, SIZE, 0, "img-x", _augmentation(42)))


def test_resnet50_weights_load_from_the_torch_cache_without_network(tmp_path, monkeypatch):
    from torchvision.models import resnet50

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*_args, **_kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)

    assert resolve_backbone("auto") == "efficientnet_lite0"  # nothing cached yet
    with pytest.raises(FileNotFoundError, match="fbm weights"):
        pretrained_state_dict("resnet50")

    torch.manual_seed(0)
    written = resnet50().state_dict()
    target = hub_checkpoint(resnet50_weight_options()[0])
    target.parent.mkdir(parents=True)
    torch.save(written, target)

    assert resolve_backbone("auto") == "resnet50"
    state, path = pretrained_state_dict("resnet50")
    assert path == target and torch.equal(state["fc.weight"], written["fc.weight"])
    split = build_split("resnet50", "last_block", 64, state)
    assert torch.equal(split.tail[0].conv1.weight, written["layer4.2.conv1.weight"])
    with torch.inference_mode():
        cut = split.trunk(torch.rand(1, 3, 64, 64))
        assert cut.shape == (1, 2048, 2, 2) and split.tail(cut).shape == (1, 2048)


def _backbone_state_with_varied_statistics(backbone: str) -> dict:
    """Random backbone weights whose batch norms have non-trivial statistics, so a wrong fold shows."""
    from efficientnet_lite_pytorch import EfficientNet
    from torchvision.models import resnet50

    torch.manual_seed(0)
    net = resnet50() if backbone == "resnet50" else EfficientNet.from_name("efficientnet-lite0", image_size=SIZE)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return net.state_dict()


@pytest.mark.parametrize(("backbone", "trainable"), [("efficientnet_lite0", "last_block"), ("efficientnet_lite0", "none"), ("resnet50", "last_block")])
def test_the_folded_network_computes_what_the_backbone_computes(backbone, trainable):
    """Trunk and tail have their batch norms folded into the convolutions (and Lite0's symmetric
    padding moved into them): in eval mode the backbone's own trunk and tail give the same outputs;
    the folded trunk stays frozen and the folded tail trains, biases included."""
    state = _backbone_state_with_varied_statistics(backbone)
    reference = build_split(backbone, trainable, SIZE, state)
    reference.trunk.eval()
    reference.tail.eval()
    network = build_network(Architecture(backbone, trainable, SIZE, 4, 16, 0.0, "float32"), state).eval()

    def count(kind: type, module: torch.nn.Module) -> int:
        return sum(isinstance(m, kind) for m in module.modules())

    assert count(torch.nn.BatchNorm2d, reference.trunk) > 0 and count(torch.nn.BatchNorm2d, network) == 0
    assert backbone == "resnet50" or count(torch.nn.ZeroPad2d, network.trunk) < count(torch.nn.ZeroPad2d, reference.trunk)
    assert not any(p.requires_grad for p in network.trunk.parameters())
    tail_convs = [m for m in network.tail.modules() if isinstance(m, torch.nn.Conv2d)]
    assert (trainable == "none") == (not tail_convs)
    assert all(conv.bias is not None and conv.bias.requires_grad and conv.weight.requires_grad for conv in tail_convs)
    pixels = torch.rand(2, 3, SIZE, SIZE)
    with torch.inference_mode():
        cut, expected_cut = network.trunk(pixels), reference.trunk(pixels)
        features, expected = network.tail(expected_cut), reference.tail(expected_cut)
    torch.testing.assert_close(cut, expected_cut, rtol=1e-4, atol=1e-4 * float(expected_cut.abs().max()))
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_image_sweep_reports_validation_per_variant_and_shares_the_cache(tmp_path, capsys):
    config = _tiny_artifacts(tmp_path)
    settings = {
        "data.image_size": SIZE, "image.backbone": "efficientnet_lite0", "image.input_size": SIZE, "image.views": 2,
        "image.epochs": 1, "image.batch_size": 8, "image.trunk_batch_size": 16, "image.lr": 3e-3,
    }
    argv = ["--artifacts", config.data.artifacts_dir, *(f"--set={k}={v}" for k, v in settings.items()), "--variant", "image.dropout=0.5 image.lr=1e-3"]
    assert image_sweep.main(argv) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["variant"] for r in results] == ["defaults", "image.dropout=0.5 image.lr=1e-3"]
    assert all(0 <= r["val_product"] <= 1 and r["epochs_run"] == 1 for r in results)
    assert results[0]["cache_fill_seconds"] > 0 and results[1]["cache_fill_seconds"] == 0  # the second reuses the cache


def test_fbm_weights_without_a_network_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import urllib.error

    from scripts.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def unreachable(*_args, **_kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    assert main(["weights", "--artifacts", str(tmp_path / "artifacts")]) == 2
    err = capsys.readouterr().err
    assert "could not download ResNet-50's ImageNet weights" in err and "Traceback" not in err
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in err


def _noise_photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


def test_augmented_views_are_drawn_per_image():
    """Each photo gets its own random crop/flip/jitter for a view: the same view of two photos must not share one draw."""
    photo = _noise_photo()
    views = [make_view(photo, 64, 1, image_id, _augmentation(42)) for image_id in ("img-a", "img-b", "img-c")]
    assert not np.array_equal(views[0], views[1]) and not np.array_equal(views[1], views[2])


def test_to_batch_keeps_rows_rows_and_columns_columns():
    rng = np.random.default_rng(1)
    view = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    batch = to_batch([view])
    assert batch.shape == (1, 3, 8, 8)
    for c in range(3):
        np.testing.assert_allclose(batch[0, c].numpy(), view[:, :, c] / 255.0, rtol=0, atol=1e-7)


def test_cache_key_separates_precisions():
    """bfloat16 and float32 trunks give different features: they must not share a cache."""
    assert cache_key("b", "0" * 64, 224, "c", "bfloat16", 256) != cache_key("b", "0" * 64, 224, "c", "float32", 256)


def test_augmented_view_names_carry_the_seed_and_the_strengths():
    """Augmented views depend on data.seed and on image.crop_scale, jitter and hue_jitter: other
    settings must not reuse the cached views of the first."""
    assert view_name(1, _augmentation(0)) != view_name(1, _augmentation(1)) and view_name(2, _augmentation(0)) != view_name(2, _augmentation(7))
    stronger = Config()
    stronger.override("image.jitter=0.5")
    assert view_name(1, Augmentation.of(stronger)) != view_name(1, _augmentation(42))
    assert view_name(0, _augmentation(0)) == view_name(0, _augmentation(5)) == view_name(0, Augmentation.of(stronger))  # the plain view depends on neither


def test_views_drawn_at_other_strengths_leave_the_cache_when_replaced(tmp_path):
    """Changing image.jitter computes the augmented views again under a new name: the old ones (as
    large as the training photos' features) were left on disk for ever, as were those named before
    names carried the strengths."""
    cache = FeatureCache(tmp_path)
    stronger = Config()
    stronger.override("image.jitter=0.5")
    current, other = view_name(1, _augmentation(42)), view_name(1, Augmentation.of(stronger))
    rows = np.zeros((2, 4), np.float16)
    for name in (other, "view1-seed42", "view1-seed7-0123abcd", "view2-seed42-0123abcd", "view0"):
        cache.add(name, ["a", "b"], rows, ["da", "db"])
    cache.remove_superseded(current)
    left = sorted(path.name.split(".")[0].rsplit("-", 1)[0] if path.suffix == ".npy" else path.name.removesuffix(".ids.json") for path in tmp_path.iterdir())
    assert left == sorted(["view1-seed7-0123abcd", "view1-seed7-0123abcd", "view2-seed42-0123abcd", "view2-seed42-0123abcd", "view0", "view0"])


def test_augmentation_strengths_come_from_the_settings():
    photo = _photo(1, 7)
    gentle, strong = Config(), Config()
    gentle.override("image.crop_scale=1,1")
    gentle.override("image.jitter=0")
    gentle.override("image.hue_jitter=0")
    strong.override("image.jitter=0.9")
    plain = eval_view(photo, SIZE).astype(int)
    untouched = make_view(photo, SIZE, 1, "img-x", Augmentation.of(gentle)).astype(int)  # at most mirrored
    assert min(np.abs(untouched - plain).mean(), np.abs(untouched - plain[:, ::-1]).mean()) < 1
    assert np.abs(make_view(photo, SIZE, 1, "img-x", Augmentation.of(strong)).astype(int) - plain).mean() > 3
    for bad in ("image.crop_scale=0.5", "image.crop_scale=0.9,0.4"):
        config = Config()
        config.override(bad)
        with pytest.raises(ValueError, match="image.crop_scale must be two numbers, the first at most the second"):
            config.validate()
    with pytest.raises(ValueError, match="expected a number from 0 to less than 1"):
        Config().override("image.jitter=1.5")
    config = Config()
    config.override("image.crop_scale=0.9,0.4")
    with pytest.raises(ValueError, match=r"e\.g\. 0\.35,1\), got 0\.9,0\.4"):  # an example of its own, not 2,5
        config.validate()


def _augmentation(seed: int) -> Augmentation:
    config = Config()
    config.data.seed = seed
    return Augmentation.of(config)


def test_resnet50_last_block_cut_keeps_every_block():
    """Cutting before the last block moves it to the tail; trunk then tail computes the whole frozen network."""
    from torchvision.models import resnet50

    torch.manual_seed(0)
    state = resnet50().state_dict()
    cut = build_split("resnet50", "last_block", 64, state)
    whole = build_split("resnet50", "none", 64, state)
    for part in (cut.trunk, cut.tail, whole.trunk):
        part.eval()
    pixels = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(cut.tail(cut.trunk(pixels)), whole.trunk(pixels), rtol=1e-4, atol=1e-5)


def _head_only_network():
    torch.manual_seed(0)
    return build_network(Architecture("efficientnet_lite0", "none", 64, 3, 16, 0.0, "float32"))


def _cached_split(n: int, seed: int) -> SplitData:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    features = torch.randn(2, n, 1280, generator=g).half()
    return SplitData([f"i{k}" for k in range(n)], labels, np.arange(n), labels.numpy(), features)


def _fit_config(epochs: int, patience: int) -> Config:
    config = Config()
    config.image.epochs, config.image.patience, config.image.batch_size, config.image.lr = epochs, patience, 8, 1e-2
    return config


def _scripted_validation(monkeypatch, network, accuracies):
    """score_split answers the scripted validation product accuracy of each epoch and snapshots the trained state."""
    snapshots, real = [], train_module.score_split
    calls = iter(accuracies)

    def scoring(probs, data):
        scores = real(probs, data)
        scores["product"]["accuracy"] = next(calls)
        snapshots.append(_trained_state(network))
        return scores

    monkeypatch.setattr(train_module, "score_split", scoring)
    return snapshots


def test_image_fit_keeps_the_best_validation_epoch(monkeypatch):
    network = _head_only_network()
    snapshots = _scripted_validation(monkeypatch, network, [0.2, 0.9, 0.3, 0.4])
    history, best_epoch, _ = fit(network, _cached_split(24, 0), _cached_split(9, 1), _fit_config(epochs=4, patience=10))
    assert len(history) == 4 and best_epoch == 2
    final = _trained_state(network)
    assert all(torch.equal(final[k], snapshots[1][k]) for k in final)
    assert any(not torch.equal(final[k], snapshots[-1][k]) for k in final)


def test_image_fit_stops_after_patience_epochs_without_improvement(monkeypatch):
    network = _head_only_network()
    _scripted_validation(monkeypatch, network, [0.5] + [0.4] * 9)
    history, best_epoch, _ = fit(network, _cached_split(24, 0), _cached_split(9, 1), _fit_config(epochs=10, patience=2))
    assert best_epoch == 1 and len(history) == 1 + 2


def test_warmup_starts_above_zero_and_reaches_the_full_rate():
    factor = _warmup_cosine(4, 20)
    assert factor(0) == pytest.approx(0.25)  # the first step already learns
    assert factor(3) == pytest.approx(1.0)  # warm-up ends at the full rate
    assert factor(4) == pytest.approx(1.0) and factor(20) == pytest.approx(0.0)


def test_hog_svm_c_is_chosen_on_validation_photos_never_test(tmp_path, monkeypatch):
    photos = pd.DataFrame({
        "image_id": [f"i{k}" for k in range(12)],
        "product_id": [f"p{k}" for k in range(12)],
        "label": [k % 2 for k in range(12)],
        "split": ["train"] * 6 + ["val"] * 3 + ["test"] * 3,
    })
    scored_rows = []

    class FakeModel:
        def proba_from_features(self, features):
            scored_rows.append(sorted(int(r) for r in features[:, 0]))
            return np.full((len(features), 2), 0.5, np.float32)

        def save(self, *args):
            pass

    class FakeBaseline:
        @staticmethod
        def fit(features, labels, classes, c, seed):
            return FakeModel()

    monkeypatch.setattr(train_module, "HogSvmBaseline", FakeBaseline)
    monkeypatch.setattr(train_module, "clean_image", lambda *a, **k: None)
    monkeypatch.setattr(train_module, "hog_features", lambda images, workers: (list(images), np.arange(12, dtype=np.float32)[:, None])[1])
    config = Config()
    config.data.artifacts_dir = str(tmp_path)
    train_baseline(config, tmp_path, photos, ["a", "b"])
    choice_calls = scored_rows[: len(config.image.hog_svm_cs)]
    assert all(rows == [6, 7, 8] for rows in choice_calls), choice_calls


def test_the_branch_table_shows_an_empty_split_as_a_dash_in_line():
    """With no test products the table printed 'nan/nan' (7 characters) in 15-character columns."""
    from image_model.train import format_summary

    def split(accuracy: float) -> dict:
        return {level: {"accuracy": accuracy, "macro_f1": accuracy} for level in ("image", "product")}

    result = {"val": split(0.5), "test": split(float("nan"))}
    timing = {"trunk_images_per_s": 80, "epoch_seconds_on_cache": 1.0, "naive_epoch_seconds_estimate": 12.0, "naive_over_cache_epoch_ratio": 12.0}
    summary = {"backbone": "efficientnet_lite0", "weights_sha256": "0" * 64, "cut": "blocks15", "input_size": 224, "views": 2, "best_epoch": 1,
               "epochs_run": 2, "timing": timing, "branch": result, "baseline": result}
    header, branch = format_summary(summary).splitlines()[2:4]
    assert "nan" not in branch and branch.index("—/—") == header.index("test photo")


def test_the_image_curves_say_what_product_accuracy_counts_and_why_the_epoch_was_kept(tmp_path, drawn_figures):
    """Product accuracy is over the validation products with a photo, whose number the legend gives;
    the kept epoch's marker names the rule `fit` keeps by, as the loss panel alone would mislead."""
    labels = train_module.curve_labels(901)
    assert labels["val_product_accuracy"] == "validation product accuracy (901 with a photo)"
    history = [{"epoch": e, "train_loss": 2 / e, "val_loss": 1.5 - e / 10, "train_accuracy": e / 5, "val_accuracy": e / 6, "val_product_accuracy": e / 5.5} for e in (1, 2, 3)]
    plot_curves(history, tmp_path / "curves.png", "Image branch", labels, kept=2, kept_rule=train_module.KEPT_RULE)
    loss_ax, score_ax = drawn_figures[-1].axes
    assert "kept: epoch 2 (best validation product accuracy)" in loss_ax.get_legend_handles_labels()[1]
    assert "validation product accuracy (901 with a photo)" in score_ax.get_legend_handles_labels()[1]
    assert score_ax.get_ylabel() == "accuracy (share right)"  # no macro-F1 curve: accuracy it is
