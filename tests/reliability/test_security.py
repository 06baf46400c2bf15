"""Security: upload names never become paths, writes need the key, nothing unpickles untrusted bytes."""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.services import load_services
from listings.config import REPO_ROOT
from reliability_helpers import copy_model_artifacts, plant_pickle_payload, unpickle_like_an_unsafe_loader
from test_api_fakes import catalogue_rows, fake_services, jpeg_bytes, synthetic_photo, tiny_config

KEY = "sec-key-0123456789"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PHOTO = jpeg_bytes(synthetic_photo("red", "circle"))


@pytest.fixture
def served(tmp_path):
    config = tiny_config(tmp_path / "artifacts", api_key=KEY)
    services = fake_services(config)
    with TestClient(create_app(config, services)) as client:
        yield client, config, tmp_path
    services.index.close()


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


def evil_names(tmp_path: Path) -> list[str]:
    outside = tmp_path / "outside"
    return [
        "../../etc/passwd",
        "/etc/passwd",
        "../../../../../../tmp/planted.jpg",
        str(outside / "absolute.jpg"),
        "..\\..\\windows\\win.ini",
        "a/../../../escape.jpg",
        "....//....//dots.jpg",
        "%2e%2e%2fencoded.jpg",
        "~/.ssh/authorized_keys",
        "photo.jpg/../../../../up.jpg",
    ]


# --- upload file names -------------------------------------------------------------------------


def test_upload_filenames_cannot_name_server_paths(served):
    client, config, root = served
    names = evil_names(root)
    before = files_under(root)
    passwd = Path("/etc/passwd").read_bytes() if Path("/etc/passwd").exists() else None

    distinct = [jpeg_bytes(synthetic_photo("red", "circle", (320 + 8 * i, 240))) for i in range(config.serve.max_photos)]  # a repeat is stored once
    files = [("img", (name, photo, "image/jpeg")) for name, photo in zip(names[: config.serve.max_photos], distinct)]
    added = client.post("/listings", headers={"X-API-Key": KEY}, files=files, data={"title": "Planted kettle", "product_id": "planted"})
    assert added.status_code == 201, added.text
    image_ids = added.json()["image_ids"]
    assert len(image_ids) == len(files) and all(UUID.match(image_id) for image_id in image_ids), image_ids

    photo_dir = config.paths.added_photos(config.data.image_size)
    created = files_under(root) - before
    assert created == {photo_dir / f"{image_id}.jpg" for image_id in image_ids}, sorted(map(str, created))
    for image_id in image_ids:
        served_photo = client.get(f"/images/{image_id}")
        assert served_photo.status_code == 200 and served_photo.content[:2] == b"\xff\xd8"
    assert not (root / "outside").exists()
    assert not Path("/tmp/planted.jpg").exists()
    if passwd is not None:
        assert Path("/etc/passwd").read_bytes() == passwd

    # the read-only endpoints write nothing at all, whatever the names
    before = files_under(root)
    for url, data in (("/image", None), ("/combined", {"txt": "kettle"}), ("/similar", {"txt": "kettle"})):
        response = client.post(url, files=[("img", (name, PHOTO, "image/jpeg")) for name in names[:3]], data=data)
        assert response.status_code == 200, (url, response.text)
    bad = client.post("/listings", headers={"X-API-Key": KEY}, files=[("img", ("../../x.jpg", b"not a photo", "image/jpeg"))], data={"title": "x"})
    assert bad.status_code == 422
    assert files_under(root) == before


