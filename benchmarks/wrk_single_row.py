"""Single-row /predict under wrk at 1, 8 and 64 connections, against fresh local stacks.

    .venv/bin/python benchmarks/wrk_single_row.py [--seconds 10] [--repeats 3]
    .venv/bin/python benchmarks/wrk_single_row.py --variant no-metrics:FORECAST_METRICS_ENABLED=false
    .venv/bin/python benchmarks/wrk_single_row.py --checkout before:/tmp/checkout-of-the-old-commit
    .venv/bin/python benchmarks/wrk_single_row.py --variant aa: --floor floor --floor mule-floor \
        --output benchmarks/results/mule-floor-YYYYMMDD.txt

Starts nginx + uWSGI + mules with the launcher on a free port (the registry's production model),
warms up, runs wrk with benchmarks/wrk/predict.lua (10,000 distinct rows), prints each run and
the median per connection count as a Markdown table, and stops the stack. Each ``--variant
NAME:VAR=VALUE[,VAR=VALUE]`` starts another stack of this checkout with those settings; each
``--checkout NAME:PATH[:REGISTRY]`` starts another checkout's own stack (``python -m launcher`` run
in that directory, with this registry or REGISTRY: a copy of it whose compiled trees that code
made), to compare two versions of the code; ``--variant aa:`` (no settings) starts a second default stack:
an A/A check of the harness in the same run. Each ``--floor NAME`` starts one of the floors of
:mod:`benchmarks.floors` (``floor``: a constant; ``mule-floor``: a constant through the mules' hand-off), and
the table adds the default's throughput and p50 over each floor's, paired. Every stack, the default
included, is started the same way, by the launcher in its checkout (the floors through its ``serve``).
Runs take turns between the stacks, the order reversed every round (default, variant; variant, default;
...), so every configuration sees the same machine noise, and the table adds each one's throughput
relative to the default, with paired ratios. Each run also
records the server's CPU time per request (the whole uWSGI tree and nginx, from /proc): on this
shared VM throughput swings by +-20% between minutes, CPU per request much less, so it is the
better measure of what a change costs. Needs wrk (apt-get install wrk). wrk runs on the same
cores as the server: throughput includes its cost; CPU per request does not. The tree's PSS is
read halfway through each run (for sizing: processes and threads cost memory), and the CPU per request is
split by process role (nginx, the uWSGI master, web workers, mules). ``--output FILE`` writes everything
printed to FILE as well, after a header with the date, every checkout's commit, the command line and the
load average; each run's line carries the 1-minute load average at its end.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TextIO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.floors import FLOORS  # noqa: E402
from benchmarks.systems import cpu_seconds, memory_mb  # noqa: E402

SCRIPT = ROOT / "benchmarks" / "wrk" / "predict.lua"
CONNECTIONS = (1, 8, 64)
Run = dict[str, float]  # rps, p50, p99 (ms), non2xx, cpu_us, cpu_us_<role>, pss_mb, load1
ROLES = ("nginx", "master", "workers", "mules")


class Target(Protocol):
    """A stack to measure: where it listens, how to start and stop it, which processes are its server."""

    url: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def server_pids(self) -> list[int]: ...

    def roles(self) -> dict[str, list[int]]: ...


class LauncherStack:
    """A checkout's stack started as a user starts it: ``python -m launcher`` run in ``path`` (this checkout
    for the default and the variants), serving ``registry``, with ``env`` overriding settings, its files
    (and the launcher's output) in a fresh temporary directory.

    Every configuration starts this one way: an earlier version started this checkout's own stacks
    in-process and other checkouts with the launcher, and two stacks of the same code then differed by
    up to a fifth in throughput at 64 connections.
    """

    def __init__(
        self, name: str, path: Path, registry: Path, env: dict[str, str], module: tuple[str, ...] = ("launcher",)
    ) -> None:
        self.path = path
        self.registry = registry
        self.env = env
        self.module = module  # what ``python -m`` runs: the launcher, or a floor (benchmarks.floors NAME)
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"wrk-{name}-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **self.env, "PORT": str(self.port), "FORECAST_REGISTRY_DIR": str(self.registry)}
        with (self.run_dir / "launcher.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", *self.module, "--run-dir", str(self.run_dir)], cwd=self.path, env=env,
                start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_ready(self.url, self.process, self.run_dir / "launcher.log")

    def stop(self) -> None:
        """Stop the launcher (which stops nginx and uWSGI) and remove the stack's files."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def server_pids(self) -> list[int]:
        assert self.process is not None
        return [pid for pid in descendants([self.process.pid]) if pid != self.process.pid]

    def roles(self) -> dict[str, list[int]]:
        """The server's processes by role (:func:`split_roles`)."""
        assert self.process is not None
        return split_roles(self.process.pid, threads_per_worker(self.env))


def threads_per_worker(env: dict[str, str]) -> int:
    from serving.settings import Settings

    value = env.get("FORECAST_UWSGI_THREADS", os.environ.get("FORECAST_UWSGI_THREADS"))
    return int(value) if value else int(Settings.model_fields["uwsgi_threads"].default)


def split_roles(launcher: int, worker_threads: int) -> dict[str, list[int]]:
    """The processes under ``launcher`` by role: nginx (master and workers), the uWSGI master, its web workers
    (children with at least ``worker_threads`` threads) and its mules (the other children).

    uWSGI gives workers and mules the same command line; a web worker runs its request threads, a mule one
    thread (or a few): the thread count tells them apart.
    """
    found: dict[str, list[int]] = {role: [] for role in ROLES}
    for child in children_of(launcher):
        if b"nginx" in command_line(child):
            found["nginx"] += descendants([child])
            continue
        found["master"].append(child)
        for process in descendants([child])[1:]:
            found["workers" if thread_count(process) >= worker_threads else "mules"].append(process)
    return found


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(child) for child in out.stdout.split()]


