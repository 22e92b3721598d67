"""Run one cell in a forked child process.

The parent has imported what cells need once (`harness.prefork`, never touching CUDA or running torch
ops), so each child starts warm: a sweep does not pay the interpreter start and imports per cell. A
crash (signal), an out-of-memory, a hang past the timeout or any exception in the child becomes that
cell's status; the parent survives and the sweep goes on.

If this process already holds a CUDA context (a forked child could not use CUDA then), the child is
spawned instead: slower to start, same semantics. The child sends one small picklable dict back through
a pipe; bulky outputs (images) go to files.
"""
from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import signal
import time
import traceback
from typing import Any, Callable

from harness import progress
from harness import status as st


#: A child that has sent its result but may still be exiting (freeing its GPU context and pinned host
#: memory): reaped before the next child starts, and at the latest when this process exits.
_exiting: list = []


def reap() -> float:
    """Wait for every child that is still exiting; return the seconds waited."""
    start = time.perf_counter()
    while _exiting:
        proc = _exiting.pop()
        proc.join(30)
        if proc.is_alive():
            _kill_group(proc.pid)
            proc.join(10)
    return time.perf_counter() - start


atexit.register(reap)


def in_child(fn: Callable[[Any], dict], arg: Any, timeout_s: float, on_stage=None) -> dict:
    """Run ``fn(arg)`` in a forked child; return ``{"status", "error", "payload", "wall_s", "timing"}``.

    ``payload`` is what ``fn`` returned (status ok) or partial data attached to the exception
    (attribute ``partial``) when it failed. A failure's ``error`` carries ``stage``, the last
    `harness.progress` stage the child entered (None if it entered none); a timeout's or a killed
    child's message names it, since those leave no traceback. ``on_stage(name)`` is called for every
    stage the child enters. ``timing``: ``reap_s`` (waiting for the previous child to finish exiting),
    ``start_s`` (fork to the first stage) and ``stages_s`` (seconds per stage, the steps of a call
    summed into the call). A child that has sent its result exits in the background (`reap`)."""
    reap_s = reap()
    ctx = mp.get_context(start_method())
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, arg, sender), daemon=False)
    start = time.perf_counter()
    message, stage, stage_since = None, None, start
    first_stage_at = received_at = None
    stages: dict[str, float] = {}
    deadline = start + timeout_s
    try:
        proc.start()
        try:  # the child makes its own group too; done here as well, so no signal finds it in ours
            os.setpgid(proc.pid, proc.pid)
        except OSError:  # the child got there first, exited, or (spawned) has exec'd
            pass
        sender.close()
        while message is None and time.perf_counter() < deadline:
            alive = proc.is_alive()
            if receiver.poll(min(0.2, max(0.0, deadline - time.perf_counter()))):
                try:
                    received = receiver.recv()
                except EOFError:  # child died without a word
                    break
                if isinstance(received, tuple):  # ("stage", name) from harness.progress
                    if stage is not None:
                        key = stage.split(",")[0]
                        stages[key] = stages.get(key, 0.0) + time.perf_counter() - stage_since
                    stage, stage_since = received[1], time.perf_counter()
                    first_stage_at = first_stage_at or stage_since
                    if on_stage is not None:
                        on_stage(stage)
                else:
                    message, received_at = received, time.perf_counter()
            elif not alive:
                break
    except BaseException:  # Ctrl-C / SIGTERM on this process: the cell (and its workers) must not outlive it
        if proc.pid is not None:
            _kill_group(proc.pid)
            proc.join(10)
        raise
    finally:
        receiver.close()
    now = time.perf_counter()
    if stage is not None and received_at is not None:
        key = stage.split(",")[0]
        stages[key] = stages.get(key, 0.0) + received_at - stage_since
    timed_out = message is None and proc.is_alive() and now >= deadline
    if message is not None and proc.is_alive():
        _exiting.append(proc)
    elif proc.is_alive():
        if not timed_out:
            proc.join(5)
        if proc.is_alive():
            _kill_group(proc.pid)
            proc.join(10)
    wall = time.perf_counter() - start
    where = f" during {stage} (for the last {now - stage_since:.0f} s)" if stage else ""
    if timed_out:
        outcome = {"status": st.TIMEOUT, "payload": None,
                   "error": st.error_record("Timeout", f"cell exceeded its timeout of {timeout_s:g} s{where}")}
    elif message is not None:
        outcome = message
    elif proc.exitcode is not None and proc.exitcode < 0:
        name = st.signal_name(-proc.exitcode)
        # SIGKILL with no timeout: almost always the kernel's out-of-memory killer.
        status = st.OOM if -proc.exitcode == signal.SIGKILL else st.CRASHED
        outcome = {"status": status, "payload": None,
                   "error": st.error_record(name, f"cell process killed by {name}{where}")}
    else:
        outcome = {"status": st.CRASHED, "payload": None, "error": st.error_record(
            "ProcessExit", f"cell process exited with code {proc.exitcode} without a result{where}")}
    if outcome["error"] is not None:
        outcome["error"]["stage"] = stage
    timing = {"reap_s": reap_s, "start_s": None if first_stage_at is None else first_stage_at - start,
              "stages_s": stages}
    return {**outcome, "wall_s": wall, "timing": timing}


_SPAWN = False


def spawn_from_now_on() -> None:
    """Start every later child with ``spawn``: this process can no longer fork a child that uses CUDA
    (`harness.prefork.fork_poisoned`)."""
    global _SPAWN
    _SPAWN = True


def spawned_from_now_on() -> bool:
    """Whether `spawn_from_now_on` was called in this process."""
    return _SPAWN


def start_method() -> str:
    """``fork`` (warm, cheap) unless this process already holds a CUDA context - some backends create
    one when imported - or `spawn_from_now_on` was called, in which case a forked child could not use
    CUDA: then ``spawn``."""
    import torch

    return "spawn" if _SPAWN or torch.cuda.is_initialized() else "fork"


def _child(fn: Callable[[Any], dict], arg: Any, sender) -> None:
    os.setpgid(0, 0)  # own process group: a timeout kills compile workers too
    progress.connect(lambda name: sender.send(("stage", name)))
    try:
        payload = fn(arg)
        message = {"status": st.OK, "error": None, "payload": payload}
    except BaseException as exc:  # noqa: BLE001 - every failure must become a status
        message = {"status": st.classify_exception(exc), "payload": getattr(exc, "partial", None),
                   "error": {**st.error_record(type(exc).__name__, str(exc) or repr(exc)),
                             "traceback": traceback.format_exc(limit=20)[-4000:]}}
        if message["status"] == st.UNSUPPORTED:
            message["error"]["reason"] = getattr(exc, "reason", str(exc))
    try:
        sender.send(message)
    finally:
        sender.close()
    os._exit(0)


def _kill_group(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:  # no such group (yet): the process alone, if it is still there
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
        time.sleep(0.5)