@pytest.mark.parametrize(
    "path",
    [
        "/images/..%2F..%2F..%2Fetc%2Fpasswd",
        "/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/images/.%2e",
        "/images/img-00.jpg.jpg",
        "/images/img-00.png",
        "/images/img-00%00",
        "/images/%2Fetc%2Fpasswd",
        "/images/" + "a" * 200,
        "/images/..%5C..%5Cwin.ini",
    ],
)
def test_photo_ids_cannot_name_server_paths(served, path):
    client, _, _ = served
    assert client.get("/images/img-00").status_code == 200  # the catalogue photo itself is served
    response = client.get(path)
    assert response.status_code in (404, 422), (path, response.status_code)
    assert b"root:" not in response.content
    deleted = client.delete(path.replace("/images/", "/listings/"), headers={"X-API-Key": KEY})
    assert deleted.status_code in (404, 405, 422), (path, deleted.status_code)


# --- the API key -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": ""},
        {"X-API-Key": "wrong"},
        {"X-API-Key": KEY + "x"},
        {"X-API-Key": KEY[:-1]},
        {"X-API-Key": KEY.upper()},
        {"X-API-Key": KEY[:4] + " " + KEY[4:]},  # spaces around the value are not part of it; inside, they are
        {"Authorization": f"Bearer {KEY}"},
        {"X-Api-Key-Other": KEY},
    ],
    ids=["none", "empty", "wrong", "longer", "prefix", "case", "space", "bearer", "other-header"],
)
def test_writes_without_the_right_key_are_refused_and_change_nothing(served, headers):
    client, _, _ = served
    listings = client.get("/health").json()["listings"]
    add = client.post("/listings", headers=headers, data={"title": "Sneaky sofa", "product_id": "sneaky"})
    assert add.status_code == 401, add.text
    delete = client.delete("/listings/prod-00", headers=headers)
    assert delete.status_code == 401, delete.text
    query = client.post(f"/listings?api_key={KEY}", headers=headers, data={"title": "Sneaky sofa", "product_id": "sneaky"})
    assert query.status_code == 401  # a key is only ever read from its header
    assert client.get("/health").json()["listings"] == listings
    assert client.delete("/listings/sneaky", headers={"X-API-Key": KEY}).status_code == 404  # never added
    assert client.delete("/listings/prod-00", headers={"X-API-Key": KEY}).status_code == 200  # never deleted


def test_writes_are_refused_when_the_server_has_no_key(tmp_path):
    config = tiny_config(tmp_path / "artifacts", api_key="")
    services = fake_services(config)
    with TestClient(create_app(config, services)) as client:
        for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": "anything"}):
            assert client.post("/listings", headers=headers, data={"title": "x"}).status_code == 403
            assert client.delete("/listings/prod-00", headers=headers).status_code == 403
        assert client.get("/health").json()["listings"] == len(catalogue_rows())
    services.index.close()


# --- no unpickling of untrusted bytes ----------------------------------------------------------

