"""Defaults that do not depend on the current folder: flag > environment > config file > built-in."""

from __future__ import annotations

from pathlib import Path

import pytest

from fssbench.cli.config import config_settings

VARIABLES = ("FSSBENCH_RESULTS", "FSSBENCH_DATA", "FSSBENCH_DEVICE")


@pytest.fixture
def clean_environment(monkeypatch):
    for variable in VARIABLES:  # set, then delete: monkeypatch restores the original state afterwards
        monkeypatch.setenv(variable, "unset")
        monkeypatch.delenv(variable)
    return monkeypatch


@pytest.fixture
def project(tmp_path, clean_environment) -> Path:
    """A folder with fssbench.toml and a subfolder to run from."""
    (tmp_path / "fssbench.toml").write_text('results = "shared-results"\ndevice = "cpu"\n')
    (tmp_path / "deep" / "er").mkdir(parents=True)
    clean_environment.chdir(tmp_path / "deep" / "er")
    return tmp_path


def test_the_nearest_config_file_gives_absolute_paths_relative_to_itself(project):
    assert config_settings() == {"FSSBENCH_RESULTS": str(project / "shared-results"), "FSSBENCH_DEVICE": "cpu"}
    (project / "deep" / "fssbench.toml").write_text('data_root = "~/datasets"\nresults = "/abs/results"\n')
    assert config_settings() == {"FSSBENCH_DATA": str(Path("~/datasets").expanduser()),
                                 "FSSBENCH_RESULTS": "/abs/results"}


def test_pyproject_tool_table_is_read_and_a_pyproject_without_one_is_skipped(tmp_path, clean_environment):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.fssbench]\nresults = "r"\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pyproject.toml").write_text('[project]\nname = "y"\n')
    assert config_settings(tmp_path / "sub") == {"FSSBENCH_RESULTS": str(tmp_path / "r")}


def test_an_unknown_key_is_named_with_its_file(cli, tmp_path, clean_environment):
    (tmp_path / "fssbench.toml").write_text('result = "typo"\n')
    clean_environment.chdir(tmp_path)
    result = cli("runs", "list")
    assert result.code == 2 and "unknown key 'result'" in result.stderr and "fssbench.toml" in result.stderr


def test_results_come_from_flag_then_environment_then_config(cli, project, clean_environment):
    def named_store(*args: str) -> str:
        result = cli("runs", "list", *args)
        assert result.code == 2  # no store there yet: the message names where it looked
        return " ".join(result.stderr.split())

    assert f"no results store at {project / 'shared-results' / 'fssbench.sqlite'}" in named_store()
    clean_environment.setenv("FSSBENCH_RESULTS", str(project / "from-env"))
    assert f"no results store at {project / 'from-env' / 'fssbench.sqlite'}" in named_store()
    # a relative flag is made absolute against the current folder
    assert f"no results store at {project / 'deep' / 'er' / 'flag' / 'fssbench.sqlite'}" in named_store(
        "--results", "flag")


def test_eval_writes_where_the_config_says_from_any_folder(cli, project, clean_environment):
    result = cli("eval", "-m", "oracle", "-p", "demo-1shot", "--fold", "0", "--episodes", "2", "--json")
    assert result.code == 0, result.stderr
    runs = list((project / "shared-results" / "runs").glob("*.json"))
    assert len(runs) == 1 and '"device": "cpu"' in runs[0].read_text()
