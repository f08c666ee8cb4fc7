"""The `recfunnel` commands, run as a user would."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from recfunnel.cli import app
from recfunnel.data.synthetic import SyntheticConfig, write_synthetic_files

from test_funnel import small_config

runner = CliRunner()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_synthetic_files(SyntheticConfig(n_users=250, n_items=400, seed=3), tmp_path_factory.mktemp("syn"))


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "small.toml"
    p.write_text(small_config().to_toml())
    return p


def test_evaluate_writes_json_and_report(data_dir, config_file, tmp_path):
    out = tmp_path / "ev.json"
    r = runner.invoke(app, ["evaluate", "--data", str(data_dir), "--config", str(config_file), "--json", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert 0 < res["final"]["NDCG@10"] <= 1 and 0 < res["pool"]["HR"] <= 1
    assert set(res["channels"]) == {"popular", "hot", "category_hot", "itemcf", "usercf", "cooccur"}
    assert (tmp_path / "report.md").exists() and (tmp_path / "report.png").stat().st_size > 1000
    assert "NDCG@10" in r.output


def test_evaluate_with_rank_none_and_rerank_none(data_dir, config_file, tmp_path):
    out = tmp_path / "ev.json"
    r = runner.invoke(app, ["evaluate", "--data", str(data_dir), "--config", str(config_file), "--rank", "none", "--rerank", "none", "--json", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["config"] == {"rank": "none", "rerank": "none"}


def test_unknown_ranker_is_a_clear_error(data_dir):
    r = runner.invoke(app, ["evaluate", "--data", str(data_dir), "--rank", "xgboost"])
    assert r.exit_code == 2 and "unknown ranker 'xgboost'" in r.output


def test_build_then_recommend(data_dir, config_file, tmp_path):
    art = tmp_path / "art"
    r = runner.invoke(app, ["build", "--data", str(data_dir), "--out", str(art), "--config", str(config_file), "--no-evaluate", "--quiet"])
    assert r.exit_code == 0, r.output
    assert (art / "current" / "manifest.json").exists()
    r = runner.invoke(app, ["recommend", "--artifacts", str(art), "--user", "u1", "--n", "5", "--json"])
    assert r.exit_code == 0, r.output
    recs = json.loads(r.output)
    assert len(recs) == 5 and all(x["channels"] for x in recs)
    r = runner.invoke(app, ["recommend", "--artifacts", str(tmp_path / "missing"), "--user", "u1"])
    assert r.exit_code == 2 and "recfunnel build" in r.output


def test_data_info_reports_bad_rows(data_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    lines = (data_dir / "events.csv").read_text().splitlines()
    lines.insert(3, "u1,i1,not-a-time,rating,3.0")
    (bad / "events.csv").write_text("\n".join(lines) + "\n")
    r = runner.invoke(app, ["data", "info", "--data", str(bad)])
    assert r.exit_code == 0, r.output
    assert "1 bad rows dropped" in r.output and "events.csv" in r.output


def test_config_command_prints_and_validates(tmp_path):
    r = runner.invoke(app, ["config"])
    assert r.exit_code == 0 and "[recall.cooccur]" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[merge]\npool_size = -1\n")
    r = runner.invoke(app, ["config", str(bad)])
    assert r.exit_code == 2 and "pool_size" in r.output