SKIP_DIRS = {".venv", "venv", ".git", "node_modules", "build", "dist", "artifacts", "__pycache__", ".hypothesis", ".pytest_cache"}
# Calls that unpickle (or otherwise run code from) the bytes they read: never in the project's own code.
UNPICKLERS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "cPickle.load", "cPickle.loads",
    "dill.load", "dill.loads", "joblib.load", "marshal.load", "marshal.loads", "shelve.open", "pd.read_pickle",
    "pandas.read_pickle", "yaml.unsafe_load", "yaml.full_load", "torch.jit.load", "torch.hub.load",
    "KeyedVectors.load", "Word2Vec.load", "np.lib.format.read_array",
}
WEIGHTS_LOADERS = ("torch.load", "load_state_dict_from_url", "get_state_dict")


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_constant(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_loads(source: str, filename: str, production: bool) -> list[str]:
    """Every call in `source` that could unpickle untrusted bytes, as 'file:line: why'."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and production and node.module in {"pickle", "_pickle", "dill", "marshal", "shelve"}:
            found += [f"{where}: from {node.module} import {alias.name}" for alias in node.names if alias.name in {"load", "loads", "Unpickler"}]
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        keywords = {keyword.arg: keyword.value for keyword in node.keywords}
        if name == "torch.load" or name.endswith(WEIGHTS_LOADERS[1:]):
            if not _is_constant(keywords.get("weights_only"), True):
                found.append(f"{where}: {name} without weights_only=True")
        elif name in {"np.load", "numpy.load"}:
            if "allow_pickle" in keywords and not _is_constant(keywords["allow_pickle"], False):
                found.append(f"{where}: {name} with allow_pickle not False")
        elif name == "yaml.load" and not any(_dotted(keywords.get("Loader", ast.Constant(None))).endswith(safe) for safe in ("SafeLoader", "CSafeLoader")):
            found.append(f"{where}: yaml.load without a safe Loader")
        elif production and (name in UNPICKLERS or name.endswith((".KeyedVectors.load", ".Word2Vec.load"))):
            found.append(f"{where}: {name}")
    return found


def python_files() -> list[Path]:
    files = []
    for directory, subdirectories, names in os.walk(REPO_ROOT):
        subdirectories[:] = [d for d in subdirectories if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        files += [Path(directory) / name for name in names if name.endswith(".py")]
    return files


def test_the_unsafe_load_scanner_finds_what_it_looks_for():
    bad = """
import pickle, torch, numpy as np, yaml
from pickle import loads
torch.load(path)
torch.load(path, weights_only=False)
torch.load(path, map_location="cpu", weights_only=flag)
np.load(path, allow_pickle=True)
pickle.loads(data)
yaml.load(text)
torch.hub.load_state_dict_from_url(url)
KeyedVectors.load(path)
"""
    good = """
torch.load(path, map_location="cpu", weights_only=True)
np.load(path, allow_pickle=False)
np.load(path)
yaml.load(text, Loader=yaml.SafeLoader)
weights.get_state_dict(progress=False, weights_only=True)
KeyedVectors.load_word2vec_format(path, binary=True)
"""
    assert len(unsafe_loads(bad, "bad.py", production=True)) == 9
    assert unsafe_loads(good, "good.py", production=True) == []


def test_no_code_in_the_repository_unpickles_untrusted_bytes():
    files = python_files()
    assert any(path.name == "inference.py" for path in files) and len(files) > 30, "the scan did not see the sources"
    tests = REPO_ROOT / "tests"
    found = []
    for path in files:
        production = tests not in path.parents  # tests may unpickle their own crafted payloads; torch.load rules hold there too
        found += unsafe_loads(path.read_text(encoding="utf-8"), str(path.relative_to(REPO_ROOT)), production)
    assert not found, "unsafe loads:\n" + "\n".join(found)
    loads = [path for path in files if "torch.load(" in path.read_text(encoding="utf-8")]
    assert loads, "no torch.load found at all: the scan is not looking at the right tree"


def test_the_api_never_imports_a_pickle_module():
    for path in (REPO_ROOT / "api").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {"pickle", "_pickle", "dill", "joblib", "marshal", "shelve", "cloudpickle"}, path


# --- a model.pt carrying a pickle payload ------------------------------------------------------


@pytest.mark.parametrize("model", ["image_model", "text_model", "combined_model"])
def test_a_pickle_bearing_model_file_is_refused_and_its_payload_never_runs(model, trained_pipeline, tmp_path):
    import copy

    config, _ = trained_pipeline
    artifacts = copy_model_artifacts(Path(config.data.artifacts_dir), tmp_path / "artifacts")
    weights = artifacts / model / "model.pt"
    marker = tmp_path / "PAYLOAD_RAN"
    plant_pickle_payload(weights, marker)

    unpickle_like_an_unsafe_loader(weights)  # the planted payload is live: plain unpickling runs it
    assert marker.exists(), "the crafted model.pt does not carry a working payload: this test would prove nothing"
    marker.unlink()

    served = copy.deepcopy(config)
    served.data.artifacts_dir = str(artifacts)
    served.serve.torch_threads = 1
    with pytest.raises(ValueError) as refused:
        load_services(served)
    message = str(refused.value)
    assert str(weights) in message and "\n" not in message, message
    assert not marker.exists(), "loading the model ran the pickle payload"
