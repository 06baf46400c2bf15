"""Deployment files without a Docker engine: the compose file's structure (and `docker-compose config`
when Debian's docker-compose is installed), the Dockerfile's rules, and the health check command itself."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml

from api.server import server_options
from listings.config import REPO_ROOT, Config, ServeConfig
from test_api_fakes import fake_services, live_server, tiny_config

COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"

# The keys of a service in the Compose specification that this project may use.
SERVICE_KEYS = {
    "build", "image", "ports", "environment", "env_file", "volumes", "restart", "healthcheck", "deploy",
    "command", "entrypoint", "user", "container_name", "depends_on", "networks", "labels", "logging",
    "mem_limit", "cpus", "init", "stop_grace_period", "read_only", "tmpfs", "working_dir", "expose",
}
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}
DURATION = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_defines_the_api_service_on_8008_with_artifacts_restart_and_healthcheck():
    spec = compose()
    assert set(spec) <= {"services", "volumes", "networks", "configs", "secrets", "name"}, "unknown top-level key"
    api = spec["services"]["api"]
    assert set(api) <= SERVICE_KEYS, f"unknown service keys {set(api) - SERVICE_KEYS}"
    assert api["build"] == "." or api["build"].get("context") == "."
    assert f"{ServeConfig().port}:8008" in [str(p) for p in api["ports"]]
    assert api["restart"] in {"always", "unless-stopped", "on-failure"}
    grace = re.fullmatch(r"(\d+)s", str(api["stop_grace_period"]))  # Docker's 10 s would kill the server before it saves
    assert grace and int(grace.group(1)) >= 2 * server_options(Config())["timeout_graceful_shutdown"]
    assert api["mem_limit"] == "2g"  # `deploy.resources` is ignored by docker-compose v1 without --compatibility

    assert "/artifacts" in [volume.split(":")[1] for volume in api["volumes"]]
    assert api["environment"]["FBM_ARTIFACTS"] == "/artifacts"
    assert "FBM_API_KEY" in api["environment"]
    user = re.fullmatch(r"\$\{FBM_UID:-(\d+)\}:\$\{FBM_GID:-(\d+)\}", api["user"])  # the owner of ./artifacts, which it writes
    assert user and user.group(1) != "0"

    check = api["healthcheck"]
    assert set(check) <= HEALTHCHECK_KEYS
    assert check["test"][0] in {"CMD", "CMD-SHELL"} and "/health" in " ".join(check["test"])
    for key in ("interval", "timeout", "start_period"):
        assert DURATION.match(str(check[key])), f"healthcheck.{key} {check[key]!r} is not a duration"
    assert int(check["retries"]) >= 1


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="Debian's docker-compose is not installed")
def test_docker_compose_accepts_the_file_and_refuses_a_broken_one(tmp_path):
    ok = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert ok.returncode == 0, ok.stderr
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("healthcheck:", "healthchek:"))
    bad = subprocess.run(["docker-compose", "-f", str(broken), "config", "-q"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_is_a_cpu_image_with_the_code_a_non_root_user_and_a_healthcheck():
    instructions = _dockerfile_instructions()
    names = [name for name, _ in instructions]
    assert names[0] == "FROM" and re.match(r"python:3\.11", instructions[0][1])
    runs = " ".join(arg for name, arg in instructions if name == "RUN")
    assert "whl/cpu" in runs and "requirements.txt" in runs and "stopwords wordnet" in runs
    assert "requirements-dev" not in runs, "the image serves: the test tools stay out of it"
    runtime = (REPO_ROOT / "requirements.txt").read_text()
    for tool in ("pytest", "selenium", "schemathesis", "hypothesis"):
        assert f"\n{tool}==" not in runtime, f"{tool} is a test tool: it belongs in requirements-dev.txt"

    users = [arg for name, arg in instructions if name == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert names.index("USER") < names.index("CMD")
    assert "8008" in dict(instructions)["EXPOSE"]
    assert "/health" in dict(instructions)["HEALTHCHECK"]
    assert dict(instructions)["CMD"].replace(" ", "") == '["fbm","serve"]'

    copied = {arg.split()[0].rstrip("/") for name, arg in instructions if name == "COPY"}
    for source in copied:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"
    packages = {name.split(".")[0] for name in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]}
    assert packages <= copied, f"packages missing from the image: {set(packages) - copied}"

    ignored = DOCKERIGNORE.read_text().split()
    assert {"artifacts", ".venv", ".git"} <= set(ignored)


def test_the_healthcheck_command_passes_on_a_serving_api_and_fails_without_one(tmp_path):
    code = compose()["services"]["api"]["healthcheck"]["test"][-1]
    assert code in DOCKERFILE.read_text(), "the Dockerfile and the compose file should run the same check"
    config = tiny_config(tmp_path)
    with live_server(config, fake_services(config)) as url:
        here = code.replace("http://127.0.0.1:8008", url)
        assert subprocess.run([sys.executable, "-c", here], capture_output=True, timeout=30).returncode == 0
    assert subprocess.run([sys.executable, "-c", here], capture_output=True, timeout=30).returncode != 0


def test_the_server_imports_no_training_only_package():
    """torchvision (1.8 s of imports), gensim and matplotlib are for training and reports: a server or
    `fbm similar` start that imports them is slower and larger for nothing."""
    code = "import sys, api.app, combined_model.inference; print(' '.join(sorted({'torchvision', 'gensim', 'matplotlib'} & {m.split('.')[0] for m in sys.modules})))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []
