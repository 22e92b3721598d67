"""``python -m harness``: see `harness.cli`.

The process ends through `finish`: exit handlers run and every stream is flushed, then (when no other
thread or child process is left) the interpreter is left without tearing down its modules, which with torch, diffusers and transformers imported takes 1-2 s
and does no work a caller can see.
"""
import atexit
import logging
import os
import sys

from harness.cli import main


def finish(code) -> None:
    """Run exit handlers, flush the logs and standard streams, and end the process with ``code``. A process
    that still has other threads or child processes (the joblib launcher's workers) shuts down the usual
    way, which joins them as their libraries expect."""
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    import multiprocessing
    import threading

    if threading.active_count() > 1 or multiprocessing.active_children():
        sys.exit(code)
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass
    os._exit(code)


if __name__ == "__main__":
    try:
        rc = main()
    except SystemExit as exc:
        rc = exc.code
    except BrokenPipeError:  # the reader went away (python -m harness list | head): not a failure
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        rc = 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        rc = 130
    finish(rc)
