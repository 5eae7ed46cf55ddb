"""A gpu model asks for CUDA -> CPU, and its session must get CUDA unless CUTOUT_WORKER__ALLOW_CPU=true: the
start-up check, given the providers a session got, and the real sessions of this CPU-only machine."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cutout_fleet.catalog import Catalog, load_catalog
from cutout_fleet.cli.local import worker_concurrency
from cutout_fleet.config.settings import Settings, WorkerSettings
from cutout_fleet.errors import ConfigError
from cutout_fleet.worker.models.providers import (
    ALLOW_CPU_ENV,
    CPU,
    CUDA,
    check_gpu_providers,
    probe_providers,
    providers_for,
)
from cutout_fleet.worker.sessions import SessionPool, check_gpu_models
from tests.support.tiny_models import BEN2_MODEL, write_tiny_models


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def catalog_file(model_dir: Path) -> Path:
    return write_tiny_models(model_dir)


@pytest.fixture
def catalog(model_dir: Path, catalog_file: Path) -> Catalog:
    return load_catalog(Settings(model_dir=model_dir, model_catalog=catalog_file))


def settings(model_dir: Path, catalog_file: Path, **worker: object) -> Settings:
    return Settings(
        model_dir=model_dir,
        model_catalog=catalog_file,
        worker=WorkerSettings(**worker),  # type: ignore[arg-type]
    )


# --- which providers a session asks for ---------------------------------------------------------


def test_a_gpu_model_asks_for_cuda_then_cpu_and_a_cpu_model_for_the_cpu(catalog: Catalog) -> None:
    worker = WorkerSettings()

    assert providers_for(catalog.get(BEN2_MODEL), worker) == [CUDA, CPU]
    assert providers_for(catalog.get("tiny-u2netp"), worker) == [CPU]


def test_cutout_worker_providers_when_set_are_asked_for_by_every_model(catalog: Catalog) -> None:
    worker = WorkerSettings(providers=["TensorrtExecutionProvider", CUDA, CPU])

    assert providers_for(catalog.get(BEN2_MODEL), worker) == ["TensorrtExecutionProvider", CUDA, CPU]
    assert providers_for(catalog.get("tiny-u2netp"), worker) == ["TensorrtExecutionProvider", CUDA, CPU]


# --- the check, given the providers a session got -----------------------------------------------


def test_a_gpu_model_whose_session_got_cuda_passes(catalog: Catalog) -> None:
    assert check_gpu_providers(catalog.get(BEN2_MODEL), [CUDA, CPU], allow_cpu=False) is None


def test_a_gpu_model_that_fell_back_to_the_cpu_is_refused_and_the_message_says_how_to_allow_it(
    catalog: Catalog,
) -> None:
    with pytest.raises(ConfigError) as caught:
        check_gpu_providers(catalog.get(BEN2_MODEL), [CPU], allow_cpu=False)

    message = str(caught.value)
    assert f"{ALLOW_CPU_ENV}=true" in message and BEN2_MODEL in message and "100x slower" in message


def test_with_allow_cpu_the_fallback_is_a_warning(catalog: Catalog) -> None:
    warning = check_gpu_providers(catalog.get(BEN2_MODEL), [CPU], allow_cpu=True)

    assert warning is not None and "100x slower" in warning and ALLOW_CPU_ENV in warning


def test_a_cpu_model_on_the_cpu_is_not_a_fallback(catalog: Catalog) -> None:
    assert check_gpu_providers(catalog.get("tiny-u2netp"), [CPU], allow_cpu=False) is None


# --- real sessions on this machine (no CUDA) ----------------------------------------------------


def test_the_probe_reports_the_providers_a_real_session_got(catalog: Catalog, model_dir: Path) -> None:
    # In a child process, so that CUDA never starts in a worker's parent
    assert probe_providers(catalog.get(BEN2_MODEL), model_dir, [CPU]) == [CPU]


def test_the_probe_passes_on_a_load_failure_with_its_reason(catalog: Catalog, model_dir: Path) -> None:
    (model_dir / "tiny-ben2.onnx").write_bytes(b"not a model")

    with pytest.raises(ConfigError, match="sha256"):
        probe_providers(catalog.get(BEN2_MODEL), model_dir, [CPU])


def test_the_session_pool_refuses_a_gpu_model_on_the_cpu(model_dir: Path, catalog_file: Path) -> None:
    config = settings(model_dir, catalog_file, models=[BEN2_MODEL])
    pool = SessionPool(config, load_catalog(config))

    with pytest.raises(ConfigError, match=ALLOW_CPU_ENV):
        pool.get(BEN2_MODEL)


def test_the_session_pool_runs_a_gpu_model_on_the_cpu_when_allowed(
    model_dir: Path, catalog_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = settings(model_dir, catalog_file, models=[BEN2_MODEL], allow_cpu=True)
    caplog.set_level(logging.INFO)

    session = SessionPool(config, load_catalog(config)).get(BEN2_MODEL)

    assert session.providers == [CPU] and session.asked_providers == [CUDA, CPU]
    assert "100x slower" in caplog.text
    assert f"providers ['{CPU}'] (asked for ['{CUDA}', '{CPU}'])" in caplog.text


def test_the_start_up_check_refuses_a_worker_whose_gpu_model_would_run_on_the_cpu(
    model_dir: Path, catalog_file: Path
) -> None:
    config = settings(model_dir, catalog_file, models=[BEN2_MODEL])

    with pytest.raises(ConfigError, match=ALLOW_CPU_ENV):
        check_gpu_models(config, load_catalog(config), {"gpu"})


def test_the_start_up_check_lets_cpu_models_and_allowed_fallbacks_through(
    model_dir: Path, catalog_file: Path
) -> None:
    cpu_worker = settings(model_dir, catalog_file, models=["tiny-u2netp"])
    allowed = settings(model_dir, catalog_file, models=[BEN2_MODEL], allow_cpu=True)

    check_gpu_models(cpu_worker, load_catalog(cpu_worker), {"cpu"})
    check_gpu_models(allowed, load_catalog(allowed), {"gpu"})


# --- concurrency -------------------------------------------------------------------------------


def test_the_gpu_queue_defaults_to_one_process_unless_the_setting_is_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CUTOUT_WORKER__CONCURRENCY", raising=False)
    default = Settings(model_dir=tmp_path)
    monkeypatch.setenv("CUTOUT_WORKER__CONCURRENCY", "4")
    given = Settings(model_dir=tmp_path)

    assert worker_concurrency(default, ["gpu"]) == worker_concurrency(default, ["cpu", "gpu"]) == 1
    assert worker_concurrency(default, ["cpu"]) == default.worker.concurrency
    assert worker_concurrency(given, ["gpu"]) == worker_concurrency(given, ["cpu"]) == 4
