import os
import resource
import time

import pytest

from harness import status as st
from harness.isolate import in_child


def _ok(x):
    return {"double": x * 2, "pid": os.getpid()}


def _raise(_):
    raise ValueError("bad value 17 at /tmp/x/y.bin")


def _segfault(_):
    import ctypes

    ctypes.string_at(0)


def _hang(_):
    time.sleep(600)


def _oom(_):
    resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
    hoard = []
    while True:
        hoard.append(bytearray(2**26))


def _unsupported(_):
    from engines.base import Unsupported

    raise Unsupported("no such kernel here")


def test_ok_returns_payload_from_another_process():
    out = in_child(_ok, 21, timeout_s=30)
    assert out["status"] == st.OK and out["payload"]["double"] == 42
    assert out["payload"]["pid"] != os.getpid()


@pytest.mark.parametrize("fn, status, error_type", [
    (_raise, st.ERROR, "ValueError"),
    (_segfault, st.CRASHED, "SIGSEGV"),
    (_oom, st.OOM, "MemoryError"),
    (_unsupported, st.UNSUPPORTED, "Unsupported"),
], ids=["raise", "segfault", "oom", "unsupported"])
def test_each_failure_becomes_its_status(fn, status, error_type):
    out = in_child(fn, None, timeout_s=60)
    assert out["status"] == status
    assert out["error"]["type"] == error_type


def test_hang_is_killed_at_timeout():
    start = time.perf_counter()
    out = in_child(_hang, None, timeout_s=2)
    assert out["status"] == st.TIMEOUT
    assert time.perf_counter() - start < 15


def test_error_messages_are_normalized_for_grouping():
    a = st.normalize_message("CUDA out of memory. Tried to allocate 2.50 GiB (GPU 0; 79.1 GiB total)")
    b = st.normalize_message("CUDA out of memory. Tried to allocate 1.25 GiB (GPU 1; 79.1 GiB total)")
    assert a == b
    assert st.normalize_message("bad value 17 at /tmp/x/y.bin") == "bad value N at <path>"
    assert st.classify_exception(RuntimeError("CUDA out of memory. Tried")) == st.OOM


def _stages_then(ending):
    def run(arg):
        from harness import progress

        progress.stage("load + quantize")
        progress.stage("first call (1 of 2), step 2 of 4 done")
        return ending(arg)
    return run


@pytest.mark.parametrize("ending, status, says", [
    (_hang, st.TIMEOUT, "cell exceeded its timeout of 3 s during first call (1 of 2), step 2 of 4 done"),
    (_segfault, st.CRASHED, "cell process killed by SIGSEGV during first call (1 of 2), step 2 of 4 done"),
    (_raise, st.ERROR, "bad value 17"),
], ids=["timeout", "crash", "raise"])
def test_a_failure_names_the_last_stage_the_cell_entered(ending, status, says):
    out = in_child(_stages_then(ending), None, timeout_s=3)
    assert out["status"] == status
    assert out["error"]["message"].startswith(says)
    assert out["error"]["stage"] == "first call (1 of 2), step 2 of 4 done"


def test_a_failure_before_any_stage_has_no_stage():
    out = in_child(_raise, None, timeout_s=30)
    assert out["error"]["stage"] is None and out["error"]["message"] == "bad value 17 at /tmp/x/y.bin"


def test_stages_do_not_reach_an_ok_result():
    out = in_child(_stages_then(_ok), 4, timeout_s=30)
    assert out["status"] == st.OK and out["error"] is None




def _sleep_and_report(path):
    import os
    import time

    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(120)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_stopped_parent_takes_its_running_cell_with_it(tmp_path, signame):
    import os
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    # A command started in the background by a shell without job control ignores SIGINT, and its children
    # inherit that: the parent here gets Python's own Ctrl-C handler, as in a terminal.
    code = ("import signal, sys\n"
            "from harness import cli\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "signal.signal(signal.SIGTERM, cli._terminate)\n"
            "from harness.isolate import in_child\n"
            "from tests.harness.test_isolate import _sleep_and_report\n"
            f"in_child(_sleep_and_report, {str(pid_file)!r}, timeout_s=300)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=os.getcwd())
    deadline = time.time() + 120
    while not pid_file.exists() or not pid_file.read_text():
        assert time.time() < deadline and parent.poll() is None
        time.sleep(0.2)
    child = int(pid_file.read_text())
    parent.send_signal(getattr(signal, signame))
    try:
        parent.wait(timeout=60)
    except subprocess.TimeoutExpired:
        parent.kill()
        os.killpg(child, signal.SIGKILL)
        pytest.fail("the parent did not exit after the signal: its cell kept it waiting")
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(child, signal.SIGKILL)
    pytest.fail("the cell's process outlived its parent")
