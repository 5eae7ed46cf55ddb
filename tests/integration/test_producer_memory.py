"""The producer streams: its traced peak memory does not grow with the manifest (10,000 vs 100,000 keys)."""

from __future__ import annotations

import pytest

from bench.enqueue_speed import one_run, write_manifest

pytestmark = pytest.mark.integration


def test_producer_memory_stays_flat_from_10k_to_100k_keys(tmp_path, redis_url, redis_client) -> None:  # type: ignore[no-untyped-def]
    small, large = tmp_path / "10k.csv", tmp_path / "100k.csv"
    write_manifest(small, 10_000)
    write_manifest(large, 100_000)

    peak_small = one_run(redis_url, small, 10_000, 16, trace=True)["traced_peak_mb"]
    figures = one_run(redis_url, large, 100_000, 16, trace=True)

    # Ten times the keys, not ten times the memory: a generous 1.5x bound still catches any per-key list.
    assert figures["traced_peak_mb"] < 1.5 * peak_small + 0.5, (peak_small, figures["traced_peak_mb"])
    assert figures["queue_bytes_per_key"] <= 200, figures
