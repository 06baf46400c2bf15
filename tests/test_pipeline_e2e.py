"""The whole pipeline on a tiny real subset: every stage's artifacts, `fbm evaluate --data`, `fbm similar`."""
from __future__ import annotations

import copy
import io
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from combined_model.evaluate import MODELS, report_dir
from combined_model.fusion import EARLY
from listings.data import listing_text, read_dataset
from scripts.cli import main


def _settings(config) -> list[str]:
    return ["--artifacts", config.data.artifacts_dir]


def test_train_skips_a_stage_trained_from_the_same_inputs_settings_and_code(trained_pipeline, tmp_path, capsys):
    """`make run` again: a stage whose fingerprint is unchanged is skipped; a changed setting, a
    changed input, a missing output or --force trains it again."""
    config, _ = trained_pipeline
    artifacts = shutil.copytree(config.paths.root, tmp_path / "artifacts", ignore=shutil.ignore_patterns("cache"))  # others read the shared one
    argv = ["train", "combined", "--artifacts", str(artifacts)]
    model = artifacts / "combined_model" / "model.pt"

    def trained(extra: list[str] = []) -> bool:
        before = model.stat().st_mtime_ns
        assert main([*argv, *extra]) == 0
        skipped = "== combined == up to date" in capsys.readouterr().err
        assert skipped == (model.stat().st_mtime_ns == before)
        return not skipped

    assert trained()  # no fingerprint recorded yet
    assert not trained()
    assert trained(["--set", "fusion.dropout=0.4"]) and not trained(["--set", "fusion.dropout=0.4"])
    assert trained(["--set", "fusion.dropout=0.4", "--force"])
    summary = artifacts / "text_model" / "summary.json"
    summary.write_text(summary.read_text() + " ")  # an input of the fusion: the text branch's outputs
    assert main(["classify", "--artifacts", str(artifacts), "--text", "oak chair"]) == 0  # until retrained, the fusion is named stale
    assert "combined_model is out of date (trained from other branches or prepared listings): run `fbm train all`" in capsys.readouterr().err
    assert trained(["--set", "fusion.dropout=0.4"])
    (artifacts / "combined_model" / "curves.png").unlink()
    assert trained(["--set", "fusion.dropout=0.4"])
    sidecar = artifacts / "combined_model" / "model.json"
    sidecar.write_text(sidecar.read_text().replace('"late"', '"xxxx"'))  # an output changed, its size the same
    assert trained(["--set", "fusion.dropout=0.4"])


def test_a_stage_interrupted_or_edited_while_training_is_not_up_to_date(trained_pipeline, tmp_path, monkeypatch, capsys):
    """The record goes before a stage runs and the fingerprint is taken before it starts: a stage
    stopped half-way, or whose code changed while it trained, trains again next time."""
    import combined_model.train
    import scripts.freshness

    config, _ = trained_pipeline
    artifacts = shutil.copytree(config.paths.root, tmp_path / "artifacts", ignore=shutil.ignore_patterns("cache"))
    argv = ["train", "combined", "--artifacts", str(artifacts)]
    assert main(argv) == 0
    real_train = combined_model.train.train_combined

    def refused(stage_config):
        raise ValueError("a setting this stage refuses before it writes anything")

    monkeypatch.setattr(combined_model.train, "train_combined", refused)
    assert main([*argv, "--force"]) == 2
    monkeypatch.setattr(combined_model.train, "train_combined", real_train)
    capsys.readouterr()
    assert main(argv) == 0 and "up to date" in capsys.readouterr().err  # the model it had is still the one recorded

    def interrupted(stage_config):
        model = artifacts / "combined_model" / "model.pt"
        model.write_bytes(b"\0" * model.stat().st_size)  # rewritten in place, not yet with the new weights
        raise KeyboardInterrupt

    monkeypatch.setattr(combined_model.train, "train_combined", interrupted)
    assert main([*argv, "--force"]) == 130
    monkeypatch.setattr(combined_model.train, "train_combined", real_train)
    capsys.readouterr()
    assert main(argv) == 0 and "up to date" not in capsys.readouterr().err  # not skipped with a half-written model

    def edited_while_training(stage_config):
        summary = real_train(stage_config)
        monkeypatch.setattr(scripts.freshness, "REQUIREMENTS", Path(__file__))  # as if `git pull` changed the pins meanwhile
        return summary

    monkeypatch.setattr(combined_model.train, "train_combined", edited_while_training)
    assert main([*argv, "--force"]) == 0
    monkeypatch.setattr(combined_model.train, "train_combined", real_train)
    capsys.readouterr()
    assert main(argv) == 0 and "up to date" not in capsys.readouterr().err  # the change was not trained: it is now
    assert main(argv) == 0 and "up to date" in capsys.readouterr().err


