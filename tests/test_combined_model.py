"""Fusion on tiny synthetic branch exports: training, the missing-modality rule, the saved model."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import combined_model.classify as classify
import combined_model.evaluate as evaluate_module
from combined_model.classify import answer_rows, classified_file, classify_directory, format_summary
from combined_model.evaluate import MODELS, confusion, format_table, listing_predictions, listing_tfidf, report_dir
from combined_model.report import write_report
from combined_model.features import IMAGE_EXPORT, TEXT_EXPORT, BranchOutputs, gather, load_branch_exports, load_export
from combined_model.fusion import EARLY, LATE, FusionClassifier, LateWeights, combine, sharpen, single_branch
from combined_model.inference import Prediction, PreparedListing
from combined_model.train import MODEL_FILE, SIDECAR_FILE, choose_late_weights, curves_title, late_weight_grid, train_combined
from listings.categories import CategoryEncoder
from listings.artifacts import CURVES_FILE
from listings.config import Config, FusionConfig
from listings.data import write_jsonl
from listings.metrics import NO_ANSWER, per_product

CLASSES = ["Appliances", "Baby & Kids Stuff", "Computers & Software"]


def _synthetic_artifacts(tmp_path, n_products: int = 90, dim: int = 16, seed: int = 0, tfidf_informs: bool = True) -> Config:
    """Prepared listings plus branch exports whose embeddings carry the label, noisily; the TF-IDF
    probabilities carry it too (independent noise) or, without `tfidf_informs`, are uniform."""
    rng = np.random.default_rng(seed)
    config = Config()
    config.data.artifacts_dir = str(tmp_path)
    config.fusion.epochs = 40
    labels = rng.integers(0, len(CLASSES), n_products)
    splits = np.array(["train", "val", "test"])[np.arange(n_products) % 3]
    rows, image_ids, image_emb, text_emb = [], [], [], []
    for p, label in enumerate(labels):
        ids = [f"img-{p}-{j}" for j in range((p // 3) % 3)]  # 0, 1 or 2 photos, in every split
        rows.append({"product_id": f"prod-{p}", "root": CLASSES[label], "label": int(label), "split": splits[p], "image_ids": ids, "image_digests": ids})
        for image_id in ids:
            image_ids.append(image_id)
            image_emb.append(np.eye(dim)[label] * 2 + rng.normal(0, 1.0, dim))
        text_emb.append(np.eye(dim)[label + 3] * 2 + rng.normal(0, 1.0, dim))
    paths = config.paths
    write_jsonl(pd.DataFrame(rows), paths.listings)
    CategoryEncoder(classes=CLASSES).save(paths.categories)

    def probs(emb: np.ndarray, offset: int) -> np.ndarray:
        logits = emb[:, offset : offset + len(CLASSES)] * 2
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    for branch in (paths.image_model, paths.text_model):
        branch.mkdir(parents=True)
        (branch / "model.json").write_text(json.dumps({"classes": CLASSES}))  # the categories each branch was trained on
    image_emb_arr, text_emb_arr = np.array(image_emb, np.float32), np.array(text_emb, np.float32)
    np.savez(paths.image_model / IMAGE_EXPORT, image_ids=np.array(image_ids), embeddings=image_emb_arr, probs=probs(image_emb_arr, 0))
    np.savez(
        paths.text_model / TEXT_EXPORT,
        product_ids=np.array([r["product_id"] for r in rows]),
        embeddings=text_emb_arr,
        probs=probs(text_emb_arr, 3),
        known_tokens=np.full(n_products, 5),
        tfidf_probs=probs(np.eye(dim)[labels + 3] * 2 + rng.normal(0, 1.0, (n_products, dim)), 3) if tfidf_informs else np.full((n_products, len(CLASSES)), 1 / len(CLASSES)),
    )
    return config


def test_train_combined_lowers_loss_and_saves_a_reloadable_model(tmp_path, capsys):
    config = _synthetic_artifacts(tmp_path)
    summary = train_combined(config)
    printed = capsys.readouterr().err.splitlines()  # its figures, as the branches' stages print theirs
    assert any(line.startswith("fusion: serving ") for line in printed)
    assert any(line.startswith("  late_fusion    ") for line in printed)

    sidecar = json.loads((config.paths.combined_model / SIDECAR_FILE).read_text())
    losses = [h["train_loss"] for h in sidecar["history"]]
    assert losses[-1] < losses[0]
    assert summary["served_method"] in (EARLY, LATE)
    late = LateWeights.from_json(summary["late_weights"])
    assert sidecar["late_weights"] == late.to_json()
    for split in ("val", "test"):
        for model in ("image", "text", "combined", "late_fusion"):
            assert 0.0 <= summary["metrics"][split][model]["accuracy"] <= 1.0
    # Both modalities carry the label, so fusing them should beat chance clearly.
    assert summary["metrics"]["val"]["combined"]["accuracy"] > 0.6
    assert (config.paths.combined_model / "curves.png").stat().st_size > 0

    model = FusionClassifier(sidecar["in_dim"], len(CLASSES), sidecar["hidden"], sidecar["dropout"])
    model.load_state_dict(torch.load(config.paths.combined_model / MODEL_FILE, weights_only=True))


def test_validation_chooses_the_weights_the_epoch_and_the_served_fusion(tmp_path, monkeypatch):
    """Every choice is made on the validation split, none on test: the late-fusion weights, the
    fusion classifier's epoch and which fusion is served (here validation prefers early fusion and
    test late fusion, as scripted below)."""
    import combined_model.train as train_module

    config = _synthetic_artifacts(tmp_path)
    split_of, fused, weighed = {}, [], []
    gather_split, fuse, choose, score = train_module.gather, train_module.fused_probs, train_module.choose_late_weights, train_module.product_metrics

    def gathering(frame, *args):
        out = gather_split(frame, *args)
        split_of[id(out)] = frame["split"].iloc[0]
        return out

    def fusing(model, out, method, late):
        probs = fuse(model, out, method, late)
        fused.append((probs, method))
        return probs

    scripted = {("val", EARLY): 0.9, ("val", LATE): 0.5, ("test", EARLY): 0.1, ("test", LATE): 0.8}

    def scoring(out, probs):
        metrics = score(out, probs)
        method = next((method for fused_probs, method in fused if fused_probs is probs), None)
        if method is not None and split_of.get(id(out)) in ("val", "test") and weighed:  # the final scores, after fit_fusion's own
            metrics["accuracy"] = scripted[split_of[id(out)], method]
        return metrics

    monkeypatch.setattr(train_module, "gather", gathering)
    monkeypatch.setattr(train_module, "fused_probs", fusing)
    monkeypatch.setattr(train_module, "choose_late_weights", lambda val, settings: weighed.append(val) or choose(val, settings))
    monkeypatch.setattr(train_module, "product_metrics", scoring)
    summary = train_combined(config)

    products = pd.read_json(config.paths.listings, lines=True)
    assert len(weighed) == 1 and list(weighed[0].labels) == list(products.loc[products["split"] == "val", "label"])
    assert summary["served_method"] == EARLY
    sidecar = json.loads((config.paths.combined_model / SIDECAR_FILE).read_text())
    history = sidecar["history"]
    best = max(range(len(history)), key=lambda epoch: history[epoch]["val_accuracy"])
    assert best < len(history) - 1  # the best epoch is not the last: keeping the last would show
    model = FusionClassifier(sidecar["in_dim"], len(CLASSES), sidecar["hidden"], sidecar["dropout"])
    model.load_state_dict(torch.load(config.paths.combined_model / MODEL_FILE, weights_only=True))
    model.eval()
    x_val, y_val = train_module._tensors(gather_split(products[products["split"] == "val"], *load_branch_exports(config), len(CLASSES)))
    with torch.no_grad():
        assert torch.nn.functional.cross_entropy(model(x_val), y_val).item() == pytest.approx(history[best]["val_loss"], rel=1e-5)


def test_missing_modality_falls_back_to_the_branch_with_input():
    image = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.0, 0.0]], np.float32)
    text = np.array([[0.1, 0.9], [0.7, 0.3], [0.3, 0.7], [0.0, 0.0]], np.float32)
    has_image = np.array([True, True, False, False])
    has_text = np.array([True, False, True, False])
    fused = np.array([[0.6, 0.4]] * 4, np.float32)

    early = combine(image, text, fused, has_image, has_text, EARLY, LateWeights())
    np.testing.assert_allclose(early[0], fused[0])
    np.testing.assert_allclose(early[1], image[1])  # photo only
    np.testing.assert_allclose(early[2], text[2])  # text only
    np.testing.assert_allclose(early[3], [0.5, 0.5])  # nothing: uniform

    late = combine(image, text, None, has_image, has_text, LATE, LateWeights(0.25, 0.75))
    np.testing.assert_allclose(late[0], 0.25 * image[0] + 0.75 * text[0])
    np.testing.assert_allclose(late[2], text[2])  # the mix is only for listings with both
    with pytest.raises(ValueError):
        combine(image, text, None, has_image, has_text, EARLY, LateWeights())
    np.testing.assert_allclose(single_branch(text, has_text)[1], [0.5, 0.5])


def test_gather_rows_per_photo_and_product_mean(tmp_path):
    config = _synthetic_artifacts(tmp_path, n_products=9)
    products = pd.read_json(config.paths.listings, lines=True)
    out = gather(
        products,
        *load_branch_exports(config),
        len(CLASSES),
    )
    photos = products["image_ids"].map(len).to_numpy()
    assert len(out.product_index) == int(np.maximum(photos, 1).sum())
    assert out.has_image.sum() == photos.sum()
    assert out.fusion_input.shape == (len(out.product_index), 32)
    means = per_product(np.arange(len(out.product_index), dtype=np.float32)[:, None], out.product_index, len(products))
    assert means.shape == (len(products), 1)
    with pytest.raises(FileNotFoundError):
        load_export(tmp_path / "nope.npz", "image_ids", "fbm train image")


def test_late_fusion_mixes_in_sharpened_tfidf_probabilities():
    image = np.array([[0.6, 0.4]], np.float32)
    text = np.array([[0.5, 0.5]], np.float32)
    tfidf = np.array([[0.4, 0.6]], np.float32)
    both = np.array([True])
    late = LateWeights(0.2, 0.3, 0.5, 2.0)
    expected = 0.2 * image[0] + 0.3 * text[0] + 0.5 * np.array([0.16, 0.36]) / 0.52
    np.testing.assert_allclose(combine(image, text, None, both, both, LATE, late, tfidf)[0], expected, rtol=1e-5)
    np.testing.assert_allclose(sharpen(tfidf, 1.0), tfidf, rtol=1e-5)
    with pytest.raises(ValueError, match="TF-IDF"):
        combine(image, text, None, both, both, LATE, late)  # weighed but not given
    for bad in (dict(image=0.6, text=0.6), dict(image=-0.1, text=1.1), dict(image=0.5, text=0.5, tfidf_power=0.0)):
        with pytest.raises(ValueError):
            LateWeights(**bad)


def test_evaluation_scores_the_tfidf_model_only_where_the_predictor_did_not():
    """Beside a photo the predictor's batch already scored the TF-IDF model (the served late fusion
    weighs it); evaluation reuses those rows and scores only the other listings' texts."""
    scored = []

    class CountingTfidf:
        classes = ["a", "b"]

        def predict_proba_tokens(self, token_lists):
            scored.append(list(token_lists))
            return np.array([[0.25, 0.75]] * len(token_lists), np.float32)

    view = np.zeros((4, 4, 3), np.uint8)
    prepared = [
        PreparedListing([view, view], ([1], 1), ["with", "photo"], weigh_tfidf=True),
        PreparedListing([], ([2], 1), ["text", "only"]),
        PreparedListing([view], None),  # a photo and no text
    ]
    out = SimpleNamespace(owner=np.array([0, 0, 1, 2]), tfidf_probs=np.array([[0.9, 0.1], [0.9, 0.1], [0, 0], [0, 0]], np.float32))
    probs = listing_tfidf(CountingTfidf(), prepared, out)
    assert scored == [[["text", "only"], []]]  # the tokens the predictor made: the text is not tokenized a second way
    np.testing.assert_allclose(probs, [[0.9, 0.1], [0.9, 0.1], [0.25, 0.75], [0.25, 0.75]])


def test_late_weights_take_tfidf_only_when_it_helps_on_validation(tmp_path):
    def chosen(tfidf_informs: bool) -> tuple[LateWeights, float, float]:
        config = _synthetic_artifacts(tmp_path / str(tfidf_informs), n_products=300, tfidf_informs=tfidf_informs)
        products = pd.read_json(config.paths.listings, lines=True)
        val = gather(products[products["split"] == "val"], *load_branch_exports(config), len(CLASSES))

        def accuracy(weights: LateWeights) -> float:
            rows = combine(val.image_probs, val.text_probs, None, val.has_image, val.has_text, LATE, weights, val.tfidf_probs)
            return float((per_product(rows, val.product_index, len(val.labels)).argmax(1) == val.labels).mean())

        late = choose_late_weights(val, FusionConfig())
        return late, accuracy(late), max(accuracy(LateWeights(w, 1 - w)) for w in np.linspace(0, 1, 21))

    informed, with_tfidf, best_two_branch = chosen(True)
    assert informed.tfidf > 0 and with_tfidf > best_two_branch  # independent evidence: the mix gains
    uninformed, _, _ = chosen(False)
    assert uninformed.tfidf == 0  # uniform TF-IDF probabilities change no ranking: ties go to the two branches


def test_report_lists_the_confident_mistakes_in_one_safe_row_each():
    from combined_model.report import _confident_mistakes

    predictions = pd.DataFrame({
        "product_id": ["a", "b", "c", "d"],
        "title": ["sofa | chair\nset", "lamp", "drill", "<img src=x onerror=alert(1)> **bold** [click](http://e.example) " + "x" * 80],
        "root": ["Home & Garden", "Home & Garden", "DIY Tools & Materials", "Other Goods"],
        "late_fusion": ["Appliances", "Home & Garden", "Home & Garden", "Appliances"],
        "served_correct": [False, True, False, False],
        "served_confidence": [0.6, 0.9, 0.8, 0.5],
        "served_p_root": [0.1, 0.9, 0.15, 0.2],
        "photos_scored": [2, 1, 0, 1],
    })
    lines = _confident_mistakes(predictions, "late_fusion")
    assert lines[0].endswith("(3 of 4 listings wrong)")
    rows = [line for line in lines if line[:4] in ("| a ", "| c ", "| d ")]
    assert rows == [  # surest first; a seller's pipes, line breaks, HTML and Markdown shown as text; long titles cut with …
        "| c | drill | DIY Tools &amp; Materials | Home &amp; Garden | 0.800 | 0.150 | 0 |",
        "| a | sofa \\| chair set | Home &amp; Garden | Appliances | 0.600 | 0.100 | 2 |",
        "| d | &lt;img src=x onerror=alert\\(1\\)&gt; \\*\\*bold\\*\\* \\[click\\]\\(http://e.example\\) xxxxxxxxxxxxxxx… "
        "| Other Goods | Appliances | 0.500 | 0.200 | 1 |",
    ]
    assert not any(line.startswith("| product id") for line in _confident_mistakes(predictions[predictions["served_correct"]], "late_fusion"))