def command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def thread_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 180) -> None:
    """Poll ``/status`` until it answers 200; raise if ``process`` exits (with the end of its ``log``) or time
    runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{url}: the launcher exited with {process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/status", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)  # polling interval of a wait-for-condition loop
    raise RuntimeError(f"{url} not ready after {timeout_s} s")


def descendants(roots: list[int]) -> list[int]:
    """``roots`` and every process below them."""
    found, frontier = list(roots), list(roots)
    while frontier:
        children = subprocess.run(["pgrep", "-P", ",".join(map(str, frontier))], capture_output=True, text=True)
        frontier = [int(pid) for pid in children.stdout.split()]
        found += frontier
    return found


def to_ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    assert match is not None, text
    return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]


def field(pattern: str, out: str) -> str:
    match = re.search(pattern, out)
    assert match is not None, f"wrk printed no {pattern!r}:\n{out}"
    return match.group(1)


def wrk(url: str, connections: int, seconds: int) -> Run:
    threads = 1 if connections == 1 else 2
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(SCRIPT), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(field(r"Requests/sec:\s+([\d.]+)", out)),
        "p50": to_ms(field(r"\s50%\s+(\S+)", out)),
        "p99": to_ms(field(r"\s99%\s+(\S+)", out)),
        "non2xx": float(errors.group(1)) if errors else 0.0,
    }


def measured_run(target: Target, connections: int, seconds: int) -> Run:
    """One wrk run, with the server's CPU per request and its whole tree's PSS halfway through."""
    pids = target.server_pids()
    roles = target.roles()
    before = cpu_seconds(pids)
    before_roles = {role: cpu_seconds(members) for role, members in roles.items()}
    halfway: list[float] = []
    sampler = threading.Timer(seconds / 2, lambda: halfway.append(memory_mb(pids)["pss_mb"]))
    sampler.start()
    result = wrk(target.url, connections, seconds)
    sampler.join()
    requests = result["rps"] * seconds

    def per_request(spent: float) -> float:
        return spent / requests * 1e6 if requests else 0.0

    result["cpu_us"] = per_request(cpu_seconds(pids) - before)
    for role, members in roles.items():
        result[f"cpu_us_{role}"] = per_request(cpu_seconds(members) - before_roles[role])
    result["pss_mb"] = halfway[0]
    result["load1"] = os.getloadavg()[0]
    return result


def parse_pair(text: str) -> tuple[str, str]:
    name, _, rest = text.partition(":")
    return name, rest


def targets(args: argparse.Namespace) -> dict[str, Target]:
    """The default stack, each ``--variant``'s and each ``--checkout``'s (all started by the launcher)."""
    registry = Path(os.environ.get("FORECAST_REGISTRY_DIR", ROOT / "registry")).resolve()
    found: dict[str, Target] = {"default": LauncherStack("default", ROOT, registry, {})}
    for text in args.variant:
        name, assignments = parse_pair(text)
        env = dict(pair.split("=", 1) for pair in assignments.split(",") if pair)
        found[name] = LauncherStack(name, ROOT, registry, env)
    for text in args.checkout:
        name, where = parse_pair(text)
        path, _, other = where.partition(":")
        found[name] = LauncherStack(name, Path(path).resolve(), Path(other).resolve() if other else registry, {})
    for name in args.floor:
        found[name] = LauncherStack(name, ROOT, registry, {}, module=("benchmarks.floors", name))
    return found


def in_turns(stacks: dict[str, Target], repeat: int) -> list[tuple[str, Target]]:
    """The stacks in the order of round ``repeat``: as given, then reversed (A B, B A, ...), so that no
    configuration always runs first (the machine drifts within a round too)."""
    order = list(stacks.items())
    return order if repeat % 2 == 0 else order[::-1]


def measure(
    stacks: dict[str, Target], connections: list[int], seconds: int, repeats: int
) -> dict[str, dict[int, list[Run]]]:
    """Every stack at every connection count, ``repeats`` times, the stacks interleaved."""
    runs: dict[str, dict[int, list[Run]]] = {name: {c: [] for c in connections} for name in stacks}
    for repeat in range(repeats):
        for count in connections:
            for name, target in in_turns(stacks, repeat):
                result = measured_run(target, count, seconds)
                runs[name][count].append(result)
                shown = {key: round(value, 2) for key, value in result.items()}
                print(f"run {repeat + 1} {name} c={count}: {shown}", flush=True)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[], help="NAME:VAR=VALUE[,VAR=VALUE]")
    parser.add_argument("--checkout", action="append", default=[], help="NAME:PATH[:REGISTRY] of another checkout")
    parser.add_argument("--connections", type=int, nargs="+", default=list(CONNECTIONS))
    parser.add_argument("--floor", action="append", default=[], choices=sorted(FLOORS), help="a floor beside them")
    parser.add_argument("--output", type=Path, help="write everything printed to this file too")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 1
    if args.output is not None:
        sys.stdout = Tee(sys.stdout, args.output.open("w"))
    stacks = targets(args)
    print(header(sys.argv, stacks), flush=True)
    try:
        for target in stacks.values():
            target.start()
            wrk(target.url, 64, 3)  # warm-up, not reported
        runs = measure(stacks, args.connections, args.seconds, args.repeats)
    finally:
        for target in stacks.values():
            target.stop()
    print_table(runs)
    print(f"\nended {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC; load average {load_average()}", flush=True)
    return 0


class Tee:
    """A text stream writing to ``stream`` and to ``copy`` (the ``--output`` file) alike."""

    def __init__(self, stream: TextIO, copy: TextIO) -> None:
        self.stream, self.copy = stream, copy

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.copy.flush()
        self.stream.flush()


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def commit_of(path: Path) -> str:
    """``path``'s checkout: short commit, ``-dirty (FILES)`` with uncommitted changes to tracked files (naming
    them: an edited README is not edited code), or why not known."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=path)
    if head.returncode != 0:
        return "not a git checkout"
    changed = subprocess.run(["git", "diff", "HEAD", "--name-only"], capture_output=True, text=True, cwd=path)
    files = changed.stdout.split()
    return head.stdout.strip() + (f"-dirty ({', '.join(files)})" if files else "")


