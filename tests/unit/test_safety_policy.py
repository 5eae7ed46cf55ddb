"""The gate's policy file: the built-in one, an operator's own through a setting, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutout_fleet.config.settings import load_settings
from cutout_fleet.errors import ConfigError
from cutout_fleet.safety import load_policy, parse_policy
from cutout_fleet.safety.labels import NUDENET_LABELS

EXPOSED = (
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
)


def test_the_builtin_policy_blocks_exposed_nudity_and_reviews_what_is_missing() -> None:
    policy = load_policy()

    assert policy.version
    assert (policy.on_missing, policy.on_failed) == ("review", "review")
    labels = policy.stage("nudenet").labels
    for label in EXPOSED:
        assert labels[label].block is not None, label
    assert "FACE_FEMALE" not in labels and "FACE_MALE" not in labels
    assert set(labels) <= set(NUDENET_LABELS)


def test_the_builtin_policy_has_rules_for_the_later_stages() -> None:
    policy = load_policy()

    assert policy.stage("classifier").scores
    assert policy.stage("caption").keywords


def test_an_operators_policy_file_replaces_the_builtin_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a policy file named by the setting
    path = tmp_path / "policy.toml"
    path.write_text(
        'version = 7\non_missing = "block"\n[stages.nudenet.labels]\nBELLY_EXPOSED = { review = 0.5 }\n'
    )
    monkeypatch.setenv("CUTOUT_SAFETY__POLICY_FILE", str(path))

    # When the settings and then the policy are loaded
    policy = load_policy(load_settings().safety.policy_file)

    # Then it is that policy, whole
    assert policy.version == "7"
    assert policy.on_missing == "block" and policy.on_failed == "review"
    assert list(policy.stage("nudenet").labels) == ["BELLY_EXPOSED"]


def test_a_policy_file_setting_that_names_no_file_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUTOUT_SAFETY__POLICY_FILE", str(tmp_path / "absent.toml"))

    with pytest.raises(ConfigError, match="CUTOUT_SAFETY__POLICY_FILE"):
        load_settings()


def test_the_safety_settings_defaults() -> None:
    safety = load_settings().safety

    assert safety.policy_file is None
    assert (safety.quarantine_prefix, safety.on_block, safety.on_review) == (
        "_quarantine",
        "drop",
        "quarantine",
    )


@pytest.mark.parametrize("prefix", ["", "/", "a/../b", "./x"])
def test_a_quarantine_prefix_outside_the_output_is_refused(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUTOUT_SAFETY__QUARANTINE_PREFIX", prefix)

    with pytest.raises(ConfigError, match="CUTOUT_SAFETY__QUARANTINE_PREFIX"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('on_missing = "review"', "version"),
        ('version = "1"\non_missing = "maybe"', "on_missing"),
        (
            'version = "1"\n[stages.nudenet.labels]\nFEMALE_BREAST_EXPOSD = { block = 0.5 }',
            "FEMALE_BREAST_EXPOSD",
        ),
        ('version = "1"\n[stages.nudenet.labels]\nANUS_EXPOSED = { block = 1.5 }', "less than or equal to 1"),
        (
            'version = "1"\n[stages.nudenet.labels]\nANUS_EXPOSED = { review = 0.6, block = 0.5 }',
            "below block",
        ),
        ('version = "1"\n[stages.nudenet.labels]\nANUS_EXPOSED = {}', "review, block or both"),
        ('version = "1"\n[stages.nudenet.labels]\nANUS_EXPOSED = { blok = 0.5 }', "blok"),
        ('version = "1"\n[stages.nudenett]\non_missing = "allow"', "unknown stage 'nudenett'"),
        ('version = "1"\nthreshold = 0.5', "threshold"),
        ('version = "1"\n[stages.caption.keywords]\nreview = [" "]', "keyword is empty"),
        ('version = "1"\nstages = [', "not valid TOML"),
    ],
)
def test_a_policy_that_would_not_mean_what_it_says_is_refused(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="safety policy my-policy") as caught:
        parse_policy(text, "my-policy")

    assert problem in str(caught.value)


def test_an_unreadable_policy_file_names_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_bytes(b"\xff\xfe not utf-8")

    with pytest.raises(ConfigError, match="CUTOUT_SAFETY__POLICY_FILE"):
        load_policy(path)


def test_the_digest_follows_the_rules_not_the_layout() -> None:
    one = parse_policy('version = "1"\n[stages.nudenet.labels]\nANUS_EXPOSED = { block = 0.5 }', "a")
    same = parse_policy(
        'version = "1"\n\n[stages.nudenet]\nlabels = { ANUS_EXPOSED = { block = 0.50 } }', "b"
    )
    other = parse_policy('version = "1"\n[stages.nudenet.labels]\nANUS_EXPOSED = { block = 0.6 }', "c")

    assert one.digest() == same.digest()
    assert one.digest() != other.digest()
