"""gliomil.runtime.workers: results in job order, the same for any number of workers."""

import os

import numpy as np
import pytest

from gliomil.runtime.workers import map_in_workers


def _square_with_pid(job: int) -> tuple[int, int]:
    return job * job, os.getpid()


def _matmul_sum(seed: int) -> float:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((200, 200), dtype=np.float32)
    return float((a @ a.T).sum())


def _fail_on_three(job: int) -> int:
    if job == 3:
        raise RuntimeError(f"job {job} failed")
    return job


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_results_come_in_job_order(workers):
    jobs = list(range(20))
    results = list(map_in_workers(_square_with_pid, jobs, workers))
    assert [square for square, _ in results] == [job * job for job in jobs]
    pids = {pid for _, pid in results}
    assert (pids == {os.getpid()}) if workers == 1 else (os.getpid() not in pids)


def test_results_do_not_depend_on_the_number_of_workers():
    jobs = list(range(6))
    assert list(map_in_workers(_matmul_sum, jobs, 1)) == list(map_in_workers(_matmul_sum, jobs, 2))


def test_a_single_job_runs_in_process():
    assert list(map_in_workers(_square_with_pid, [3], 4)) == [(9, os.getpid())]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_job_raises_its_error(workers):
    with pytest.raises(RuntimeError, match="job 3 failed"):
        list(map_in_workers(_fail_on_three, list(range(8)), workers))
