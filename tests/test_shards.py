"""Shards of one run (`--shard I/N`) merge into the record one process writes, bit for bit in every
metric field; `fssbench merge` refuses anything but all N shards of one run with exit 3."""

import json

import pytest

from fssbench import registry
from fssbench.harness.shards import Shard, ShardedFoldRun
from fssbench.harness.task import Group


@pytest.fixture
def imperfect():
    registry.methods.register("test-Flaky", "adapters_for_tests:Flaky", "test adapter")
    registry.methods.register("test-GfssFirstNovel", "adapters_for_tests:GfssFirstNovel", "test adapter")


def metric_fields(record: dict) -> dict:
    """The record's metric fields: its metrics and fold results, less GFSS's adaptation times."""
    results = [{key: value for key, value in result.items() if key != "adapt_ms"} for result in record["results"]]
    return {"results": results, "metrics": record["metrics"]}


def eval_json(cli, *args) -> dict:
    result = cli("eval", "--device", "cpu", "--json", *args)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def test_shards_take_every_nth_unit_across_groups_and_keep_each_group_preparation():
    class Run:
        def groups(self):
            return [Group([0, 1, 2], prepare=print, name="a"), Group([3, 4], prepare=print, name="b")]

    shares = [[list(group.units) for group in ShardedFoldRun(Run(), Shard(index, 2)).groups()] for index in (0, 1)]
    assert shares == [[[0, 2], [4]], [[1], [3]]]
    assert all(group.prepare is print for group in ShardedFoldRun(Run(), Shard(1, 2)).groups())


@pytest.mark.parametrize("text", ["2/2", "1", "a/2", "-1/2", "1/0"])
def test_bad_shard_flags_are_usage_errors(cli, tmp_path, text):
    result = cli("eval", "-m", "oracle", "-p", "demo-1shot", "--episodes", "2", "--shard", text,
                 "--out", str(tmp_path))
    assert result.code == 2 and "--shard" in result.stderr


@pytest.mark.parametrize("method,protocol,count,fold", [
    ("test-Flaky", "demo-1shot", 2, "all"),
    pytest.param("test-Flaky", "demo-5shot", 3, "all", marks=pytest.mark.slow),
    pytest.param("test-GfssFirstNovel", "gfss-demo-1shot", 2, "1", marks=pytest.mark.slow)])
def test_shards_then_merge_equal_one_run_bit_for_bit(cli, tmp_path, imperfect, method, protocol, count, fold):
    common = ("-m", method, "-p", protocol, "--episodes", "7", "--fold", fold)
    single = eval_json(cli, *common, "--out", str(tmp_path / "single"))
    shards = [eval_json(cli, *common, "--shard", f"{index}/{count}", "--out", str(tmp_path / "shards"))
              for index in range(count)]
    assert [shard["status"] for shard in shards] == ["partial"] * count
    assert [shard["shard"] for shard in shards] == [f"{index}/{count}" for index in range(count)]
    units = sum(len(shard["results"][0].get("episode_scores") or shard["results"][0]["query_confusions"])
                for shard in shards)
    assert units == single["results"][0]["episodes"]  # disjoint shares covering the fold

    merged = cli("merge", *[shard["run_id"] for shard in reversed(shards)], "--results", str(tmp_path / "shards"),
                 "--json")
    assert merged.code == 0, merged.stderr
    merged = json.loads(merged.stdout)
    assert merged["status"] == "complete" and merged["shard"] is None and merged["world_size"] == count
    assert metric_fields(merged) == metric_fields(single)  # exact: the contract
    assert [rank["shard"] for rank in merged["ranks"]] == list(range(count))
    assert sum(rank["units"] for rank in merged["ranks"]) == merged["timing"]["timed_episodes"] + \
        merged["timing"]["warmup_episodes"]
    assert merged["cost"]["cpu_s"] == pytest.approx(sum(shard["cost"]["cpu_s"] for shard in shards))

    board = cli("leaderboard", "--results", str(tmp_path / "shards"))
    assert board.code == 0 and merged["run_id"] in cli("leaderboard", "--results", str(tmp_path / "shards"),
                                                       "--format", "csv").stdout


def test_merge_refuses_mixes_with_exit_3_naming_the_difference(cli, tmp_path, imperfect):
    out = str(tmp_path / "out")
    common = ("-m", "test-Flaky", "-p", "demo-1shot", "--episodes", "5", "--fold", "0", "--out", out)
    zero, one = (eval_json(cli, *common, "--shard", f"{index}/2")["run_id"] for index in (0, 1))
    other_seed = eval_json(cli, *common, "--shard", "1/2", "--seed", "7")["run_id"]
    third = eval_json(cli, *common, "--shard", "2/3")["run_id"]
    whole = eval_json(cli, *common)["run_id"]

    def refused(*runs) -> str:
        result = cli("merge", *runs, "--results", out)
        assert result.code == 3, (result.code, result.stderr)
        return result.stderr

    assert "missing" in refused(zero) and "1/2" in refused(zero)
    assert "seed" in refused(zero, other_seed)
    assert "more than once" in refused(zero, one, one)
    assert "split the run differently" in refused(zero, one, third)
    assert "not a shard" in refused(zero, whole)
    assert cli("merge", zero, one, "--results", out).code == 0


def test_merge_refuses_a_shard_that_did_not_finish(cli, tmp_path, imperfect):
    from adapters_for_tests import Flaky

    out = str(tmp_path / "out")
    common = ("-m", "test-Flaky", "-p", "demo-1shot", "--episodes", "5", "--fold", "0", "--out", out)
    zero = eval_json(cli, *common, "--shard", "0/2")["run_id"]
    Flaky.calls, Flaky.interrupt_at = 0, 2
    try:
        assert cli("eval", "--device", "cpu", *common, "--shard", "1/2").code == 130
    finally:
        Flaky.interrupt_at = None
    [record] = [path for path in (tmp_path / "out" / "runs").glob("*.json") if zero not in path.name]
    interrupted = json.loads(record.read_text())["run_id"]
    result = cli("merge", zero, interrupted, "--results", out)
    assert result.code == 3 and "interrupted" in result.stderr
    resumed = eval_json(cli, *common, "--shard", "1/2")  # the same command resumes the shard's journal
    assert resumed["run_id"] == interrupted and resumed["resumed_episodes"] > 0
    assert cli("merge", zero, interrupted, "--results", out).code == 0