def header(argv: list[str], stacks: dict[str, Target]) -> str:
    """What the output needs to be read later: when, which code, which command, how loaded the machine was."""
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    lines = [
        f"# wrk_single_row {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
        f"# command: {shlex.join([Path(sys.executable).name, *argv])}",
        f"# this checkout: {ROOT} at {commit_of(ROOT)}",
        f"# machine: {os.cpu_count()} cores, {cpu.group(1) if cpu else 'unknown CPU'}; load average {load_average()}",
    ]
    for name, target in stacks.items():
        path = getattr(target, "path", ROOT)
        lines.append(f"# stack {name}: {' '.join(getattr(target, 'module', ()))} in {path} at {commit_of(path)}, "
                     f"settings {getattr(target, 'env', {})}")  # fmt: skip
    return "\n".join(lines)


def medians(runs: dict[str, dict[int, list[Run]]]) -> dict[str, dict[int, Run]]:
    return {
        name: {c: {key: statistics.median(r[key] for r in results) for key in results[0]} for c, results in per.items()}
        for name, per in runs.items()
    }


def print_table(runs: dict[str, dict[int, list[Run]]]) -> None:
    print("\n| configuration | connections | req/s | vs default | server CPU µs/req | vs default | p50 ms | p99 ms "
          "| non-2xx | tree PSS MB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    middle = medians(runs)
    for name, per in middle.items():
        for connections, median in per.items():
            default = middle["default"][connections]
            print(
                f"| {name} | {connections} | {median['rps']:,.0f} | {median['rps'] / default['rps']:.1%} "
                f"| {median['cpu_us']:.0f} | {median['cpu_us'] / default['cpu_us']:.1%} | {median['p50']:.2f} "
                f"| {median['p99']:.2f} | {median['non2xx']:.0f} | {median['pss_mb']:.0f} |"
            )
    print_roles(runs)
    print()
    print_pairs(runs, tuple(name for name in runs if name in FLOORS))


def print_pairs(runs: dict[str, dict[int, list[Run]]], floors: tuple[str, ...] = ()) -> None:
    """Runs alternate, so run i of a configuration and run i of the default saw the same machine:
    their ratio is the fairest comparison on a noisy VM. For a floor, the default over the floor
    (how close the real path comes to it)."""
    for name, per in runs.items():
        if name == "default":
            continue
        for connections, results in per.items():
            defaults = runs["default"][connections]
            for key, label in (("rps", "throughput"), ("cpu_us", "server CPU per request"), ("p50", "p50")):
                top, bottom = ("default", name) if name in floors else (name, "default")
                pairs = zip(defaults, results, strict=True) if name in floors else zip(results, defaults, strict=True)
                paired = paired_ratios(list(pairs), key)
                print(
                    f"paired {top} / {bottom}, {label} at {connections} connections: median "
                    f"{statistics.median(paired):.1%}, range {min(paired):.1%}-{max(paired):.1%} ({len(paired)} pairs)"
                )


def paired_ratios(pairs: list[tuple[Run, Run]], key: str) -> list[float]:
    """``key`` of the first run of each pair over the second's (a pair whose second reads 0: no ratio)."""
    return [a[key] / b[key] for a, b in pairs if b[key]]


def print_roles(runs: dict[str, dict[int, list[Run]]]) -> None:
    """Where the server's CPU goes: median µs per request of each process role."""
    print("\n| configuration | connections | " + " | ".join(f"{role} µs/req" for role in ROLES) + " | all µs/req |")
    print("|---|---|" + "---|" * (len(ROLES) + 1))
    for name, per in medians(runs).items():
        for connections, median in per.items():
            cells = " | ".join(f"{median.get(f'cpu_us_{role}', 0.0):.0f}" for role in ROLES)
            print(f"| {name} | {connections} | {cells} | {median['cpu_us']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
