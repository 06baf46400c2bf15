"""`fbm bench --quick --reuse` on the tiny trained pipeline: every part runs and the report holds its figures."""
from __future__ import annotations

import json
import subprocess

import scripts.bench as bench
from scripts.cli import main


def test_quick_bench_measures_accuracy_serving_and_scale(trained_pipeline, tmp_path):
    config, _ = trained_pipeline
    out = tmp_path / "BENCH.md"
    argv = ["bench", "--quick", "--reuse", "--artifacts", config.data.artifacts_dir, "--parts", "accuracy,serving,scale", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.with_suffix(".json").read_text())

    assert set(result["accuracy"]["models"]) >= {"image", "text", "combined", "late_fusion"}
    serving = result["serving"]
    assert set(serving["endpoints"]) == set(bench.ENDPOINTS)
    for endpoint, rows in serving["endpoints"].items():
        for row in rows:
            assert row["non_2xx"] == 0, (endpoint, row)
            assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
            assert row["throughput_rps"] > 0 and row["throughput_over_raw"] > 0
            assert row["server_cpu_ms_per_request"] > 0 and row["client_cpu_ms_per_request"] >= 0
    for endpoint, raw in serving["raw"]["endpoints"].items():
        assert raw["cpu_ms_per_listing"] > 0, endpoint
    assert serving["server_peak_rss_mib"] > 0
    assert result["scale"]["recall@10"] >= 0.9 and result["scale"]["kind"] == "hnsw"

    report = out.read_text()
    for heading in ("## Accuracy", "## Serving", "## Retrieval at scale"):
        assert heading in report
    assert "`fbm bench --quick --reuse" in report


def test_the_report_says_when_the_code_measured_is_not_the_commit(tmp_path, monkeypatch):
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("commit", "-q", "-m", "one")
    monkeypatch.setattr(bench, "REPO_ROOT", tmp_path)
    (tmp_path / "notes.txt").write_text("untracked files do not change the code")
    clean = bench.machine()["commit"]
    assert len(clean) >= 7 and "+" not in clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert bench.machine()["commit"] == clean + "+uncommitted"