def test_late_grid_holds_the_single_branch_and_tfidf_only_mixes():
    grid = {(w.image, w.text, w.tfidf) for w in late_weight_grid(FusionConfig())}
    assert {(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.5, 0.0, 0.5)} <= grid
    assert len(grid) == 231  # every point of the 0.05 simplex grid
    for step in ("0.3", "0.002"):  # a grid without each branch alone; one of 750,000 mixes
        config = Config()
        config.override(f"fusion.late_weight_step={step}")
        with pytest.raises(ValueError, match="fusion.late_weight_step must divide 1 into whole steps, from 0.01"):
            config.validate()
    coarse = late_weight_grid(FusionConfig(late_weight_step=0.5, tfidf_powers=(1.0, 4.0)))
    assert len(coarse) == 3 + 2 * 2 + 1 * 2  # 3 mixes without TF-IDF; 2 and 1 with weight 0.5 and 1, each at both powers


def _outputs(n: int = 6) -> BranchOutputs:
    labels = np.arange(n) % 3
    right = np.eye(3, dtype=np.float32)[labels] * 0.8 + 0.2 / 3
    ones = np.ones(n, bool)
    return BranchOutputs(labels, np.arange(n), np.zeros((n, 4), np.float32), right, ones, np.zeros((n, 4), np.float32), right.copy(), ones, right.copy())


