"""One settings class: defaults, env with CUTOUT_ and __, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutout_fleet.config.settings import load_settings
from cutout_fleet.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    import os

    for name in list(os.environ):
        if name.startswith("CUTOUT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_need_no_environment() -> None:
    settings = load_settings()
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.queues.cpu == "cpu" and settings.queues.gpu == "gpu"
    assert settings.default_model == "u2netp"


def test_nested_values_come_from_double_underscore_variables(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CUTOUT_S3__ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("CUTOUT_WORKER__MODELS", '["u2netp", "birefnet-lite"]')
    monkeypatch.setenv("CUTOUT_MODEL_DIR", "/srv/models")
    settings = load_settings()
    assert settings.s3.endpoint_url == "http://127.0.0.1:9000"
    assert settings.worker.models == ["u2netp", "birefnet-lite"]
    assert settings.model_dir == Path("/srv/models")


def test_a_dotenv_file_in_the_working_directory_is_not_read_on_its_own(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / ".env").write_text("CUTOUT_ITEMS_PER_TASK=4\n")
    assert load_settings().items_per_task == 16


def test_the_file_named_by_cutout_env_file_is_read(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "fleet.env").write_text("CUTOUT_ITEMS_PER_TASK=4\n")
    monkeypatch.setenv("CUTOUT_ENV_FILE", str(tmp_path / "fleet.env"))
    assert load_settings().items_per_task == 4


def test_a_cutout_env_file_that_is_not_a_file_stops_start_up(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CUTOUT_ENV_FILE", str(tmp_path / "missing.env"))
    with pytest.raises(ConfigError, match="CUTOUT_ENV_FILE"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CUTOUT_S3__MAX_ATTEMPTS", "zero"),
        ("CUTOUT_ITEMS_PER_TASK", "0"),
        ("CUTOUT_REDIS_URL", "http://localhost"),
        ("CUTOUT_LIMITS__MAX_PIXELS", "-5"),
        ("CUTOUT_WORKER__VISIBILITY_TIMEOUT_S", "0"),
    ],
)
def test_an_invalid_value_fails_at_start_up_naming_its_variable(
    monkeypatch, variable: str, value: str
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert variable in str(info.value)
