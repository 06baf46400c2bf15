"""The command line's own checks: each bad argument is refused in one line before any work starts."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import scripts.cli as cli
from api.server import check_port_free
from listings.config import Config
from scripts.cli import build_parser, main, refuse_inputs


def test_fbm_alone_lists_its_commands(capsys):
    assert main([]) == 2
    printed = capsys.readouterr().err
    assert all(command in printed for command in ("prepare", "train", "evaluate", "index", "classify", "similar", "serve"))


def test_train_all_checks_for_nltk_data_before_the_image_branch(tmp_path: Path):
    """The text stage needs NLTK's data: `train all` says so at once, not after the image branch."""
    empty = tmp_path / "no-nltk-data"
    empty.mkdir()
    env = {**os.environ, "NLTK_DATA": str(empty), "HOME": str(tmp_path)}
    command = [sys.executable, "-m", "scripts.cli", "train", "all", "--artifacts", str(tmp_path / "artifacts"), "--set", f"data.nltk_data={empty}"]
    done = subprocess.run(command, cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "NLTK data missing (corpora/stopwords, corpora/wordnet are needed)" in done.stderr
    assert not (tmp_path / "artifacts").exists()  # nothing prepared or trained

    env["NLTK_DATA"] = Config().data.nltk_data  # with the data there, the check passes: the next refusal is the missing dataset
    command[-1] = f"data.nltk_data={env['NLTK_DATA']}"
    done = subprocess.run([*command[:4], "text", *command[5:]], cwd=Path(__file__).parents[1], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "listings.jsonl not found: run `fbm prepare` first" in done.stderr
    assert not (tmp_path / "artifacts").exists()  # no empty model folder left behind either


@pytest.mark.parametrize("port", ["0", "70000", "-1", "http"])
def test_a_port_outside_1_to_65535_is_refused_by_the_parser(port, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--port", port])
    assert exited.value.code == 2 and "a port is a number from 1 to 65535" in capsys.readouterr().err


def test_an_index_of_nothing_trained_is_refused_without_leaving_a_folder(tmp_path, capsys):
    artifacts = tmp_path / "artifacts"
    (artifacts / "data").mkdir(parents=True)
    assert main(["index", "--artifacts", str(artifacts)]) == 2
    err = capsys.readouterr().err
    assert "listings.jsonl not found: run `fbm prepare` first" in err and "== index ==" not in err
    assert not (artifacts / "index").exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["classify", "--txt", "oak chair"], "fbm classify: error: unrecognized arguments: --txt oak chair (did you mean --text?)"),
        (["evaluate", "--jsn=x.json"], "fbm evaluate: error: unrecognized arguments: --jsn=x.json (did you mean --json?)"),
        (["similar", "oak"], "fbm similar: error: unrecognized arguments: oak"),
    ],
)
def test_an_argument_a_command_does_not_take_is_refused_with_the_commands_usage(argv, words, capsys):
    """It was the top-level `usage: fbm [-h] COMMAND ...`, naming neither the command nor its options."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.startswith(f"usage: fbm {argv[0]} ") and words in err


def test_an_ipv6_address_can_be_listened_on():
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    check_port_free("::1", 0)  # create_server's default family, IPv4, called it an unknown host


def test_a_port_in_use_is_named_before_the_models_load():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ValueError, match=f"cannot listen on 127.0.0.1:{port} \\(Address already in use\\): another server"):
            check_port_free("127.0.0.1", port)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["index", "-k", "5"], "-k sets the neighbours per query of --evaluate"),
        (["index", "--evaluate", "-k", "0"], "-k must be between 1 and 100"),  # before the index is rebuilt
        (["bench", "--parts", "accuracy"], "add --reuse"),  # a fresh run would first clear <artifacts>/bench
        (["bench", "--repeats", "0"], "--repeats must be 1 or more, got 0"),  # an IndexError after the whole run
        (["bench", "--out", "/dev/null/b.md"], "--out /dev/null/b.md: /dev/null is a file, not a folder"),  # the figures lost after the run
        (["bench", "--reuse", "--json", "/"], "--json / is a folder"),
        (["bench", "--reuse", "--parts", "pipeline,accuracy"], "drop --reuse or leave out pipeline"),
        (["classify"], "give a listing text (--text), one or more photos (--image) or both; or a directory of listings (--data DIR)"),  # not "run fbm train"
        (["classify", "--text", "oak chair", "--image", ""], "--image is empty: give a photo's path"),  # not "--image .: not a file"
        (["similar", "--text", "Posted by Bob in Home & Garden in Leeds."], "--text holds only spaces, control characters, HTML entities or a listing page's boilerplate (a \"Posted by …\" line, a \"| in <town> | Gumtree\" ending), which cleaning removes: give"),
        (["classify", "--text", "   "], "--text holds only spaces, control characters, HTML entities or a listing page's boilerplate (a \"Posted by …\" line, a \"| in <town> | Gumtree\" ending), which cleaning removes: give a listing text"),
        (["classify", "--text", "\x01\x02", "--mode", "text"], "--text holds only spaces, control characters, HTML entities or a listing page's boilerplate (a \"Posted by …\" line, a \"| in <town> | Gumtree\" ending), which cleaning removes: give a listing text (--text)\n"),
        (["classify", "--mode", "image", "--text", "oak chair"], "--mode image reads only --image: leave out --text"),
        (["classify", "--mode", "text", "--text", "oak chair", "--image", "a.jpg"], "--mode text reads only --text: leave out --image"),
        (["classify", "--text", "oak chair", "--top", "-1"], "--top must be 0 (every category) or more, got -1"),
        (["classify", "--data", "listings", "--text", "oak chair"], "--data classifies every listing of a directory into a CSV"),
        (["classify", "--out", "answers.csv", "--text", "oak chair"], "--out names the CSV of --data DIR: give both, or neither"),
        (["classify", "--data", ""], "--data is empty: give the directory of listings to classify"),
        (["classify", "--data", "listings", "--out", "answers/"], "--out answers/ is a folder: give a file name"),  # not a file named answers
        (["classify", "--text", "oak chair", "--top", "1", "--json"], "--top shapes the table: --json prints every category"),
        (["classify", "--image", "no-such-photo.jpg"], "--image no-such-photo.jpg: no such file"),  # before the models load
        (["classify", "--image", "/tmp"], "--image /tmp: not a file"),
        (["similar", "--image", "no-such-photo.jpg"], "--image no-such-photo.jpg: no such file"),  # before the index opens
        (["similar", "--text", "oak chair", "--min-price", "50", "--max-price", "10"], "--min-price 50 is above --max-price 10"),
        (["similar", "--text", "oak chair", "--max-price", "lots"], "--max-price: 'lots' is not a price"),
        (["similar", "--text", "oak chair", "--max-price", "-3"], "--max-price: '-3' is not a price"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(tmp_path: Path, argv, message, capsys):
    assert main([*argv, "--artifacts", str(tmp_path / "empty")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "empty").exists()


def test_evaluate_checks_its_json_path_before_evaluating(tmp_path: Path, capsys):
    assert main(["evaluate", "--artifacts", str(tmp_path / "empty"), "--json", str(tmp_path)]) == 2
    assert "is a folder: give a file name" in capsys.readouterr().err  # not "run fbm prepare first": nothing ran



def test_an_output_never_replaces_the_dataset_or_the_trained_artifacts(tmp_path: Path, capsys):
    """`--out DIR/Products.csv` wrote the answers over the listings it had read; `--out
    artifacts/data/categories.json` over the category mapping every stage reads."""
    data, artifacts = tmp_path / "new", tmp_path / "artifacts"
    (data / "images").mkdir(parents=True)
    (data / "Products.csv").write_text("id,product_name\na1,PS4 console\n")
    (artifacts / "data").mkdir(parents=True)
    (artifacts / "data" / "categories.json").write_text("{}")
    refused = [
        (["classify", "--data", str(data), "--mode", "text", "--out", str(data / "Products.csv")], f"is a file of the dataset {data}"),
        (["evaluate", "--data", str(data), "--json", str(data / "images" / "m.json")], f"is a file of the dataset {data}"),
        (["classify", "--data", str(data), "--out", str(artifacts / "data" / "categories.json")], f"is among the trained artifacts in {artifacts}"),
        (["evaluate", "--json", str(artifacts / "image_model" / "metrics.json")], "is among the trained artifacts"),
    ]
    for argv, words in refused:
        assert main([*argv, "--artifacts", str(artifacts)]) == 2, argv
        assert words in capsys.readouterr().err, argv
    assert (data / "Products.csv").read_text() == "id,product_name\na1,PS4 console\n"
    assert (artifacts / "data" / "categories.json").read_text() == "{}" and not (artifacts / "image_model").exists()
    config = Config()
    config.data.artifacts_dir = str(artifacts)
    refuse_inputs(str(artifacts / "reports" / "answers.csv"), "--out", config, str(data))  # the reports folder is the outputs'
    refuse_inputs(str(data / "answers.csv"), "--out", config, str(data))  # beside the dataset's files, not over them
    # linked files and folders (photos kept on another disk), and the training dataset beside --data
    elsewhere, linked, training = tmp_path / "disk", tmp_path / "linked", tmp_path / "training"
    (elsewhere / "photos").mkdir(parents=True)
    (elsewhere / "Products.csv").write_text("id,product_name\n")
    linked.mkdir()
    (linked / "Products.csv").symlink_to(elsewhere / "Products.csv")
    (linked / "images").symlink_to(elsewhere / "photos")
    (training / "images").mkdir(parents=True)
    config.data.data_dir = str(training)
    for target in (elsewhere / "Products.csv", linked / "Products.csv", elsewhere / "photos" / "a.jpg", linked / "images" / "a.jpg"):
        with pytest.raises(ValueError, match=f"is a file of the dataset {linked}"):
            refuse_inputs(str(target), "--out", config, str(linked))
    with pytest.raises(ValueError, match=f"is a file of the dataset {training}"):
        refuse_inputs(str(training / "Products.csv"), "--out", config, str(data))


def test_evaluate_checks_that_its_json_file_can_be_written_before_evaluating(tmp_path: Path, capsys):
    assert main(["evaluate", "--artifacts", str(tmp_path / "empty"), "--json", str(tmp_path / ("m" * 300 + ".json"))]) == 2
    assert "cannot be written: File name too long" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing left behind, nothing ran


def test_classify_on_a_folder_with_nothing_trained_says_what_to_run(tmp_path: Path, capsys):
    """It said `run fbm train combined first`, where every stage was missing."""
    assert main(["classify", "--artifacts", str(tmp_path / "empty"), "--text", "oak chair"]) == 2
    err = capsys.readouterr().err
    assert "no trained models in" in err and "build them with `make run`" in err
    (tmp_path / "notes.md").write_text("a file, not the artifacts folder")
    assert main(["classify", "--artifacts", str(tmp_path / "notes.md"), "--text", "oak chair"]) == 2
    assert f"{tmp_path / 'notes.md'} is a file: give the artifacts directory" in capsys.readouterr().err


@pytest.mark.parametrize("option, message", [("--json", "--json is empty: give a file name"), ("--data", "--data is empty: give the dataset directory to score")])
def test_evaluate_refuses_an_empty_path_instead_of_leaving_the_option_out(tmp_path: Path, option, message, capsys):
    """`--data ""` scored the test split in its place, and `--json ""` wrote nothing, both with exit 0."""
    assert main(["evaluate", "--artifacts", str(tmp_path / "empty"), option, ""]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", [["prepare"], ["train", "all"], ["index"], ["serve"]])
def test_an_empty_directory_option_is_refused_not_read_as_the_default(tmp_path: Path, monkeypatch, command, capsys):
    """`--artifacts "$UNSET"` wrote into the repository's ./artifacts, `--data ""` read the default dataset."""
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--artifacts", " "]) == 2
    assert "--artifacts is empty: give a directory, or leave --artifacts out for the default" in capsys.readouterr().err
    assert main([*command, "--data", "", "--artifacts", str(tmp_path / "a")]) == 2
    reads_data = command[0] == "prepare" or command == ["train", "all"]
    assert ("--data is empty" if reads_data else "does not read --data") in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command, message",
    [
        (["train", "text"], "train text does not read --data: it trains on the listings `fbm prepare` last wrote"),
        (["index"], "index does not read --data: it indexes the listings `fbm prepare` last wrote"),
        (["similar", "--text", "oak chair"], "similar does not read --data: it searches the index `fbm index` built"),
        (["serve"], "serve does not read --data"),
        (["weights"], "weights does not read --data: it reads no dataset; leave --data out"),
    ],
)
def test_a_command_that_reads_no_dataset_refuses_data_rather_than_ignore_it(tmp_path: Path, monkeypatch, command, message, capsys):
    """`fbm train text --data other/` trained on the listings prepared before, and said nothing of it."""
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--data", str(tmp_path), "--artifacts", str(tmp_path / "a")]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    help_text = build_parser().parse_args(command).subcommands[command[0]].format_help()
    assert ("--data DIR" in help_text) == (command[0] == "train")  # listed only where some stage (`all`) reads it


