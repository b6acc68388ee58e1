"""Break the code one piece at a time and see which tests catch each break.

    .venv/bin/python -m tests.mutants [--tier unit|stack|all] [--only SUBSTRING]

Each mutant replaces one snippet of one source file with a broken version, in a copy of the
checkout (the working tree is never touched), and runs the chosen tier there.  A mutant that no
test catches is a README claim without a guard.  Not part of ``make test``: it runs the tier once
per mutant (about 20 s each for the unit tier on 2 cores).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    claim: str  # the behaviour the README or a docstring promises, which the break takes away
    path: str
    old: str
    new: str


MUTANTS = (
    Mutant("a job pushed while the mule decides to sleep is still scored", "mules/loop.py",
           "if self.deferred or not (batch := self.pull_batch()):", "if True:"),
    Mutant("a reload met while draining is kept for the main loop", "mules/loop.py",
           "            if message[:1] == CONTROL_RELOAD:\n                self.deferred.append(message)",
           "            pass"),
    Mutant("jobs whose deadline passed are dropped unscored", "mules/loop.py",
           "if job.deadline <= time.time():", "if False:"),
    Mutant("a predict call longer than FORECAST_MULE_HARAKIRI_S is killed", "mules/loop.py",
           "self.uwsgi.set_user_harakiri(self.settings.mule_harakiri_s)", "pass"),
    Mutant("a dead mule's job is pushed again once", "app/mule_client.py",
           "elif job.attempt == 1:", "elif False:"),
    Mutant("a second death answers 503 mule_died", "app/mule_client.py",
           "elif job.attempt == 1:", "elif job.attempt < 3:"),
    Mutant("the admission bound keeps the queue from wrapping", "app/admission.py",
           "if self.in_flight + jobs > self.limit:", "if self.in_flight + jobs > self.limit + 1:"),
    Mutant("jobs are released whatever the outcome", "app/mule_client.py",
           "        finally:\n            self.admission.release(len(spans))",
           "        except BaseException:\n            raise\n        self.admission.release(len(spans))"),
    Mutant("a load answered by the respawn of the mule asked is that mule's death", "app/mule_client.py",
           "if pid is not None and result.mule_pid != pid:", "if False:"),
    Mutant("a refused reload rolls back the mules already switched", "app/rollout.py",
           "            _roll_back(mules, switched, previous)\n", ""),
    Mutant("a 'no model' view of the pool is never trusted for later requests", "app/service.py",
           "self._view_until = now + POOL_VIEW_TTL_S if view.any_serving else now",
           "self._view_until = now + POOL_VIEW_TTL_S"),
    Mutant("a mule with a stale heartbeat does not serve", "serving/messages.py",
           "return self.model_version is not None and self.fresh(now, stale_after_s)",
           "return self.model_version is not None"),
    Mutant("/status is 503 unless every mule serves", "app/pool.py",
           "return len(self.serving) == len(self.beats)", "return bool(self.serving)"),
    Mutant("a job of another format version is refused", "serving/messages.py",
           "if (magic, fmt) != (_JOB_MAGIC, _FORMAT):", "if magic != _JOB_MAGIC:"),
    Mutant("bytes that are not a result are refused", "serving/messages.py",
           "if (magic, fmt) != (_RESULT_MAGIC, _FORMAT):", "if fmt != _FORMAT:"),
    Mutant("rows cross the boundary little-endian", "serving/messages.py",
           'ROW_DTYPE = np.dtype("<i4")', 'ROW_DTYPE = np.dtype(">i4")'),
    Mutant("the single-row LightGBM path gives Booster.predict's numbers", "forecast/model.py",
           "out[i] = value[0]", "out[i] = value[0] * 1.01"),
    Mutant("requests that waited in the backlog past their deadline are shed", "app/predict.py",
           "if time.time() >= deadline:", "if False:"),
    Mutant("every 503 carries Retry-After", "app/errors.py",
           'headers["Retry-After"] = str(retry_after_s)', "pass"),
    Mutant("live gauges of dead processes are dropped", "app/exposition.py",
           "if match and not process_alive(int(match.group(1))):", "if False:"),
    Mutant("a store the model does not know is refused", "app/domain.py",
           'if row["store"] not in domain.stores:', "if False:"),
    Mutant("the access line gets the answer's report from the fast lane", "app/fastlane.py",
           "                *answer.report.headers(),\n", ""),
    Mutant("uwsgi.ini must start FORECAST_MULES mules", "serving/settings.py",
           "if found != settings.mules:", "if False:"),
    Mutant("a job a mule pulled and died before claiming is pushed again", "app/mule_client.py",
           "for mule_id in self._mules_died_since(waiting.since) - waiting.deaths:", "for mule_id in set[int]():"),
    Mutant("one mule's death pushes one unclaimed job again, not every one", "app/mule_client.py",
           "                waiting.deaths.add(mule_id)\n", ""),
    Mutant("a pod's first routes roll what its mules did not start with (/reload, poller off)", "app/rollout.py",
           "kept = old.production if old is not None else self._started_with(model)",
           "kept = old.production if old is not None else None"),
    Mutant("the launcher's children die with it (stack tier)", "launcher/stack.py",
           '        options["preexec_fn"] = lambda: die_with_parent(on_our_death, parent)\n', ""),
    Mutant("a large JSON body is parsed a piece at a time", "app/predict.py",
           "    if pieces is not None:\n        return ReadRows(*pieces)\n", ""),
    Mutant("a cut between pieces is one between rows", "app/rows.py",
           'rb"\\}[ \\t\\r\\n]*,[ \\t\\r\\n]*\\{"', 'rb"\\}[ \\t\\r\\n]*,"'),
    Mutant("a large body is read a piece at a time", "app/predict.py",
           "    if length <= BODY_PIECE_BYTES:", "    if True:"),
    Mutant("freed memory is handed back once a large request is answered", "app/fastlane.py",
           "return ThenRelease(body) if request.large else body", "return body"),
    Mutant("...and only after it is sent", "app/fastlane.py",
           "        return iter(self._body)", "        release_freed_memory()\n        return iter(self._body)"),
    Mutant("a process killed holding a uWSGI lock hangs no other (stack tier)", "uwsgi.ini",
           "lock-engine = ipcsem", "# lock-engine = ipcsem"),
    Mutant("the mules keep pandas out (stack tier)", "mules/main.py",
           'sys.modules["pandas"] = None', "pass"),
    Mutant("compiled trees are checked against the forecasts recorded with them", "forecast/registry.py",
           "            _check_compiled(predictor)", "            pass"),
    Mutant("registry verify checks the recorded forecasts against LightGBM", "forecast/registry.py",
           "difference = _largest_difference(reference.sales, lightgbm.predict(reference.rows))", "difference = 0.0"),
    Mutant("compiled trees load without LightGBM", "forecast/registry.py",
           "return Predictor(None, trend, version, feature_set, compiled=trees)",
           "return Predictor(Predictor.from_model_text(model_text, trend, version, feature_set).booster, "
           "trend, version, feature_set, compiled=trees)"),
    Mutant("a library whose bytes do not match its checksum is not loaded", "forecast/compiled.py",
           'if _file_sha256(library_path) != info.get("library_sha256"):', "if False:"),
    Mutant("a CSV date read as arrays is a real day", "app/rows.py",
           "if (dates.astype(\"datetime64[M]\") != months).any():", "if False:"),
    Mutant("a CSV number read as arrays is digits only", "app/rows.py",
           "if (inside & ((digits < 0) | (digits > 9))).any():", "if False:"),
    Mutant("the Kaggle CSV takes the array path", "app/rows.py",
           "if not chunk or chunk.translate(None, _PLAIN_BYTES):", "if True:"),
    Mutant("an imported Ray Serve model's compiled trees add the trees in LightGBM's order", "forecast/compiled.py",
           "TREE_BLOCK, EXACT_TREE_BLOCK = 34, 1", "TREE_BLOCK, EXACT_TREE_BLOCK = 34, 34"),
    Mutant("an imported Ray Serve model's compiled trees may differ from LightGBM by nothing", "forecast/registry.py",
           "return 0.0 if feature_set.exact_sum else COMPILED_TOLERANCE", "return COMPILED_TOLERANCE"),
    Mutant("compiled trees summed in other blocks than the version asks are not used", "forecast/compiled.py",
           '        "tree_block": tree_block(exact_sum),\n', ""),
    Mutant("our versions' compiled trees made before the block size was recorded are still used",
           "forecast/compiled.py", 'made = {"tree_block": TREE_BLOCK, **info}', "made = info"),
    Mutant("the request deadline must be below the worker's harakiri", "serving/settings.py",
           "if deadline_s < harakiri_s and deadline_s < read_timeout_s:", "if deadline_s < read_timeout_s:"),
    Mutant("the request deadline must be below nginx's upstream read timeout", "serving/settings.py",
           "if deadline_s < harakiri_s and deadline_s < read_timeout_s:", "if deadline_s < harakiri_s:"),
    Mutant("the launcher refuses a deadline harakiri or nginx would cut short (stack tier)", "launcher/stack.py",
           "            check_deadline(self.settings(), NGINX_CONF)\n", ""),
    Mutant("the image's prestart.sh refuses a deadline harakiri or nginx would cut short (stack tier)", "prestart.sh",
           ' \\\n    --nginx-conf "$forecast_root/app/nginx.conf")"', ')"'),
)  # fmt: skip

TIERS = {"unit": ["tests/unit"], "stack": ["tests/stack"], "all": ["tests"]}


def copy_checkout(target: Path) -> None:
    """The checkout's files as they are now (tracked or new, never ignored ones), into ``target``."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def run(mutant: Mutant, tier: str) -> list[str]:
    """The tests that fail with ``mutant`` applied (empty: nothing caught it)."""
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        work = Path(tmp)
        copy_checkout(work)
        source = work / mutant.path
        text = source.read_text()
        if text.count(mutant.old) != 1:
            raise SystemExit(f"{mutant.path}: the snippet for {mutant.claim!r} is not there once; update the mutant")
        source.write_text(text.replace(mutant.old, mutant.new))
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=120", *TIERS[tier]]
        out = subprocess.run(command, cwd=work, capture_output=True, text=True, check=False).stdout
    return sorted(set(re.findall(r"^(?:FAILED|ERROR) (tests/.+?)(?: - .*)?$", out, re.M)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", choices=sorted(TIERS), default="unit")
    parser.add_argument("--only", default="", help="run the mutants whose claim contains this")
    args = parser.parse_args()
    survivors = 0
    for mutant in (m for m in MUTANTS if args.only in m.claim):
        caught = run(mutant, args.tier)
        survivors += not caught
        print(f"- {mutant.claim} ({mutant.path}): " + (", ".join(caught) if caught else "NOT CAUGHT"), flush=True)
    print(f"{survivors} of {len(MUTANTS)} breaks pass every {args.tier} test")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
