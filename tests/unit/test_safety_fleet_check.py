"""The producer's rule for `--safety`: refuse a level that no live worker of the queue can run.

It is the rule for models: refuse only when workers of the queue answered and none can; a queue with
no live worker, or with a worker that could not say, takes the job.
"""

from __future__ import annotations

from cutout_fleet.producer.fleet import (
    LiveWorker,
    QueueFleet,
    _worker,
    safety_refusal,
    safety_warning,
)

QUEUE = "cpu"


def worker(name: str, *levels: str) -> LiveWorker:
    return LiveWorker(name, frozenset({QUEUE}), frozenset({"u2netp"}), 1, frozenset(levels))


def fleet(*workers: LiveWorker, unknown: tuple[LiveWorker, ...] = ()) -> QueueFleet:
    return QueueFleet(QUEUE, tuple(workers), unknown)


def test_a_worker_says_which_safety_levels_it_runs() -> None:
    reply = {"queues": [QUEUE], "installed": ["u2netp"], "processes": 2, "safety": ["none", "light"]}

    assert _worker("w1", reply).safety == frozenset({"none", "light"})


def test_a_worker_from_before_safety_levels_runs_none() -> None:
    reply = {"queues": [QUEUE], "installed": ["u2netp"], "processes": 1}

    assert _worker("old", reply).safety == frozenset({"none"})


def test_a_worker_that_does_not_know_the_command_cannot_say() -> None:
    assert _worker("other", {"error": "No such command"}).safety is None


def test_light_is_refused_when_no_live_worker_of_the_queue_has_nudenet() -> None:
    # Given two live workers on the queue, neither with NudeNet
    queue = fleet(worker("a", "none"), worker("b", "none"))

    # When a --safety light job asks
    problem = safety_refusal(queue, "light")

    # Then it is refused, naming the level, the queue, what the workers run and how to fix it
    assert problem is not None
    assert "--safety light: none of the 2 live workers on queue 'cpu' can run it (they run: none)" in problem
    assert "cutout-fleet[safety-light]" in problem and "WITH_SAFETY_LIGHT=true" in problem


def test_light_is_accepted_when_one_live_worker_can_run_it_with_a_warning() -> None:
    queue = fleet(worker("a", "none"), worker("b", "none", "light"))

    assert safety_refusal(queue, "light") is None
    warning = safety_warning(queue, "light")
    assert warning is not None and "only 1 of the 2 live workers on queue 'cpu'" in warning


def test_light_on_a_fleet_that_runs_it_everywhere_is_accepted_without_a_warning() -> None:
    queue = fleet(worker("a", "none", "light"))

    assert safety_refusal(queue, "light") is None and safety_warning(queue, "light") is None


def test_no_safety_is_never_refused() -> None:
    queue = fleet(LiveWorker("a", frozenset({QUEUE}), None, 1, frozenset()))

    assert safety_refusal(queue, "none") is None and safety_warning(queue, "none") is None


def test_a_queue_with_no_live_worker_takes_the_job() -> None:
    assert safety_refusal(fleet(), "light") is None


def test_a_worker_that_could_not_say_keeps_the_job_possible() -> None:
    unknown = LiveWorker("other", None, None, 0, None)

    assert safety_refusal(fleet(worker("a", "none"), unknown=(unknown,)), "light") is None