def test_tied_late_weights_go_to_the_even_two_branch_mix():
    """Every mix is right on every product here: the tie goes to no TF-IDF, then image and text closest to each other."""
    assert choose_late_weights(_outputs(), FusionConfig()) == LateWeights(0.5, 0.5, 0.0, 1.0)


def test_confusion_rows_are_true_classes_and_columns_answers():
    labels = np.array([0, 0, 1, 2])
    pred = np.array([1, 1, 1, NO_ANSWER])
    matrix = confusion(labels, pred, 3)
    assert matrix.tolist() == [[0, 2, 0], [0, 1, 0], [0, 0, 0]]


def test_classified_rows_give_the_runner_ups_own_probability():
    listings = pd.DataFrame({"product_id": ["p1", "p2"], "title": ["sofa", ""], "category": ["", ""]})
    answers = [
        Prediction("a", ["a", "b", "c"], [0.6, 0.3, 0.1], ["text"]),
        Prediction("a", ["a", "b", "c"], [1 / 3] * 3, []),
    ]
    rows = answer_rows(listings, answers)
    assert rows["predicted"].tolist() == ["a", ""] and rows["runner_up"].tolist() == ["b", ""]
    assert rows["probability"].iloc[0] == 0.6 and rows["runner_up_probability"].iloc[0] == 0.3
    assert pd.isna(rows["runner_up_probability"].iloc[1])
    assert rows["low_confidence"].tolist() == [False, None]  # no answer: neither low nor high confidence