def test_an_interrupt_ends_the_command_in_one_line(tmp_path: Path, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_prepare", interrupted)
    assert main(["prepare", "--artifacts", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == "fbm prepare: interrupted"


def test_a_reader_that_stops_early_is_no_error(monkeypatch, capsys):
    """`fbm classify … | head -1`: the pipe closes before the output is written."""
    import os

    def closed_pipe(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(os, "dup2", lambda *fds: None)  # the real one would redirect pytest's own stdout
    parser = build_parser()
    monkeypatch.setattr("scripts.cli.build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["classify"].set_defaults(handler=closed_pipe)
    assert main(["classify", "--text", "oak chair"]) == 141
    assert capsys.readouterr().err == ""


def test_a_command_given_nothing_to_answer_says_so_before_the_models_are_imported():
    """`fbm classify` alone took 4 s (torch imported, the models' freshness checked) to say what it needs."""
    code = "import sys; from scripts.cli import main; codes = [main(['classify']), main(['similar'])]; print(codes, 'torch' in sys.modules, 'faiss' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=cli.REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[2, 2] False False", done.stdout + done.stderr


def test_standard_input_that_is_not_text_is_refused(tmp_path: Path, monkeypatch, capsys):
    for stdin in ("PK\x03\x04\x00\x00 model", "oak \udcff\udcfe chair"):  # a zip (model.pt), bytes that are not UTF-8 as Python escapes them
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        assert main(["classify", "--text", "-", "--artifacts", str(tmp_path / "empty")]) == 2
        assert "--text -: standard input is not UTF-8 text" in capsys.readouterr().err

    class StrictReader:  # standard input under a UTF-8 locale other than C.UTF-8
        def read(self) -> str:
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    monkeypatch.setattr("sys.stdin", StrictReader())
    assert main(["classify", "--text", "-", "--artifacts", str(tmp_path / "empty")]) == 2
    assert "--text -: standard input is not UTF-8 text" in capsys.readouterr().err


def test_checking_an_output_path_leaves_no_folder_behind(tmp_path: Path, capsys):
    """`--json a/b/m.json` is checked (its folders made, then removed) before the work, which fails here."""
    assert main(["evaluate", "--artifacts", str(tmp_path / "empty"), "--json", str(tmp_path / "a" / "b" / "m.json")]) == 2
    assert "fbm prepare" in capsys.readouterr().err and not (tmp_path / "a").exists()


def test_top_zero_is_accepted_as_every_category(tmp_path: Path, capsys):
    """`--top 0` lists every category: it is not refused as a bad --top (the run stops later, at the missing models)."""
    assert main(["classify", "--text", "oak chair", "--top", "0", "--artifacts", str(tmp_path / "empty")]) == 2
    assert "--top must be" not in capsys.readouterr().err


@pytest.mark.parametrize("command", [["prepare"], ["train", "combined"]])
def test_a_second_writer_of_the_artifacts_is_refused(tmp_path: Path, capsys, command):
    """Two `fbm prepare` (or `fbm train`) at once on one artifacts folder would write the same files:
    while one holds the training lock, another is refused in one line, and writes nothing."""
    from listings.artifacts import hold_lock

    config = Config()
    config.data.artifacts_dir = str(tmp_path / "artifacts")
    config.paths.root.mkdir()
    descriptor = hold_lock(config.paths.training_lock, True, AssertionError("the test's lock is free"))
    try:
        assert main([*command, "--artifacts", str(config.paths.root)]) == 2
        assert f"another `fbm prepare` or `fbm train` is writing {config.paths.root}: wait for it to finish" in capsys.readouterr().err
        assert [path.name for path in config.paths.root.iterdir()] == ["TRAINING.lock"]
    finally:
        os.close(descriptor)
    missing = ["--data", str(tmp_path / "no-dataset")] if command == ["prepare"] else []  # train combined: nothing prepared
    assert main([*command, "--artifacts", str(config.paths.root), *missing]) == 2
    assert "writing" not in capsys.readouterr().err  # the lock was released: refused for what is missing instead


def test_train_ends_with_each_stages_time_and_headline_not_a_json_dump():
    summaries = {
        "prepare": {"stage_wall_time_s": 9.1, "products": 6098, "classes": 13, "split_sizes": {"train": 4275, "val": 914, "test": 909}},
        "image": {"stage_wall_time_s": 380.0, "branch": {"test": {"product": {"accuracy": 0.5907}}}, "baseline": {"test": {"product": {"accuracy": 0.274}}}},
        "text": {"skipped": "up to date", "outputs": "artifacts/text_model"},
        "combined": {"stage_wall_time_s": 7.0, "served_method": "late", "metrics": {"test": {"late_fusion": {"accuracy": 0.8394}}}},
    }
    no_test = {"branch": {"test": {"product": {"accuracy": float("nan")}}}, "baseline": {"test": {"product": {"accuracy": float("nan")}}}}
    no_text_test = {"cnn": {"val": {"accuracy": 0.5}}, "tfidf_svm_baseline": {"val": {"accuracy": 0.6}}}  # the text stage keeps no empty split (a KeyError)
    assert cli.format_training({"text": {"stage_wall_time_s": 1.0, **no_text_test}}).splitlines()[-1].endswith("test accuracy — (TF-IDF + SVM —)")
    assert cli.format_training({"image": {"stage_wall_time_s": 1.0, **no_test}}).splitlines()[-1].endswith("test product accuracy — of the products with a photo (HOG + SVM —)")  # no test products
    assert cli.format_training(summaries).splitlines() == [
        "trained:",
        "  prepare      9.1 s  6,098 products in 13 categories (train 4,275, validation 914, test 909)",
        "  image      380.0 s  test product accuracy 0.591 of the products with a photo (HOG + SVM 0.274)",
        "  text      up to date, not retrained",
        "  combined     7.0 s  serving late fusion: test accuracy 0.839",
    ]


def test_train_all_prints_what_prepare_counted(quirky_dataset, tmp_path, capsys):
    """`make run` trains through `fbm train all`: its preparation's counts and warnings are printed, as `fbm prepare` prints them."""
    config = Config()
    config.data.data_dir, config.data.artifacts_dir = str(quirky_dataset), str(tmp_path / "artifacts")
    cli.train_stage("prepare", config, force=False)
    printed = capsys.readouterr().err
    assert f"prepared {quirky_dataset}" in printed and "warning: no validation products" in printed


def test_no_dataset_at_the_default_place_says_how_to_name_one(tmp_path, monkeypatch, capsys):
    import listings.config as config_module

    monkeypatch.delenv("FBM_DATA", raising=False)
    monkeypatch.setattr(config_module, "SHARED", tmp_path / "no-shared-folder")
    monkeypatch.setattr(config_module, "REPO_ROOT", tmp_path / "repo")
    assert main(["prepare", "--artifacts", str(tmp_path / "artifacts")]) == 2
    hint = f"(no dataset given: name its directory with --data DIR or FBM_DATA=DIR; the default is {tmp_path / 'no-shared-folder' / 'fbm'}, else {tmp_path / 'repo' / 'data'})"
    assert hint in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["prepare", "--data", str(tmp_path / "empty"), "--artifacts", str(tmp_path / "artifacts")]) == 2
    assert "no dataset given" not in capsys.readouterr().err  # named, so nothing to add
