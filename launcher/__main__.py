"""``python -m launcher [--run-dir DIR]``: serve on http://127.0.0.1:$PORT (default 8000) in the foreground.

Ctrl-C or SIGTERM stops everything; so does the death of whatever started the launcher (``make
serve`` killed with SIGKILL): the launcher gets SIGTERM then, and its children die with it in any case.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from launcher.stack import ROOT, Stack, StackError, die_with_parent


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "run", help="pid files, sockets, logs (default: run/)")
    args = parser.parse_args()
    return serve(Stack(args.run_dir, int(os.environ.get("PORT", "8000")), log_to_files=False))


def serve(stack: Stack) -> int:
    """Start ``stack``, wait until it is ready, serve until SIGINT or SIGTERM (or this process's parent dies),
    stop it. The benchmark's floors (``python -m benchmarks.floors``) start their stacks through this too."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    die_with_parent(signal.SIGTERM, os.getppid())
    try:
        stack.start()
        stack.wait_ready()
        print(f"serving on {stack.url} (Ctrl-C stops everything)", flush=True)
        stop.wait()
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping nginx and uWSGI...", flush=True)
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