def test_each_mode_has_its_own_default_csv():
    assert classified_file("combined") == "classified.csv"
    assert len({classified_file(mode) for mode in ("combined", "image", "text")}) == 3


class _FakePredictor:
    """Answers 'a' from whatever inputs it is given."""

    def prepare(self, images, text, mode="combined", require_input=True):
        return images, text

    def predict_prepared(self, prepared):
        return [Prediction("a", ["a", "b"], [0.9, 0.1], ["image"] * bool(images) + ["text"] * bool(text)) for images, text in prepared]


def test_photo_counts_span_every_batch_and_every_photo_is_read_as_evaluate_reads_them(quirky_dataset: Path, tmp_path, monkeypatch):
    """At most serve.max_photos per listing were read, so a listing of 12 photos got another answer
    than `fbm evaluate` gave it (QA pass 47)."""
    monkeypatch.setattr(classify.Predictor, "load", staticmethod(lambda config: _FakePredictor()))
    monkeypatch.setattr(evaluate_module, "BATCH_LISTINGS", 2)  # mirror + dvd, fridge + bike, chair (listing_batches)
    config = Config()
    config.data.artifacts_dir = str(tmp_path / "artifacts")
    config.serve.max_photos = 2  # the API's limit: the fridge's third photo (img-f3, missing) is read all the same
    images = quirky_dataset / "Images.csv"  # a photo row of the bike's whose id names no file: skipped, and counted as such
    images.write_text(images.read_text(encoding="utf-8") + "90,../../outside,p-bike\n", encoding="utf-8")
    frame, summary = classify_directory(config, str(quirky_dataset))
    assert summary["skipped_images"] == {"truncated": 1, "missing": 1}  # img-f2 and img-f3, in the second of three batches
    assert frame.set_index("product_id")["photos_skipped"].to_dict() == {"p-mirror": 0, "p-dvd": 0, "p-fridge": 2, "p-bike": 1, "p-chair": 0}
    assert frame["photos_used"].tolist() == [2, 0, 1, 1, 1]
    assert "photos skipped: missing" not in format_summary(summary)  # in words, with where a photo is looked for
    assert "no such file (1) (a photo is read as images/<its id>.jpg, named exactly so: not .JPG or .jpeg)" in format_summary(summary)