def test_a_search_names_an_index_built_from_other_branches(trained_pipeline, tmp_path, capsys):
    """A branch retrained after `fbm index` leaves the index holding the old embeddings and words:
    `fbm similar` and `fbm serve` say so until `fbm index` rebuilds it; `fbm classify` uses no index."""
    config, _ = trained_pipeline
    artifacts = shutil.copytree(config.paths.root, tmp_path / "artifacts", ignore=shutil.ignore_patterns("cache"))
    settings = ["--artifacts", str(artifacts)]
    stale = "is out of date (built from other models or listings): run `fbm index`"
    assert main(["index", *settings, "--set", "index.max_k=5"]) == 0  # -k is --evaluate's: its default of 10 is not checked
    assert main(["similar", *settings, "--text", "oak chair"]) == 0 and stale not in capsys.readouterr().err
    export = artifacts / "text_model" / "summary.json"
    export.write_text(export.read_text() + " ")  # as if the text branch had been retrained
    assert main(["similar", *settings, "--text", "oak chair"]) == 0 and stale in capsys.readouterr().err
    assert main(["classify", *settings, "--text", "oak chair"]) == 0 and stale not in capsys.readouterr().err
    assert main(["index", *settings]) == 0 and stale not in capsys.readouterr().err
    assert main(["similar", *settings, "--text", "oak chair"]) == 0 and stale not in capsys.readouterr().err


def _dataset_of_roots(source: Path, target: Path, n_roots: int) -> Path:
    """The listings of `source`'s first `n_roots` root categories, with their photos."""
    read = lambda name: pd.read_csv(source / name, lineterminator="\n", dtype=str, keep_default_na=False, index_col=0)  # noqa: E731
    products, images = read("Products.csv"), read("Images.csv")
    roots = products["category"].str.split(" / ").str[0]
    kept = products[roots.isin(sorted(roots.unique())[:n_roots])]
    photos = images[images["product_id"].isin(kept["id"])]
    (target / "images").mkdir(parents=True)
    kept.to_csv(target / "Products.csv", lineterminator="\n")
    photos.to_csv(target / "Images.csv", lineterminator="\n")
    for image_id in photos["id"]:
        shutil.copyfile(source / "images" / f"{image_id}.jpg", target / "images" / f"{image_id}.jpg")
    return target


def test_listings_prepared_again_from_other_data_are_refused_where_the_models_do_not_fit_them(trained_pipeline, tmp_path, capsys):
    """`fbm prepare` run on another dataset into a trained folder: the models' class indices would
    name other categories (evaluate crashed, or renamed every answer), the fusion failed on a numpy
    shape, and `fbm index` replaced a working index with one of only the listings it had embeddings for."""
    config, unseen = trained_pipeline
    artifacts = shutil.copytree(config.paths.root, tmp_path / "artifacts", ignore=shutil.ignore_patterns("cache"))
    settings = ["--artifacts", str(artifacts)]
    fewer = _dataset_of_roots(Path(config.data.data_dir), tmp_path / "fewer", 3)
    assert main(["train", "combined", *settings]) == 0  # trained with a record: up to date until its inputs change
    assert main(["prepare", "--data", str(fewer), *settings]) == 0
    capsys.readouterr()
    mismatch = r"was trained on \d+ categories \(.*\), but the listings prepared in .* have 3 categories \(.*\): `fbm prepare` ran on other data since"
    assert main(["evaluate", *settings]) == 2
    assert re.search("the served model " + mismatch, capsys.readouterr().err)
    assert main(["train", "combined", *settings]) == 2  # its inputs changed: it trains, and refuses
    assert re.search("the image branch " + mismatch, capsys.readouterr().err)

    index_files = sorted(path.name for path in (artifacts / "index").iterdir())
    assert main(["prepare", "--data", str(unseen), *settings]) == 0
    capsys.readouterr()
    assert main(["index", *settings]) == 2
    assert re.search(r"\d+ of the \d+ prepared listings .* have no embedding in .*text_model: the branches were trained on other listings", capsys.readouterr().err)
    assert sorted(path.name for path in (artifacts / "index").iterdir()) == index_files  # the index it had is untouched


def test_a_training_device_is_named_as_such_where_the_models_run_on_the_cpu(trained_pipeline, capsys):
    config, _ = trained_pipeline
    argv = ["classify", "--artifacts", str(config.paths.root), "--set", "image.device=cuda", "--text", "oak chair"]
    assert main(argv) == 0
    assert "image.device=cuda is where the image branch trains; fbm classify runs the trained models on the CPU" in capsys.readouterr().err


def test_every_stage_leaves_its_artifacts(trained_pipeline):
    config, _ = trained_pipeline
    paths = config.paths
    for path in (
        paths.listings,
        paths.categories,
        paths.image_model / "model.pt",
        paths.image_model / "image_embeddings.npz",
        paths.image_model / "curves.png",
        paths.text_model / "model.pt",
        paths.text_model / "word2vec.bin",
        paths.text_model / "word2vec_tsne.png",
        paths.combined_model / "model.pt",
        paths.index / "CURRENT",
    ):
        assert path.exists(), path


