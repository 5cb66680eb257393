"""vllm-ascend's PYTORCH_NPU_ALLOC_CONF policy (PR #5855), reproduced exactly, and the toolkit's token-based one."""

from __future__ import annotations

import pytest

from toolkit.core.errors import ToolkitError
from toolkit.conf.policy import recommended_policy, upstream_policy

NPU = "PYTORCH_NPU_ALLOC_CONF"
GEN = "PYTORCH_ALLOC_CONF"


def codes(result) -> set[str]:
    return {q.code for q in result.quirks}


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({}, "expandable_segments:True"),  # unset -> the default value itself, no suffix
        ({NPU: "page_size:1g"}, "page_size:1g,expandable_segments:True"),  # the PR's own example
        ({NPU: "expandable_segments:False"}, "expandable_segments:False"),  # explicit baseline kept
        ({NPU: "max_split_size_mb:256"}, "max_split_size_mb:256"),  # exclusive key: nothing appended
        ({NPU: "garbage_collection_threshold:0.6"}, "garbage_collection_threshold:0.6"),
        ({NPU: ""}, ",expandable_segments:True"),  # leading comma, upstream quirk
    ],
)
def test_upstream_rewrites_exactly(before, after):
    result = upstream_policy(before, "0.14.0rc1")
    assert result.after[NPU] == after
    assert result.log == (f"Set {NPU}={after}",)


def test_empty_value_flags_leading_comma():
    assert "leading-comma" in codes(upstream_policy({NPU: ""}, "v0.18.0"))


def test_substring_test_is_fooled_by_other_keys():
    # pin_memory_expandable_segments contains "expandable_segments": upstream appends nothing.
    result = upstream_policy({NPU: "pin_memory_expandable_segments:True"}, None)
    assert result.after[NPU] == "pin_memory_expandable_segments:True"
    assert "substring-test" in codes(result)


def test_lowercase_boolean_blocks_default_and_is_flagged():
    result = upstream_policy({NPU: "expandable_segments:true"}, None)
    assert result.after[NPU] == "expandable_segments:true"
    assert "bad-boolean" in codes(result)


def test_generic_variable_only_users_get_overridden():
    result = upstream_policy({GEN: "expandable_segments:False"}, "0.14.0rc1")
    assert result.after == {GEN: "expandable_segments:False", NPU: "expandable_segments:True"}
    assert "generic-var-ignored" in codes(result)


def test_versions_before_the_default_change_nothing():
    env = {NPU: "page_size:1g"}
    result = upstream_policy(env, "0.13.0")
    assert result.after == env and not result.changed
    assert "no-default" in codes(result)
    assert upstream_policy(env, "0.14.0rc1").changed  # first tag with PR #5855


def test_sleep_mode_leaves_variable_alone_and_warns_about_camem():
    result = upstream_policy({NPU: "expandable_segments:True"}, None, sleep_mode=True)
    assert result.after == {NPU: "expandable_segments:True"}
    assert {"sleep-mode", "sleep-expandable"} <= codes(result)
    assert upstream_policy({}, None, sleep_mode=True).after == {}


def test_rl_config_strips_then_default_reappends_without_sleep_mode():
    env = {NPU: "page_size:1g, expandable_segments:False"}
    with_sleep = upstream_policy(env, None, sleep_mode=True, rl_enabled=True)
    assert with_sleep.after[NPU] == "page_size:1g"
    without_sleep = upstream_policy(env, None, rl_enabled=True)
    assert without_sleep.after[NPU] == "page_size:1g,expandable_segments:True"
    assert {"rl-strip", "rl-without-sleep"} <= codes(without_sleep)


def test_environ_helper_replaces_only_alloc_variables():
    result = upstream_policy({NPU: "page_size:1g", "HOME": "/root"}, None)
    env = result.environ({NPU: "page_size:1g", "HOME": "/root"})
    assert env == {"HOME": "/root", NPU: "page_size:1g,expandable_segments:True"}


def test_bad_version_is_a_clear_error():
    with pytest.raises(ToolkitError, match="unknown vllm-ascend version"):
        upstream_policy({}, "fourteen")


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({}, {NPU: "expandable_segments:True"}),
        ({NPU: ""}, {NPU: "expandable_segments:True"}),  # no leading comma
        ({NPU: "page_size:1g"}, {NPU: "page_size:1g,expandable_segments:True"}),
        ({NPU: "max_split_size_mb:256"}, {NPU: "max_split_size_mb:256"}),
        ({NPU: "pin_memory_expandable_segments:True"},
         {NPU: "pin_memory_expandable_segments:True,expandable_segments:True"}),
    ],
)
def test_recommended_policy_is_token_based(before, after):
    assert recommended_policy(before).after == after


def test_recommended_policy_edits_the_variable_torch_npu_reads():
    # A PYTORCH_ALLOC_CONF-only user keeps a single variable (no "both set" error on torch_npu master).
    result = recommended_policy({GEN: "page_size:1g"}, torch_npu_version="26.2.0")
    assert result.after == {GEN: "page_size:1g,expandable_segments:True"}


def test_recommended_policy_turns_expandable_off_for_sleep_mode():
    result = recommended_policy({NPU: "expandable_segments:True"}, sleep_mode=True)
    assert result.after == {NPU: "expandable_segments:False"}


def test_recommended_policy_leaves_invalid_conf_alone():
    result = recommended_policy({NPU: "expandable_segment:True"})
    assert result.after == {NPU: "expandable_segment:True"}
    assert "left unchanged" in result.notes[0]