def _result() -> dict:
    classes = ["a", "b"]
    models = {name: {"accuracy": 0.5 + i / 100, "macro_f1": 0.3 + i / 100, "top3": 0.9 + i / 100} for i, name in enumerate(MODELS)}
    return {
        "source": "somewhere", "n_products": 4, "n_images": 3, "models": models, "served": "late_fusion",
        "either_branch_right": 0.625, "any_late_input_right": 0.875,
        "per_image": {name: dict(m) for name, m in models.items()},
        "per_class": {name: {c: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2} for c in classes} for name in MODELS},
        "confusion": {name: [[1, 1], [1, 1]] for name in MODELS}, "classes": classes,
        "unknown_categories": {"Pets": 2}, "rows_dropped": {}, "seen_in_training": 0, "warnings": [], "skipped_images": {},
        "generated_at": "2025-01-02T03:04Z", "model_versions": {"image": "0123456789ab", "text": "textcnn-cdef"},
        "late_weights": {"image": 0.3, "text": 0.2, "tfidf": 0.5, "tfidf_power": 4.0},
    }


def _predictions() -> pd.DataFrame:
    return pd.DataFrame({
        "product_id": ["p1", "p2"], "title": ["sofa", "drill"], "category": ["a / x", "b / y"], "root": ["a", "b"],
        "photos_scored": [1, 2], "late_fusion": ["b", "b"], "served_correct": [False, True],
        "served_confidence": [0.8, 0.9], "served_p_root": [0.2, 0.9],
    })


def test_the_printed_table_shows_each_figure_in_its_column():
    lines = format_table(_result()).splitlines()
    image = next(line for line in lines if line.startswith("image "))
    assert image.split()[1:4] == ["0.500", "0.300", "0.900"]
    assert next(line for line in lines if line.startswith("either branch right")).split()[3] == "0.625"
    assert next(line for line in lines if line.startswith("any late input")).split()[3] == "0.875"
    assert "skipped listings with categories the model does not know: Pets (2)" in lines


def test_the_report_holds_the_figures_the_unknown_categories_and_its_curves(tmp_path):
    config = Config()
    config.data.artifacts_dir = str(tmp_path / "artifacts")
    config.paths.image_model.mkdir(parents=True)
    (config.paths.image_model / CURVES_FILE).write_bytes(b"png")
    out_dir = tmp_path / "reports"
    out_dir.mkdir()
    report = write_report(config, _result(), _predictions(), out_dir).read_text()
    assert "| image | 0.500 | 0.300 | 0.900 | 0.500 |" in report
    assert "Listings skipped for an unknown category: Pets 2" in report
    curves = [line for line in report.splitlines() if "training curves](" in line]
    assert len(curves) == 1 and (out_dir / curves[0].split("](")[1].rstrip(")")).is_file()
    assert "## Retrieval" not in report  # `fbm index --evaluate` wrote nothing here


def test_the_report_says_when_and_from_which_models_it_was_made_and_what_each_model_is(tmp_path):
    """A stale report could not be told apart, and its table named models and columns it did not explain (QA pass 60)."""
    config = Config()
    config.data.artifacts_dir = str(tmp_path / "artifacts")
    report = write_report(config, _result(), _predictions(), tmp_path).read_text().splitlines()
    assert report[2].startswith("Generated 2025-01-02T03:04Z (UTC) from the trained models image `0123456789ab`, text `textcnn-cdef`")
    key = [line for line in report if line.startswith("- **")]
    assert [line.split("**")[1] for line in key] == list(MODELS)
    assert "weights chosen on validation: image=0.3, text=0.2, tfidf=0.5 (sharpened p^4)" in next(line for line in key if "late_fusion" in line)
    assert any(line.startswith("**late_fusion** is served") and "Photo-level accuracy counts each photo once" in line for line in report)
    assert "| product id | title | true category | late_fusion answered | confidence in its answer | probability of the true category | photos scored |" in report


