"""How a bed server lives and dies; shared by aws_server.py and imds.py.

Contract for both servers:
  * stdout carries exactly one line, `READY <url>`, printed once the socket
    listens; everything else (request logs, moto's own prints) goes to stderr,
    so a harness can read one line and never has to drain stdout again;
  * SIGTERM and SIGINT stop the server with exit code 0;
  * if stdin is a pipe or a socket, its closing stops the server too: a test
    harness that dies (and so closes its end) cannot leak servers. A tty,
    /dev/null or a regular file on stdin is ignored, otherwise a server started
    from a script with `&` (stdin = /dev/null) would exit at once.

Standard library only: imds.py must run with nothing but Python installed.
"""

import os
import signal
import stat
import sys
import threading


def claim_stdout():
    """Return the real stdout for the READY line and send sys.stdout to stderr.

    Libraries (moto among them) print() diagnostics; they must not land on the
    stdout a harness parses.
    """
    ready_out = sys.stdout
    sys.stdout = sys.stderr
    return ready_out


def stdin_is_watchable():
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _stop_when_stdin_closes(stop):
    def watch():
        try:
            while os.read(sys.stdin.fileno(), 4096):
                pass  # a harness may write anything; only EOF matters
        except OSError:
            pass
        stop("stdin closed")

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def serve_until_stopped(server, url, ready_out):
    """Announce `READY url`, serve until SIGTERM/SIGINT/stdin EOF, then close."""
    stopping = threading.Event()

    def stop(reason):
        if stopping.is_set():
            return
        stopping.set()
        print(f"stopping: {reason}", file=sys.stderr, flush=True)
        # shutdown() waits for serve_forever() to return, so it must not run
        # on the thread that is inside serve_forever() (the main thread).
        threading.Thread(target=server.shutdown, daemon=True).start()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, _frame: stop(signal.Signals(signum).name))
    if stdin_is_watchable():
        _stop_when_stdin_closes(stop)

    print(f"READY {url}", file=ready_out, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