def test_evaluate_on_an_unseen_directory_writes_the_documented_json(trained_pipeline, tmp_path, capsys):
    config, unseen = trained_pipeline
    out = tmp_path / "metrics.json"
    assert main(["evaluate", *_settings(config), "--data", str(unseen), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tfidf_baseline" in printed
    written = printed.splitlines()[-1]
    assert written.startswith("written: ") and "report.md" in written and written.endswith(f"metrics.json, {report_dir(config, str(unseen)) / 'predictions.csv'}, {out}")
    result = json.loads(out.read_text())
    n_products = len(pd.read_csv(unseen / "Products.csv", lineterminator="\n"))
    assert result["n_products"] == n_products
    assert result["n_images"] == len(list((unseen / "images").glob("*.jpg")))
    assert set(result["models"]) == set(MODELS)
    assert result["served"] in ("combined", "late_fusion")
    for model, metrics in result["models"].items():
        for name in ("accuracy", "macro_f1", "top3"):
            assert 0.0 <= metrics[name] <= 1.0, (model, name, metrics[name])
        assert metrics["top3"] >= metrics["accuracy"]
    models, ulp = result["models"], 1e-12  # shares of the same products, summed in floating point
    assert max(models["image"]["accuracy"], models["text"]["accuracy"]) <= result["either_branch_right"] <= 1.0
    assert result["either_branch_right"] <= models["image"]["accuracy"] + models["text"]["accuracy"] + ulp
    assert result["either_branch_right"] <= result["any_late_input_right"] <= 1.0
    assert models["tfidf_baseline"]["accuracy"] <= result["any_late_input_right"]

    reports = report_dir(config, str(unseen))
    predictions = pd.read_csv(reports / "predictions.csv", dtype=str, keep_default_na=False)
    products = pd.read_csv(unseen / "Products.csv", lineterminator="\n")
    assert sorted(predictions["product_id"]) == sorted(products["id"])
    assert set(MODELS) <= set(predictions.columns) and predictions["photos_scored"].astype(int).sum() == result["n_images"]
    for name in MODELS:  # each model's column holds the answers its accuracy was computed from
        assert (predictions[name] == predictions["root"]).mean() == pytest.approx(models[name]["accuracy"])
    served_method = json.loads((config.paths.combined_model / "model.json").read_text())["served_method"]
    assert result["served"] == ("combined" if served_method == EARLY else "late_fusion")  # the model `/combined` answers with
    served = predictions[result["served"]]
    assert (predictions["served_correct"] == (served == predictions["root"]).map(str)).all()
    for ceiling, inputs in (("either_branch_right", ["image", "text"]), ("any_late_input_right", ["image", "text", "tfidf_baseline"])):
        right = pd.concat([predictions[name] == predictions["root"] for name in inputs], axis=1).any(axis=1)
        assert result[ceiling] == pytest.approx(right.mean())
    assert (predictions["served_confidence"].astype(float) >= predictions["served_p_root"].astype(float)).all()
    assert all(category.startswith(root) for category, root in zip(predictions["category"], predictions["root"]))  # the full path
    report = (reports / "report.md").read_text()
    assert "![word2vec: the text branch's most frequent words" in report and (reports / "word2vec_tsne.png").exists()  # the map no report showed
    assert f"most confident mistakes ({(predictions['served_correct'] == 'False').sum()} of {n_products} listings wrong)" in report


def test_evaluating_another_directory_keeps_the_test_split_report(trained_pipeline, tmp_path):
    config, unseen = trained_pipeline
    reports = config.paths.reports
    assert main(["evaluate", *_settings(config)]) == 0
    test_split = (reports / "metrics.json").read_text()
    assert main(["evaluate", *_settings(config), "--data", str(unseen)]) == 0
    assert (reports / "metrics.json").read_text() == test_split
    (other_dir,) = reports.glob(f"data-{unseen.name}-*")
    other = json.loads((other_dir / "metrics.json").read_text())
    assert other["source"] == str(unseen) and (other_dir / "report.md").exists()
    namesake = shutil.copytree(unseen, tmp_path / "elsewhere" / unseen.name)  # same name, another folder
    products = pd.read_csv(namesake / "Products.csv", lineterminator="\n", dtype=str, keep_default_na=False)
    products.drop(columns=["price", "location"]).to_csv(namesake / "Products.csv", index=False)  # which no model reads
    assert main(["evaluate", *_settings(config), "--data", str(namesake)]) == 0
    assert json.loads((other_dir / "metrics.json").read_text())["source"] == str(unseen)
    (namesake_dir,) = set(reports.glob(f"data-{unseen.name}-*")) - {other_dir}
    assert json.loads((namesake_dir / "metrics.json").read_text())["models"] == other["models"]


def test_a_directory_without_images_csv_is_a_clear_error(trained_pipeline, tmp_path, capsys):
    config, unseen = trained_pipeline
    data = tmp_path / "text_only"
    data.mkdir()
    (data / "Products.csv").write_bytes((unseen / "Products.csv").read_bytes())
    (data / "images").mkdir()
    assert main(["evaluate", *_settings(config), "--data", str(data)]) == 2
    assert "Images.csv not found" in capsys.readouterr().err
    assert main(["classify", *_settings(config), "--data", str(data)]) == 2
    assert "Images.csv not found: a dataset directory needs Products.csv, Images.csv and images/; `--mode text` answers" in capsys.readouterr().err
    assert main(["evaluate", *_settings(config), "--data", str(unseen / "Products.csv")]) == 2
    assert "Products.csv is a file: give the dataset's directory" in capsys.readouterr().err


def test_the_test_split_is_scored_on_the_photos_prepare_cleaned(trained_pipeline, tmp_path, capsys):
    """Not on `data.data_dir`'s photos: after `prepare --data DIR`, a plain `fbm evaluate` has the
    default dataset there (or none), and its photos were skipped as missing."""
    config, _ = trained_pipeline
    out = tmp_path / "metrics.json"
    elsewhere = ["--set", f"data.data_dir={tmp_path / 'no-dataset-here'}"]
    assert main(["evaluate", *_settings(config), *elsewhere, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    test_photos = sum(len(ids) for ids in pd.read_json(config.paths.listings, lines=True).query("split == 'test'")["image_ids"])
    assert result["skipped_images"] == {} and result["n_images"] == test_photos > 0


def test_evaluation_data_without_photos_writes_strict_json(trained_pipeline, tmp_path, capsys):
    """Photo-level figures over no photo are null, not NaN (which JSON.parse and jq refuse)."""
    config, unseen = trained_pipeline
    data, products = _copy_with_own_products(unseen, tmp_path / "no_photos")
    products.to_csv(data / "Products.csv", lineterminator="\n")
    (data / "Images.csv").write_text("id,product_id\n")
    out = tmp_path / "metrics.json"
    assert main(["evaluate", *_settings(config), "--data", str(data), "--json", str(out)]) == 0
    result = json.loads(out.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert result["n_images"] == 0 and result["per_image"]["image"] == {"accuracy": None, "macro_f1": None, "top3": None}
    printed = capsys.readouterr().out
    assert "no usable photo" in printed and "nan" not in printed
    for model in ("image", "hog_svm_baseline"):  # no photo: no answer, wrong (not the first category's guess)
        assert result["models"][model] == {"accuracy": 0.0, "macro_f1": 0.0, "top3": 0.0}
    assert result["either_branch_right"] == result["models"]["text"]["accuracy"]
    predictions = pd.read_csv(report_dir(config, str(data)) / "predictions.csv", dtype=str, keep_default_na=False)
    assert (predictions["image"] == "").all() and (predictions["hog_svm_baseline"] == "").all() and (predictions["text"] != "").all()
    assert (predictions["photos_scored"] == "0").all()


def _copy_with_own_products(unseen: Path, data: Path) -> tuple[Path, pd.DataFrame]:
    """A dataset directory sharing `unseen`'s photos, and `unseen`'s products for the test to change and write."""
    data.mkdir()
    (data / "images").symlink_to(unseen / "images")
    (data / "Images.csv").write_bytes((unseen / "Images.csv").read_bytes())
    return data, pd.read_csv(unseen / "Products.csv", lineterminator="\n", dtype=str, index_col=0)


def test_an_unknown_category_in_evaluation_data_is_reported_not_fatal(trained_pipeline, tmp_path):
    config, unseen = trained_pipeline
    data, products = _copy_with_own_products(unseen, tmp_path / "with_unknown")
    products.loc[products.index[0], "category"] = "Pets / Dogs"
    products.to_csv(data / "Products.csv", lineterminator="\n")
    out = tmp_path / "metrics.json"
    assert main(["evaluate", *_settings(config), "--data", str(data), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n_products"] == len(products) - 1
    assert result["unknown_categories"] == {"Pets": 1}


def test_rows_left_out_of_evaluation_data_are_reported(trained_pipeline, tmp_path, capsys):
    """As `fbm prepare` does: rows with a repeated or unusable id are counted in the table and the
    JSON; when no row is left, the error says why, not that the categories are unknown."""
    config, unseen = trained_pipeline
    data, products = _copy_with_own_products(unseen, tmp_path / "with_repeats")
    pd.concat([products, products.head(2)], ignore_index=True).to_csv(data / "Products.csv", lineterminator="\n")
    out = tmp_path / "metrics.json"
    assert main(["evaluate", *_settings(config), "--data", str(data), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n_products"] == len(products) and result["rows_dropped"] == {"products: id repeated (the first row kept)": 2}
    assert "CSV rows left out: products: id repeated (the first row kept) (2)" in capsys.readouterr().out

    products.assign(id="../" + products["id"]).to_csv(data / "Products.csv", lineterminator="\n")
    assert main(["evaluate", *_settings(config), "--data", str(data)]) == 2
    error = capsys.readouterr().err
    assert "no listing to evaluate (CSV rows left out: " in error and "products: id not a token of letters, digits, - and _ (" in error and "categor" not in error


def test_unreadable_photos_are_counted_and_listings_seen_in_training_flagged(trained_pipeline, tmp_path, capsys):
    """A missing and a corrupt photo are skipped and counted; listings of the training and
    validation splits are scored but named, as their figures flatter the models."""
    config, unseen = trained_pipeline
    data = tmp_path / "mixed"
    (data / "images").mkdir(parents=True)
    products = pd.read_csv(unseen / "Products.csv", lineterminator="\n", dtype=str, index_col=0)
    images = pd.read_csv(unseen / "Images.csv", lineterminator="\n", dtype=str, index_col=0)
    prepared = pd.read_json(config.paths.listings, lines=True)
    chosen_ids = [*prepared.query("split == 'train'")["product_id"].head(2), *prepared.query("split == 'val'")["product_id"].head(1)]
    trained = pd.read_csv(Path(config.data.data_dir) / "Products.csv", lineterminator="\n", dtype=str, index_col=0)
    trained = trained[trained["id"].isin(chosen_ids)]
    assert len(trained) == 3
    trained_images = pd.read_csv(Path(config.data.data_dir) / "Images.csv", lineterminator="\n", dtype=str, index_col=0)
    trained_images = trained_images[trained_images["product_id"].isin(trained["id"])]
    # and one posted again: a new product id and photo id, the same photo file as a training listing's
    reposted = trained.head(1).assign(id="reposted-1")
    reposted_image = pd.DataFrame({"id": ["reposted-photo"], "product_id": ["reposted-1"]})
    pd.concat([products, trained, reposted], ignore_index=True).to_csv(data / "Products.csv", lineterminator="\n")
    pd.concat([images, trained_images, reposted_image], ignore_index=True).to_csv(data / "Images.csv", lineterminator="\n")
    for directory, ids in ((unseen / "images", images["id"]), (Path(config.data.data_dir) / "images", trained_images["id"])):
        for image_id in ids:
            (data / "images" / f"{image_id}.jpg").symlink_to(directory / f"{image_id}.jpg")
    (data / "images" / "reposted-photo.jpg").symlink_to(data / "images" / f"{trained_images['id'].iloc[0]}.jpg")
    missing, corrupt = images["id"].iloc[0], images["id"].iloc[1]
    (data / "images" / f"{missing}.jpg").unlink()
    (data / "images" / f"{corrupt}.jpg").unlink()
    (data / "images" / f"{corrupt}.jpg").write_bytes(b"not a jpeg")

    out = tmp_path / "metrics.json"
    assert main(["evaluate", *_settings(config), "--data", str(data), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["skipped_images"] == {"missing": 1, "not_an_image": 1}
    assert result["n_products"] == len(products) + 4 and result["seen_in_training"] == 4
    seen = [*trained["id"], "reposted-1"]
    printed = capsys.readouterr().out
    assert "warning: 4 of these" in printed and all(product_id in printed for product_id in seen)
    reports = report_dir(config, str(data))
    assert "**Warning:** 4 of these" in (reports / "report.md").read_text()
    predictions = pd.read_csv(reports / "predictions.csv", dtype=str, keep_default_na=False)
    assert set(predictions.loc[predictions["seen_in_training"] == "True", "product_id"]) == set(seen)


def test_similar_by_text_lists_catalogue_listings(trained_pipeline, capsys):
    config, _ = trained_pipeline
    assert main(["similar", *_settings(config), "--text", "oak dining table", "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("query: predicted")
    assert sum(bool(re.match(r"\s+\d+\s+[01]\.\d{3}\s", line)) for line in lines) == 3
    photo = next(config.paths.clean_images(config.data.image_size).glob("*.jpg"))
    assert main(["similar", *_settings(config), "--text", "zzzqqq xxyyzz", "--image", str(photo), "-k", "2"]) == 0
    assert "from image; the text is not used: the model knows none of its words" in capsys.readouterr().out  # as the page notes it


def test_similar_like_an_indexed_listing(trained_pipeline, capsys, monkeypatch):
    config, _ = trained_pipeline
    assert main(["similar", *_settings(config), "--text", "oak dining table", "-k", "1"]) == 0
    product_id = capsys.readouterr().out.splitlines()[-1].split()[-1]  # the product id ends each result
    assert main(["similar", *_settings(config), "--like", product_id, "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = " ".join(line.strip() for line in lines[: next(i for i, line in enumerate(lines) if "similar listing" in line)])  # wrapped to the terminal
    assert head.startswith("listings like: ") and product_id in head
    rows = [line for line in lines if re.match(r"\s+\d+\s+[01]\.\d{3}\s", line)]
    assert len(rows) == 3 and not any(row.endswith(product_id) for row in rows)
    assert main(["similar", *_settings(config), "--like", f" {product_id} ", "-k", "3"]) == 0  # pasted with spaces
    assert capsys.readouterr().out.splitlines() == lines
    monkeypatch.setenv("COLUMNS", "60")  # a narrow terminal: every line within it, the one above the table too
    assert main(["similar", *_settings(config), "--like", product_id, "-k", "3"]) == 0
    assert max(map(len, capsys.readouterr().out.splitlines())) <= 60
    assert main(["similar", *_settings(config), "--like", "no-such-listing"]) == 2
    assert "no listing 'no-such-listing'" in capsys.readouterr().err
    assert main(["similar", *_settings(config), "--like", product_id, "--set", "index.max_k=2"]) == 0  # the default 10 is over max_k: 2
    assert len([line for line in capsys.readouterr().out.splitlines() if re.match(r"\s+\d+\s+[01]\.\d{3}\s", line)]) == 2
    assert main(["similar", *_settings(config), "--like", product_id, "--text", "oak"]) == 2
    assert "without --text or --image" in capsys.readouterr().err


def test_similar_checks_its_filters_as_the_api_does(trained_pipeline, capsys):
    config, unseen = trained_pipeline
    photo = str(next((unseen / "images").glob("*.jpg")))
    for argv, message in [
        (["--category", "Furniture"], "unknown category 'Furniture'; known: "),
        (["--category", "Home & Garden / Attic"], "no listing in category 'Home & Garden / Attic'; 'Home & Garden' has: "),
        (["-k", "0"], "-k must be between 1 and 100, got 0"),
        (["--min-price", "20", "--max-price", "10"], "--min-price 20 is above --max-price 10"),
        (["--max-price", "nan"], "--max-price: 'nan' is not a price: give pounds, such as 45, 45.50 or £1,234.00"),
        (["--min-price=-5"], "--min-price: '-5' is not a price"),
        (["--max-price", "1e13"], "--max-price: '1e13' is not a price"),  # above the most a price can be, as the API says
        (["--image", str(config.paths.reports.parent)], f"--image {config.paths.reports.parent}: not a file\n"),
        (["--category", " "], "--category is empty"),
        (["--set", "data.image_size=200000", "--image", photo], "data.image_size is 200000: set data.image_size="),  # before cleaning at that size
    ]:
        assert main(["similar", *_settings(config), "--text", "oak dining table", *argv]) == 2
        assert message in capsys.readouterr().err, argv
    assert main(["similar", *_settings(config), "--text", "zzzz qqqq"]) == 2
    assert "no word the model knows" in capsys.readouterr().err


def test_index_evaluation_prints_its_figures(trained_pipeline, capsys):
    config, _ = trained_pipeline
    assert main(["index", *_settings(config), "--evaluate"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^index: \d+ listings", out, re.M) and re.search(r"^  both\s+root [01]\.\d{3}  path [01]\.\d{3}  \(", out, re.M)
    assert json.loads((config.paths.reports / "retrieval_evaluation.json").read_text())["k"] == 10


def test_similar_without_a_query_is_a_clear_error(trained_pipeline, capsys):
    config, _ = trained_pipeline
    assert main(["similar", *_settings(config)]) == 2
    assert "--text" in capsys.readouterr().err


def test_classify_answers_as_the_api_does(trained_pipeline, tmp_path, capsys, monkeypatch):
    """`fbm classify` and `POST /combined` run the same cleaning and model: the same answer, to the float."""
    import shutil

    from fastapi.testclient import TestClient

    from api.app import create_app

    config, unseen = trained_pipeline
    photo = next((unseen / "images").glob("*.jpg"))
    text = pd.read_json(config.paths.listings, lines=True)["title"][0]  # words the text branch knows
    capsys.readouterr()
    assert main(["classify", *_settings(config), "--image", str(photo), "--text", text, "--json"]) == 0
    from_cli = json.loads(capsys.readouterr().out)
    monkeypatch.setattr("sys.stdin", io.StringIO(text))  # --text -: the text from standard input
    assert main(["classify", *_settings(config), "--image", str(photo), "--text", "-", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == from_cli
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert main(["similar", *_settings(config), "--text", "-", "-k", "2"]) == 0  # read the "-" as the words
    assert "2 similar listings by text" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("  \n"))
    assert main(["classify", *_settings(config), "--text", "-"]) == 2
    assert "--text -: standard input was empty" in capsys.readouterr().err
    assert main(["classify", *_settings(config), "--text", text, "--top", "2"]) == 0 and main(["evaluate", *_settings(config), "--json", "-"]) == 2
    assert "--json takes a file name, and '-' (standard output) is not one" in capsys.readouterr().err
    assert main(["classify", *_settings(config), "--image", str(photo), "--text", text, "--top", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0].strip() for line in table[:2]] == from_cli["classes"][:2] and table[2] == "from image + text"

    served = copy.deepcopy(config)
    served.data.artifacts_dir = str(tmp_path / "artifacts")
    shutil.copytree(config.data.artifacts_dir, served.data.artifacts_dir)  # the server locks its index: work on a copy
    with TestClient(create_app(served)) as client:
        from_api = client.post("/combined", files={"img": ("a.jpg", photo.read_bytes(), "image/jpeg")}, data={"txt": text}).json()
    assert from_cli["classes"] == from_api["classes"] and from_cli["modalities"] == from_api["modalities"] == ["image", "text"]
    assert from_cli["probabilities"] == pytest.approx(from_api["probabilities"], abs=1e-6)


def test_classify_a_directory_of_new_listings_answers_each_as_one_listing_is(trained_pipeline, tmp_path, capsys):
    """New listings carry no category: each is answered as `fbm classify` answers it alone; one with
    nothing usable (its only photo unreadable, no text) is listed with no answer, not dropped."""
    config, unseen = trained_pipeline
    new = shutil.copytree(unseen, tmp_path / "new")
    products = pd.read_csv(new / "Products.csv", lineterminator="\n", dtype=str, keep_default_na=False)
    products = products.drop(columns=["category"])
    blank = products.iloc[[0]].assign(id="blank-1", product_name="", product_description="")
    pd.concat([products, blank]).to_csv(new / "Products.csv", index=False)
    images = pd.read_csv(new / "Images.csv", dtype=str, keep_default_na=False)
    pd.concat([images, pd.DataFrame({"id": ["blank-photo"], "product_id": ["blank-1"]})]).to_csv(new / "Images.csv", index=False)
    (new / "images" / "blank-photo.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "answers.csv"
    assert main(["classify", *_settings(config), "--data", str(new), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    answers = pd.read_csv(out, dtype={"product_id": str, "predicted": str}, keep_default_na=False)
    assert list(answers["product_id"]) == [*products["id"], "blank-1"]
    assert "1 with no usable photo or text" in printed and "photos skipped: not an image (1)" in printed
    blank_row = answers.iloc[-1]
    assert (blank_row["predicted"], blank_row["modalities"], blank_row["photos_skipped"]) == ("", "", 1)

    assert main(["evaluate", *_settings(config), "--data", str(new)]) == 2  # no category to score against
    assert f"`fbm classify --data {new}` answers listings without one" in capsys.readouterr().err

    text_only = tmp_path / "text-only.csv"  # the text model needs no photo, nor a photo folder, nor Images.csv
    shutil.move(new / "images", tmp_path / "moved-images")
    assert main(["classify", *_settings(config), "--data", str(new)]) == 2
    assert "images not found" in (refused := capsys.readouterr().err) and "`--mode text` answers from the listings' text alone" in refused
    shutil.move(new / "Images.csv", tmp_path / "moved-Images.csv")
    shutil.copy(new / "Products.csv", tmp_path / "kept-Products.csv")
    pd.concat([products, blank]).drop(columns=["price", "location"]).to_csv(new / "Products.csv", index=False)  # which no model reads
    assert main(["classify", *_settings(config), "--data", str(new), "--mode", "text", "--out", str(text_only)]) == 0
    assert f"{len(products)} of {len(products) + 1} listings answered by the text model" in capsys.readouterr().out  # the blank one has no text
    by_text = pd.read_csv(text_only, dtype=str, keep_default_na=False)
    assert list(by_text["product_id"]) == [*products["id"], "blank-1"]
    assert set(by_text["photos_used"]) == {"0"} and set(by_text["modalities"]) == {"text", ""}
    assert main(["classify", *_settings(config), "--data", str(new), "--mode", "combined"]) == 2
    assert "Images.csv not found" in capsys.readouterr().err
    shutil.move(tmp_path / "moved-images", new / "images")
    shutil.move(tmp_path / "moved-Images.csv", new / "Images.csv")
    shutil.move(tmp_path / "kept-Products.csv", new / "Products.csv")
    nothing = shutil.copytree(new, tmp_path / "nothing")
    pd.DataFrame({"id": ["x"], "product_id": ["blank-1"]}).to_csv(nothing / "Images.csv", index=False)
    products_frame = pd.read_csv(nothing / "Products.csv", dtype=str, keep_default_na=False)
    products_frame[products_frame["id"] == "blank-1"].to_csv(nothing / "Products.csv", index=False)
    assert main(["classify", *_settings(config), "--data", str(nothing), "--mode", "image"]) == 2
    assert "none of its 1 listings could be answered: each has no usable photo (--mode image)" in capsys.readouterr().err

    first = answers.iloc[0]
    photos = sorted((new / "images").glob("*.jpg"))
    image_ids = images.loc[images["product_id"] == first["product_id"], "id"]
    listing = read_dataset(new, labelled=False).listings.set_index("product_id").loc[first["product_id"]]
    alone = ["--text", listing_text(listing["title"], listing["description"])]
    alone += [arg for image_id in image_ids for arg in ("--image", str(new / "images" / f"{image_id}.jpg"))]
    assert photos and main(["classify", *_settings(config), *alone, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (first["predicted"], first["runner_up"]) == tuple(answer["classes"][:2])
    assert float(first["probability"]) == pytest.approx(answer["probabilities"][0], abs=1e-4)
    assert first["modalities"] == "+".join(answer["modalities"])


def test_every_endpoint_serves_the_trained_tiny_pipeline(trained_pipeline, tmp_path):
    """Each endpoint's happy path over the real artifacts, loaded by `load_services` as `fbm serve` does."""
    import shutil

    from fastapi.testclient import TestClient

    from api.app import create_app

    config, unseen = trained_pipeline
    served = copy.deepcopy(config)
    served.data.artifacts_dir = str(tmp_path / "artifacts")
    shutil.copytree(config.data.artifacts_dir, served.data.artifacts_dir)  # the index is written to: work on a copy
    served.serve.api_key = "e2e-key"
    photo = next((unseen / "images").glob("*.jpg")).read_bytes()
    catalogue_title = pd.read_json(config.paths.listings, lines=True)["title"][0]  # words the text branch knows
    with TestClient(create_app(served)) as client:
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["listings"] == len(pd.read_json(config.paths.listings, lines=True))
        classes = client.get("/categories").json()["categories"]
        for url, kwargs in (
            ("/image", {"files": {"img": ("a.jpg", photo, "image/jpeg")}}),
            ("/text", {"data": {"txt": "cordless drill with two batteries"}}),
            ("/combined", {"files": {"img": ("a.jpg", photo, "image/jpeg")}, "data": {"txt": "cordless drill"}}),
        ):
            body = client.post(url, **kwargs).json()
            assert body["pred"] == body["classes"][0] and abs(sum(body["probabilities"]) - 1) < 1e-3, (url, body)
            assert len(body["classes"]) == len(classes)
        similar = client.post("/similar", files={"img": ("a.jpg", photo, "image/jpeg")}, data={"txt": catalogue_title, "k": "5"}).json()
        assert len(similar["results"]) == 5 and similar["modalities"] == ["image", "text"]

        added = client.post(
            "/listings",
            headers={"X-API-Key": "e2e-key"},
            files={"img": ("a.jpg", photo, "image/jpeg")},
            data={"title": "Brand new cordless drill", "price": "45", "product_id": "e2e-new-drill"},
        )
        assert added.status_code in (200, 201), added.text
        found = client.post("/similar", files={"img": ("a.jpg", photo, "image/jpeg")}, data={"txt": "Brand new cordless drill", "k": "3"}).json()
        assert "e2e-new-drill" in [hit["product_id"] for hit in found["results"]]
        # a text alone with no known word is not indexed (its embedding says nothing), as it is refused as a query
        no_words = client.post("/listings", headers={"X-API-Key": "e2e-key"}, data={"title": "zzzz qqqq", "product_id": "e2e-no-words"})
        assert no_words.status_code == 422 and "no word the model knows" in no_words.json()["detail"]
        assert client.get("/listings/e2e-no-words/similar").status_code == 404
        like = client.get("/listings/e2e-new-drill/similar", params={"k": 3}).json()  # the live add's stored vector and words
        assert like["listing"]["title"] == "Brand new cordless drill" and like["modalities"] == ["image", "text"]
        assert len(like["results"]) == 3 and "e2e-new-drill" not in [hit["product_id"] for hit in like["results"]]
        assert client.delete("/listings/e2e-new-drill", headers={"X-API-Key": "e2e-key"}).status_code in (200, 204)


def test_a_rebuild_keeps_live_changes_and_is_refused_under_a_server(trained_pipeline, tmp_path, capsys):
    """`fbm index` after `POST /listings` and `DELETE /listings/{id}`: the added listings stay (embedded
    again from their stored photo and text), the deleted catalogue listing stays out (and is the only
    one counted as such: a listing added, then deleted, was none); while a server
    holds the index open, the rebuild is refused and the server keeps working."""
    import shutil

    from fastapi.testclient import TestClient

    from api.app import create_app
    from retrieval.index import ListingIndex

    config, unseen = trained_pipeline
    served = copy.deepcopy(config)
    served.data.artifacts_dir = str(tmp_path / "artifacts")
    shutil.copytree(config.data.artifacts_dir, served.data.artifacts_dir, ignore=shutil.ignore_patterns("cache"))
    served.serve.api_key = "e2e-key"
    photo = next((unseen / "images").glob("*.jpg")).read_bytes()
    catalogue = pd.read_json(config.paths.listings, lines=True)
    gone, title = catalogue["product_id"][0], catalogue["title"][1]  # a catalogue listing to delete; words the model knows
    auth = {"X-API-Key": "e2e-key"}
    with TestClient(create_app(served)) as client:
        assert client.post("/listings", headers=auth, files={"img": ("a.jpg", photo, "image/jpeg")}, data={"title": title, "product_id": "live-both"}).status_code == 201
        assert client.post("/listings", headers=auth, data={"title": title, "description": "as new", "product_id": "live-text"}).status_code == 201
        assert client.delete(f"/listings/{gone}", headers=auth).status_code == 200
        assert client.post("/listings", headers=auth, data={"title": title, "product_id": "live-gone"}).status_code == 201
        assert client.delete("/listings/live-gone", headers=auth).status_code == 200  # no catalogue listing: not counted as one
        assert main(["index", *_settings(served)]) == 2
        assert "open in another process" in capsys.readouterr().err
        assert client.get("/listings/live-both/similar", params={"k": 2}).status_code == 200  # the server's files are untouched
    with ListingIndex.open(served.paths.index, served.index) as index:
        before = {pid: index.stored(pid) for pid in ("live-both", "live-text")}

    for _ in range(2):  # and the build it writes keeps them for the next
        assert main(["index", *_settings(served)]) == 0
        out = capsys.readouterr().out
        assert "kept from the index it replaces: 2 listing(s) added through the API" in out and "1 catalogue listing(s) deleted" in out
    with ListingIndex.open(served.paths.index, served.index) as index:
        assert len(index) == len(catalogue) - 1 + 2 and index.stored(gone) is None
        for pid, old in before.items():
            new = index.stored(pid)
            assert new.listing == old.listing and (new.image_vec is None) == (old.image_vec is None)
            assert float(new.text_vec @ old.text_vec) == pytest.approx(float(old.text_vec @ old.text_vec), rel=1e-4)  # the same models
            if old.image_vec is not None:
                assert float(new.image_vec @ old.image_vec) == pytest.approx(float(old.image_vec @ old.image_vec), rel=1e-3)
    assert main(["similar", *_settings(served), "--like", "live-both", "-k", "2"]) == 0
