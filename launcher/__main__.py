"""``python -m launcher``: serve on http://127.0.0.1:$PORT (default 8000) in the foreground; Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import sys
import threading

from launcher.stack import ROOT, Stack, StackError


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    stack = Stack(ROOT / "run", port, log_to_files=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
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
