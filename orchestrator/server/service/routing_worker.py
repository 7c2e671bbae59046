"""The worker process of ``POST /v1/routing/evaluate``: eval-router's computation away from the serving process.

Runs in: two processes. ``RoutingEvaluator`` lives in the serving process (``moesaic serve``, a Ray Serve replica,
a test's server thread) on ``app.state.routing_evaluations``; ``main`` is the worker process it spawns: a fresh
interpreter (``sys.executable``, never ``fork``: the serving process runs Ray's and uvloop's threads) started the way
multiprocessing's ``spawn`` starts one, ``-c`` with the parent's ``sys.path``, talking over a socket pair with
``multiprocessing.connection.Connection`` frames, but without re-running the parent's ``__main__`` (multiprocessing
would, and a script that builds the app without an ``if __name__ == "__main__"`` guard would then start a server
in the worker). It imports only this module, ``router`` and the numeric stack, never the API app. May import:
``router`` (the evaluation), the standard library.

One evaluation at a time per app: a second one is refused at once (``EvaluatorBusy``), never queued behind a lock.
The worker is started on the first evaluation and kept warm between them (start-up is imports: about 2 s on a busy
2-core machine, about 200 MiB resident; it is not counted in an evaluation's time), until ``IDLE_S`` without work or
an evaluation that left it much larger (``RETIRE_ABOVE_BYTES``). An evaluation past its timeout, one whose client
left (the caller cancels ``run``), or one whose worker grows beyond its memory allowance has its worker killed
(SIGKILL: the computation stops and its memory goes back to the system at once); the next evaluation starts a fresh
one. The numeric libraries run on one thread there (``ONE_THREAD``). ``close`` stops it with the app.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from multiprocessing.connection import Connection
from typing import Any

from router.offline import TableLimits

START_TIMEOUT_S = 120.0  # imports on a loaded machine; a worker slower than this is given up
MEMORY_POLL_S = 0.2  # how often the worker's resident memory is read while it works
RETIRE_ABOVE_BYTES = 512 * 1024 * 1024  # a worker holding this much more than at start is replaced after its answer
IDLE_S = 600.0  # a worker without work this long is stopped (about 200 MiB resident while it waits)
# one core for the numeric libraries: the serving process keeps the others (and on a busy machine BLAS threads
# spinning for cores make an evaluation several times slower, not faster: 600 questions, 29 s threaded, 5 s not)
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


@dataclass(frozen=True)
class RoutingJob:
    """One evaluation as plain data (it crosses the process boundary): the table's bytes and eval-router's options."""

    content: bytes
    format: str
    name: str
    pool: str | None
    policy: str
    max_experts: int
    k: int | None
    vote: str
    seed: int
    split: float
    budgets: tuple[float, ...]
    limits: TableLimits


class JobError(StrEnum):
    """Why the worker answered no figures."""

    TOO_LARGE = "too_large"  # beyond a limit, named by the result's ``setting``
    INVALID = "invalid"  # a table eval-router cannot use; the message says why
    FAILED = "failed"  # a bug of ours: the message has the exception


@dataclass(frozen=True)
class JobResult:
    """What the worker answers: ``figures`` (``router.offline``'s ``json_figures``), or an ``error`` about the table."""

    figures: dict[str, Any] | None = None
    error: JobError | None = None
    message: str = ""
    setting: str | None = None


class EvaluatorBusy(Exception):
    """Another evaluation holds the worker; ``retry_after_s`` is a hint, ``bound_s`` the most it can still take."""

    def __init__(self, running_s: float, bound_s: float) -> None:
        super().__init__(f"another routing evaluation is running ({running_s:.0f} s so far)")
        self.running_s, self.bound_s = running_s, bound_s

    @property
    def retry_after_s(self) -> int:
        return max(1, min(10, math.ceil(self.bound_s)))


class EvaluationTimedOut(Exception):
    """The evaluation ran past its timeout; its worker was killed."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"stopped after {timeout_s:g} s")
        self.timeout_s = timeout_s


class WorkerOutOfMemory(Exception):
    """The worker grew beyond its allowance while evaluating; it was killed."""

    def __init__(self, used: int, allowance: int) -> None:
        super().__init__(f"the evaluation used {used / 2**20:,.0f} MiB, more than its {allowance / 2**20:,.0f} MiB")
        self.used, self.allowance = used, allowance


class WorkerFailed(Exception):
    """The worker could not start, or died without answering (a crash, the system's OOM killer, the app closing)."""


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    conn: Connection  # never closed explicitly: a thread may still be sending on it; the last reference closes it
    pid: int
    base_rss: int = 0  # resident bytes once ready: the allowance is counted above it

    def rss(self) -> int:
        return _rss(self.pid)

    def kill(self) -> None:
        """SIGKILL, then reap it (a killed process exits at once) so that no zombie stays; a send or receive still
        under way on ``conn`` ends with EOF."""
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:  # in uninterruptible sleep: reaped by a later poll, or at exit
            pass

    def alive(self) -> bool:
        return self.process.poll() is None


class RoutingEvaluator:
    """The serving process's side: one worker process, one evaluation at a time, each bounded in time and memory."""

    def __init__(self, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.start_timeout_s = start_timeout_s
        self._slot = threading.Lock()  # taken without waiting: busy means 429, not a queue
        self._worker: _Worker | None = None
        self._since = 0.0  # when the running evaluation took the slot (monotonic)
        self._bound = 0.0  # the latest moment it can still hold it (monotonic)
        self._closed = False
        self._idle: asyncio.TimerHandle | None = None  # stops a worker left without work for IDLE_S
        self.starts = 0  # workers started so far (tests and the report read it)

    @property
    def busy(self) -> bool:
        """An evaluation holds the worker (or is starting it)."""
        return self._slot.locked()

    @property
    def worker_pid(self) -> int | None:
        """The warm worker's process id; None while there is none."""
        worker = self._worker
        return worker.pid if worker is not None and worker.alive() else None

    async def run(self, job: RoutingJob, timeout_s: float, memory_allowance: int) -> JobResult:
        """Evaluate ``job`` in the worker within ``timeout_s`` (not counting a worker's start) and ``memory_allowance``
        bytes above the worker's size at start; cancelling this (a departed client) kills the worker."""
        if self._closed:
            raise WorkerFailed("the server is shutting down")
        if not self._slot.acquire(blocking=False):
            now = time.monotonic()
            raise EvaluatorBusy(now - self._since, self._bound - now)
        if self._idle is not None:
            self._idle.cancel()
        try:
            self._since = time.monotonic()
            self._bound = self._since + self.start_timeout_s + timeout_s
            worker = await self._ready_worker()
            self._bound = time.monotonic() + timeout_s
            result = await self._evaluate(worker, job, timeout_s, memory_allowance)
            if worker.rss() - worker.base_rss > RETIRE_ABOVE_BYTES:  # give a big table's memory back now
                self._discard(worker)
            return result
        finally:
            if self._worker is not None and not self._closed:
                self._idle = asyncio.get_running_loop().call_later(IDLE_S, self._stop_idle)
            self._slot.release()

    def close(self) -> None:
        """Stop the worker (the app's shutdown); an evaluation still running is answered 503."""
        self._closed = True
        if self._idle is not None:
            self._idle.cancel()
        if self._worker is not None:
            self._discard(self._worker)

    # -- the worker's lifetime ----------------------------------------------------------------------------------
    async def _ready_worker(self) -> _Worker:
        worker = self._worker
        if worker is not None and worker.alive():
            return worker
        if worker is not None:
            self._discard(worker)
        try:
            worker = await asyncio.to_thread(_start)
        except OSError as error:  # no interpreter to run, no processes left
            raise WorkerFailed(f"the evaluation worker could not be started: {error}") from None
        self._worker = worker
        self.starts += 1
        try:
            async with asyncio.timeout(self.start_timeout_s):
                reply = await _receive(worker.conn)
        except TimeoutError:
            self._discard(worker)
            raise WorkerFailed(f"the evaluation worker did not start within {self.start_timeout_s:g} s") from None
        except (EOFError, OSError):
            self._discard(worker)
            raise WorkerFailed(
                f"the evaluation worker exited at start (exit code {worker.process.returncode})"
            ) from None
        except BaseException:  # cancelled: the client left while it started
            self._discard(worker)
            raise
        if reply != "ready":
            self._discard(worker)
            raise WorkerFailed(f"the evaluation worker could not start: {reply}")
        worker.base_rss = worker.rss()
        return worker

    def _stop_idle(self) -> None:
        if self._worker is not None and not self.busy:
            self._discard(self._worker)

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        if self._worker is worker:
            self._worker = None

    async def _evaluate(self, worker: _Worker, job: RoutingJob, timeout_s: float, allowance: int) -> JobResult:
        exchange = asyncio.ensure_future(_exchange(worker.conn, job))
        watch = asyncio.ensure_future(_watch_memory(worker, allowance))
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.wait({exchange, watch}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            self._discard(worker)
            raise EvaluationTimedOut(timeout_s) from None
        except BaseException:  # cancelled: the client left, or the server is stopping
            self._discard(worker)
            raise
        finally:
            watch.cancel()
            if not exchange.done():  # the worker is gone: its send (a thread) or receive ends with EOF
                self._discard(worker)
                exchange.add_done_callback(_consume)
        if not exchange.done():  # the memory watch fired first
            raise WorkerOutOfMemory(watch.result(), allowance)
        try:
            result = exchange.result()
        except (EOFError, OSError) as error:
            alive = worker.alive()
            self._discard(worker)
            if self._closed:
                why = "the server is shutting down"
            elif alive:  # the channel broke, not the worker
                why = f"{type(error).__name__}: {error}"
            else:
                why = f"it exited with code {worker.process.returncode}"
            raise WorkerFailed(f"the evaluation worker stopped without answering: {why}") from None
        assert isinstance(result, JobResult)
        return result


BOOTSTRAP = "import sys, json; sys.path[:] = json.loads(sys.argv[1]); from {module} import main; main(int(sys.argv[2]))"


def _start() -> _Worker:
    """Spawn a worker: a fresh interpreter on this process's ``sys.path``, one end of a socket pair its channel."""
    parent, child = socket.socketpair()
    with child:
        path = json.dumps([str(entry) for entry in sys.path])
        command = [sys.executable, "-c", BOOTSTRAP.format(module=__name__), path, str(child.fileno())]
        environment = {**os.environ, **ONE_THREAD}
        process = subprocess.Popen(command, pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, env=environment)
    return _Worker(process, Connection(parent.detach()), process.pid)  # the child's end closed here: EOF on exit


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned exchange's outcome (EOF), so that asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


async def _receive(conn: Connection) -> Any:
    """The next message from the worker, waiting on the event loop (no thread held while it works)."""
    loop = asyncio.get_running_loop()
    readable = loop.create_future()
    fd = conn.fileno()
    loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
    try:
        await readable
    finally:
        loop.remove_reader(fd)
        os.set_blocking(fd, True)  # uvloop (libuv) leaves a watched fd non-blocking
    return conn.recv()  # a whole message (kilobytes: figures or an error) is on its way, or EOF: returns promptly


async def _exchange(conn: Connection, job: RoutingJob) -> Any:
    os.set_blocking(conn.fileno(), True)  # a whole job per send, however large (see _receive)
    await asyncio.to_thread(conn.send, job)  # up to the table's size: a thread, so the loop keeps serving
    return await _receive(conn)


async def _watch_memory(worker: _Worker, allowance: int) -> int:
    """Return the worker's resident bytes above its start once they exceed ``allowance`` (runs until cancelled)."""
    while True:
        await asyncio.sleep(MEMORY_POLL_S)
        used = worker.rss() - worker.base_rss
        if used > allowance:
            return used


def _rss(pid: int | None) -> int:
    """Resident bytes of a process (Linux: /proc; 0 where unknown, which never trips the allowance)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


# -- the worker process -----------------------------------------------------------------------------------------
def main(fd: int) -> None:
    """The worker process's entry point (``BOOTSTRAP``): serve on the socket ``fd``, and exit if the serving process
    goes away without closing it (killed mid-evaluation, so no EOF would come before the evaluation ends)."""
    parent = os.getppid()

    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=orphaned, name="orphan-watch", daemon=True).start()
    try:
        serve(Connection(fd))
    except (EOFError, OSError):  # the serving process closed its end (or gave up on this worker): nothing to answer
        pass


def serve(conn: Connection) -> None:
    """The worker's loop: import the numeric stack once, say ``ready``, then answer one job at a time until the
    serving process closes its end (or kills this one)."""
    try:
        _preload()
    except Exception as error:  # reported to the serving process, which gives up on this worker
        conn.send(f"{type(error).__name__}: {error}")
        return
    conn.send("ready")
    while True:
        job = conn.recv()  # EOFError once the serving process closes its end
        try:
            result = evaluate(job)
        except MemoryError:
            setting = job.limits.setting("max_table_bytes")
            result = JobResult(
                error=JobError.TOO_LARGE, message=f"{job.name}: out of memory ({setting})", setting=setting
            )
        except Exception as error:  # a bug of ours: the serving process answers 500 with it
            result = JobResult(error=JobError.FAILED, message=f"{type(error).__name__}: {error}")
        conn.send(result)


def _preload() -> None:
    """What an evaluation imports lazily, imported before ``ready`` so the first evaluation's time is its own."""
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import scipy.sparse  # noqa: F401
    import sklearn.feature_extraction.text  # noqa: F401
    import sklearn.linear_model  # noqa: F401

    import router.offline  # noqa: F401


def evaluate(job: RoutingJob) -> JobResult:
    """``moesaic eval-router --frontier --json`` on the job's table (``router.offline.evaluate_pairs``)."""
    from router import CompetenceSettings, PolicySettings
    from router.offline import (
        EvalOptions,
        OutcomeFileError,
        TableTooLarge,
        evaluate_pairs,
        json_figures,
        read_outcomes,
        split_tables,
    )

    settings = PolicySettings(max_experts=job.max_experts, k=job.k)
    options = EvalOptions(
        policy=job.policy, settings=settings, competence=CompetenceSettings(), vote=job.vote, seed=job.seed
    )
    try:
        tables = read_outcomes(job.content, job.format, job.pool, job.name, job.limits)
        reports = evaluate_pairs(split_tables(tables, job.split, job.seed), options, job.budgets)
    except TableTooLarge as error:
        return JobResult(error=JobError.TOO_LARGE, message=str(error), setting=error.setting)
    except OutcomeFileError as error:
        return JobResult(error=JobError.INVALID, message=str(error))
    except ValueError as error:  # e.g. no cost columns for a frontier, too few questions to split or learn from
        message = str(error) if str(error).startswith(job.name) else f"{job.name}: {error}"
        return JobResult(error=JobError.INVALID, message=message)
    figures = json_figures(reports)
    assert isinstance(figures, dict)
    return JobResult(figures=figures)