def test_the_report_gives_the_retrieval_figures_written_beside_it(tmp_path):
    config = Config()
    config.data.artifacts_dir = str(tmp_path / "artifacts")
    figures = {"k": 10, "catalogue": 5189, "test_listings": 909, "chance_precision": 0.0802, "chance_path_precision": 0.0119}
    for mode, precision, path_precision, queries in (("photo", 0.5603, 0.2642, 891), ("text", None, None, 0)):
        figures |= {f"precision@10_{mode}": precision, f"path_precision@10_{mode}": path_precision, f"queries_{mode}": queries}
    (tmp_path / "retrieval_evaluation.json").write_text(json.dumps(figures))
    report = write_report(config, _result(), _predictions(), tmp_path).read_text().splitlines()
    section = report[report.index("## Retrieval") : report.index("## Training curves and the word vectors")]
    assert "| photo | 0.560 | 0.264 | 891 |" in section and "| text | — | — | 0 |" in section  # no query of a kind: a dash
    assert "![retrieval precision](retrieval_precision.png)" in section and "![retrieval examples](retrieval_examples.png)" in section
    assert any("5,189 train and validation listings" in line and "(chance 0.080)" in line for line in section)


def test_the_metrics_name_each_trained_model_by_its_weights_file(tmp_path):
    from combined_model.evaluate import model_versions

    config = Config()
    config.data.artifacts_dir = str(tmp_path)
    paths = config.paths
    files = [paths.image_model / "model.pt", paths.text_model / "model.pt", paths.combined_model / "model.pt",
             paths.text_model / "tfidf_svm" / "baseline.npz", paths.image_model / "hog_svm.npz"]
    for i, path in enumerate(files):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([i]))
    versions = model_versions(config)
    assert list(versions) == ["image", "text", "combined", "tfidf_baseline", "hog_svm_baseline"]
    assert versions["image"] == "6e340b9cffb3"  # sha256(b"\x00")
    assert len(set(versions.values())) == 5


def test_a_photo_models_confusion_panel_says_what_its_accuracy_counts_that_it_does_not_show():
    """The panel shows the 891 products with a photo; its accuracy counts the 18 without as wrong (QA pass 60)."""
    from combined_model.report import panel_title

    assert panel_title("image", 0.5913, 891, 909) == "image: accuracy 0.591\n(891 with a photo shown; 18 without, counted wrong, not shown)"
    assert panel_title("text", 0.79, 905, 909).endswith("(905 answered shown; 4 unanswered, counted wrong, not shown)")
    assert panel_title("late_fusion", 0.839, 909, 909) == "late_fusion: accuracy 0.839"


def test_a_confusion_cell_shows_its_share_from_three_in_a_hundred_in_a_colour_that_reads_on_it():
    from combined_model.report import _write_shares

    written = []
    ax = SimpleNamespace(text=lambda x, y, text, color, **_: written.append((y, x, text, color)))
    _write_shares(ax, np.array([[0.9, 0.1], [0.029, 0.971]]))
    assert [(row, col, text) for row, col, text, _ in written] == [(0, 0, ".90"), (0, 1, ".10"), (1, 1, ".97")]
    assert written[0][3] == "white" and written[1][3] != "white"  # light on the dark diagonal, dark on a light cell


def test_the_comparison_chart_is_read_against_chance_and_the_ceilings_it_has():
    from combined_model.report import reference_lines

    lines = reference_lines(_result())
    assert [(round(value, 3), label.split(":")[0]) for value, label, _ in lines] == [
        (0.5, "chance, 1 in 2"), (0.625, "ceiling, image or text right"), (0.875, "ceiling, image, text or TF-IDF right")
    ]
    without = {key: value for key, value in _result().items() if key != "any_late_input_right"}
    assert len(reference_lines(without)) == 2


def test_per_class_f1_sorts_the_categories_by_the_served_model_and_draws_it_in_black(tmp_path, monkeypatch):
    import matplotlib.axes

    from combined_model import report

    labels, colours = [], {}
    monkeypatch.setattr(matplotlib.axes.Axes, "set_yticks", lambda self, ticks, names=None, **_: labels.append(list(names)))
    barh = matplotlib.axes.Axes.barh

    def noted_barh(self, *args, color, label, **kwargs):
        colours[label] = color
        return barh(self, *args, color=color, label=label, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "barh", noted_barh)
    f1 = {"late_fusion": {"a": 0.2, "b": 0.9, "c": 0.5}, "image": {"a": 0.9, "b": 0.1, "c": 0.3}}
    result = {
        "classes": ["a", "b", "c"], "served": "late_fusion",
        "per_class": {name: {c: {"f1": value, "support": 4} for c, value in scores.items()} for name, scores in f1.items()},
    }
    report._per_class_f1(result, ["image", "late_fusion"], tmp_path / "f1.png")
    assert labels == [["b (4)", "c (4)", "a (4)"]]
    assert colours == {"image": "#E69F00", "late_fusion (served)": "#000000"}


