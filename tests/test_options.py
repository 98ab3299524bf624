"""Method options (--option NAME=VALUE), --backbone and --batch-size, from parsing to the record."""

import json

import pytest

from fssbench import registry
from fssbench.harness.errors import UsageError
from fssbench.harness.options import changed_options, describe_options, resolve_backbone, resolve_options

from adapters_for_tests import Thresholded


def test_options_are_typed_by_their_defaults():
    options = resolve_options("m", Thresholded, ["threshold=0.6", "invert=on"])
    assert options == {"threshold": 0.6, "invert": True}
    assert resolve_options("m", Thresholded, []) == Thresholded.option_defaults
    assert describe_options(changed_options(Thresholded, options)) == "invert=on,threshold=0.6"


@pytest.mark.parametrize("flags, needle", [
    (["thresh=0.6"], "has no option 'thresh'; its options: threshold (default 0.45), invert (default False)"),
    (["threshold=high"], "--option threshold=high: expected float"),
    (["invert=maybe"], "expected true or false"),
    (["invert"], "expected NAME=VALUE"),
    (["invert=1", "invert=0"], "given twice"),
])
def test_bad_options_say_what_is_accepted(flags, needle):
    with pytest.raises(UsageError, match=None) as error:
        resolve_options("m", Thresholded, flags)
    assert needle in str(error.value)


def test_backbone_defaults_to_the_first_and_refuses_others():
    assert resolve_backbone("m", Thresholded, None) == "efficientnet-lite0"
    assert resolve_backbone("m", Thresholded, "efficientnet-lite1") == "efficientnet-lite1"
    with pytest.raises(UsageError, match="accepts: efficientnet-lite0, efficientnet-lite1"):
        resolve_backbone("m", Thresholded, "resnet50")
    with pytest.raises(UsageError, match="fixed backbone"):
        resolve_backbone("oracle", registry.methods.get("oracle"), "resnet50")


@pytest.fixture
def thresholded():
    registry.methods.register("test-Thresholded", "adapters_for_tests:Thresholded", "test adapter")


def run(cli, tmp_path, *flags):
    result = cli("eval", "-m", "test-Thresholded", "-p", "demo-1shot", "--fold", "0", "--episodes", "12",
                 "--json", "--out", str(tmp_path), *flags)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def test_options_and_backbone_reach_the_adapter_and_the_record(cli, tmp_path, thresholded):
    default = run(cli, tmp_path)
    assert default["options"] == {"threshold": 0.45, "invert": False} and default["variant"] == ""
    assert default["backbone"] == "efficientnet-lite0"
    inverted = run(cli, tmp_path, "--option", "invert=true", "--backbone", "efficientnet-lite1")
    assert inverted["variant"] == "invert=on" and inverted["backbone"] == "efficientnet-lite1"
    assert inverted["metrics"][0]["value"] != default["metrics"][0]["value"]
    assert inverted["run_id"] != default["run_id"]  # a different run, never a resume of the default one


def test_a_batch_scores_exactly_as_single_episodes(cli, tmp_path, thresholded):
    single = run(cli, tmp_path / "one")
    batched = run(cli, tmp_path / "five", "--batch-size", "5")
    assert batched["batch_size"] == 5
    assert batched["results"][0]["episode_scores"] == single["results"][0]["episode_scores"]


def test_an_option_the_method_lacks_is_a_usage_error_on_the_command_line(cli, tmp_path):
    result = cli("eval", "-m", "oracle", "-p", "demo-1shot", "--option", "steps=5", "--out", str(tmp_path))
    assert result.code == 2 and "has no option 'steps'; its options: none" in result.stderr
