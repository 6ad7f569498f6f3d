"""The reader pool: one set of reader threads per server, shared by every job in turns."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import pytest

from fseg_server.pipeline.readers import ReaderPool, available_cores


def test_the_pool_has_a_thread_per_available_core_by_default():
    pool = ReaderPool()
    try:
        assert pool.threads == available_cores() >= 1
    finally:
        pool.close()


def test_jobs_take_turns_so_a_late_small_job_is_not_starved():
    """Job A queues 20 reads, job B then queues 2: B's reads run within A's first few,
    not after all of A's."""
    gate = threading.Event()
    order: list[str] = []
    pool = ReaderPool(threads=1)
    try:
        blocker = pool.queue()
        blocker.submit(gate.wait)  # holds the only thread while both jobs queue
        a, b = pool.queue(), pool.queue()
        done_a = [a.submit(order.append, f"a{i}") for i in range(20)]
        done_b = [b.submit(order.append, f"b{i}") for i in range(2)]
        gate.set()
        for future in done_a + done_b:
            future.result(timeout=30)
    finally:
        pool.close()
    assert order.index("b1") < 5, order
    assert [x for x in order if x.startswith("a")] == [f"a{i}" for i in range(20)]


def test_closing_a_job_cancels_its_reads_that_have_not_started():
    gate = threading.Event()
    pool = ReaderPool(threads=1)
    try:
        pool.queue().submit(gate.wait)
        job = pool.queue()
        waiting = job.submit(lambda: "read")
        job.close()
        gate.set()
        with pytest.raises(CancelledError):
            waiting.result(timeout=30)
        other = pool.queue()
        assert other.submit(lambda: "still reading").result(timeout=30) == "still reading"
    finally:
        pool.close()


def test_an_error_in_a_read_reaches_the_job_and_the_thread_lives_on():
    pool = ReaderPool(threads=1)
    try:
        job = pool.queue()
        with pytest.raises(ZeroDivisionError):
            job.submit(lambda: 1 / 0).result(timeout=30)
        assert job.submit(lambda: 2).result(timeout=30) == 2
    finally:
        pool.close()


def test_one_jobs_reads_run_on_every_reader_at_once():
    """Two reads of one job that each wait for the other finish only if both run together."""
    both = threading.Barrier(2, timeout=10)
    pool = ReaderPool(threads=2)
    try:
        job = pool.queue()
        reads = [job.submit(both.wait) for _ in range(2)]
        assert sorted(read.result(timeout=30) for read in reads) == [0, 1]
    finally:
        pool.close()


def test_closing_a_job_waits_for_its_reads_that_have_started():
    """A cancelled job closes its slide right after; a read still running on it must end
    first (OpenSlide aborts the process when a handle is closed under a read)."""
    started, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def slow_read() -> None:
        started.set()
        release.wait(10)
        finished.append(True)

    pool = ReaderPool(threads=1)
    try:
        job = pool.queue()
        job.submit(slow_read)
        assert started.wait(10)
        closing = threading.Thread(target=job.close)
        closing.start()
        closing.join(0.3)
        assert closing.is_alive() and not finished  # still waiting for the read
        release.set()
        closing.join(10)
        assert not closing.is_alive() and finished == [True]
    finally:
        pool.close()