def test_predictions_give_the_served_models_probability_of_the_true_category():
    listings = pd.DataFrame({"product_id": ["p1", "p2"], "title": ["sofa", "drill"], "category": ["a / x", "b / y"], "label": [1, 1]})
    probs = np.array([[0.7, 0.3], [0.1, 0.9]], np.float32)
    frame = listing_predictions(listings, ["a", "b"], {"late_fusion": probs}, "late_fusion", np.array([1, 0]))
    assert frame["served_confidence"].tolist() == pytest.approx([0.7, 0.9])
    assert frame["served_p_root"].tolist() == pytest.approx([0.3, 0.9])
    assert frame["served_correct"].tolist() == [False, True] and frame["late_fusion"].tolist() == ["a", "b"]


@pytest.mark.parametrize("seen, verb", [(["p1"], "is"), (["p1", "p2"], "are")])
def test_the_fairness_warning_counts_in_words(seen, verb):
    from combined_model.evaluate import EvalSet, fairness_warnings

    assert fairness_warnings(EvalSet(pd.DataFrame(), Path("."), {}, "new", seen), 6)[0].startswith(f"{len(seen)} of these 6 listings {verb} in the splits")
    assert fairness_warnings(EvalSet(pd.DataFrame(), Path("."), {}, "new", []), 6) == []


def test_the_fusion_refuses_branches_trained_on_other_categories(tmp_path):
    """`fbm prepare` on other data since the branches trained: their class indices would name other
    categories (a numpy shape error before, when the counts differed)."""
    config = _synthetic_artifacts(tmp_path)
    (config.paths.text_model / "model.json").write_text(json.dumps({"classes": [*CLASSES, "Toys"]}))
    with pytest.raises(ValueError, match=r"the text branch was trained on 4 categories \(.*Toys\), but the listings prepared in .* have 3"):
        train_combined(config)


def test_each_confusion_matrix_names_the_product_counts_of_its_own_model(tmp_path, monkeypatch):
    """The photo models score only the products with a photo: a panel counted by another model's rows was wrong."""
    import matplotlib.axes

    from combined_model import report

    labels = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_yticks", lambda self, ticks, names=None, **_: labels.append(list(names)))
    result = {
        "classes": ["a", "b"],
        "confusion": {"image": [[3, 1], [0, 2]], "text": [[4, 1], [0, 3]]},
        "models": {"image": {"accuracy": 0.8}, "text": {"accuracy": 0.9}},
        "n_products": 8,
    }
    report._confusion_grid(result, ["image", "text"], tmp_path / "confusion.png")
    assert labels == [["a (4)", "b (2)"], ["a (5)", "b (3)"]]


def test_a_report_folder_is_named_without_the_control_characters_of_its_dataset_folder(tmp_path: Path):
    """`--data $'odd name\\nwith ünï'` made a folder whose printed name ran over two lines."""
    config = Config()
    config.data.artifacts_dir = str(tmp_path / "artifacts")
    odd, plain = tmp_path / "odd name\nwith ünï\x1b[31m", tmp_path / "odd name_with ünï_[31m"
    name = report_dir(config, str(odd)).name
    assert name.startswith("data-odd name_with ünï_[31m-") and name != report_dir(config, str(plain)).name  # the digest is of the path as it is


def test_the_fusion_curves_say_whether_the_fusion_classifier_is_served():
    """Titled "Fusion", the curves read as the served model's, which late fusion often is."""
    assert curves_title(LATE) == "Early fusion (fusion classifier) (not served: late fusion was better on validation)"
    assert curves_title(EARLY) == "Early fusion (fusion classifier)"
