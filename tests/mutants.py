"""Break the code one promise at a time and see which test catches each break.

    .venv/bin/python -m tests.mutants [--tier unit|stack|all] [--only SUBSTRING]

Each mutant replaces one snippet of one source file with a broken version, in a copy of the
checkout (the working tree is never touched), and runs the tests that should catch it there
(``catch``: the unit tier unless it names stack test files).  ``--tier`` picks the mutants by
where their catching tests live.  A mutant that no test catches is a promise without a guard; a
mutant whose snippet is no longer in its file once is *stale* (the code moved) and is reported as
such, never skipped.  The tests are first run on an unbroken copy: a failure there would "catch" every
mutant, so the run stops.  The last line is the summary; the exit status is 0 only when every mutant
run was caught.  ``tests/unit/test_mutants.py`` (in ``make test``) checks that every snippet is
where it says, so a stale mutant fails the ordinary test run too.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNIT = ("tests/unit",)


@dataclass(frozen=True)
class Mutant:
    claim: str  # the behaviour the docs or a docstring promise, which the break takes away
    path: str
    old: str
    new: str
    catch: tuple[str, ...] = UNIT  # the tests that should catch it: a tier's folder or test files

    @property
    def tier(self) -> str:
        return "unit" if all(where.startswith("tests/unit") for where in self.catch) else "stack"

    def occurrences(self, root: Path = ROOT) -> int:
        """How many times the snippet occurs in its file (1 when the mutant is current)."""
        source = root / self.path
        return source.read_text().count(self.old) if source.is_file() else 0


MUTANTS = (
    Mutant("a job pushed while the mule decides to sleep is still scored", "mules/loop.py",
           "if not batch and not (self.jobs.spare and not self.deferred):", "if True:"),
    Mutant("a reload met while draining is kept for the main loop", "mules/loop.py",
           "self.deferred.append(message)", "pass"),
    Mutant("jobs whose deadline passed are dropped unscored", "mules/jobs.py",
           "if job.deadline <= time.time():\n                logger.warning(",
           "if False:\n                logger.warning("),
    Mutant("a predict call longer than FORECAST_MULE_HARAKIRI_S is killed", "mules/jobs.py",
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
    Mutant("a load answered by the respawn of the mule asked is that mule's death", "app/mule_control.py",
           "if pid is not None and result.mule_pid != pid:", "if False:"),
    Mutant("a refused reload rolls back the mules already switched", "app/rollout.py",
           "            _roll_back(mules, switched, before, model)\n            raise ReloadRefused",
           "            raise ReloadRefused"),
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
    Mutant("a store the model does not know is refused (a few rows)", "app/domain.py",
           "if store not in domain.stores or item not in domain.items", "if item not in domain.items"),
    Mutant("a store the model does not know is refused (many rows)", "app/domain.py",
           "bad = ~_known(columns.stores, domain.store_table) | ", "bad = "),
    Mutant("the access line gets the answer's report from the fast lane", "app/fastlane.py",
           "*answer.headers.items(), *answer.report.headers()]", "*answer.headers.items()]"),
    Mutant("uwsgi.ini must start FORECAST_MULES mules", "serving/settings.py",
           "if found != settings.mules:", "if False:"),
    Mutant("a job a mule pulled and died before claiming is pushed again", "app/mule_client.py",
           "for mule_id in self._mules_died_since(waiting.since) - waiting.deaths:", "for mule_id in set[int]():"),
    Mutant("one mule's death pushes one unclaimed job again, not every one", "app/mule_client.py",
           "                waiting.deaths.add(mule_id)\n", ""),
    Mutant("a pod's first routes roll what its mules did not start with (/reload, poller off)", "app/rollout.py",
           "kept = old.production if old is not None else self._started_with(model)",
           "kept = old.production if old is not None else None"),
    Mutant("the launcher's children die with it", "launcher/stack.py",
           '        options["preexec_fn"] = lambda: die_with_parent(on_our_death, parent)\n', "",
           ("tests/stack/test_launcher.py",)),
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
    Mutant("a process killed holding a uWSGI lock hangs no other", "uwsgi.ini",
           "lock-engine = ipcsem", "# lock-engine = ipcsem", ("tests/stack/test_locks.py",)),
    Mutant("the mules keep pandas out", "mules/main.py",
           'sys.modules["pandas"] = None', "pass", ("tests/stack/test_api.py",)),
    Mutant("compiled trees are checked against the forecasts recorded with them", "forecast/registry_checks.py",
           "            _check_compiled(predictor)", "            pass"),
    Mutant("registry verify checks the recorded forecasts against LightGBM", "forecast/registry_checks.py",
           "difference = _largest_difference(reference.sales, lightgbm.predict(reference.rows))", "difference = 0.0"),
    Mutant("compiled trees load without LightGBM", "forecast/registry_checks.py",
           "return Predictor(trees, trend, version, feature_set)",
           "return Predictor.from_model_text(model_text, trend, version, feature_set) and "
           "Predictor(trees, trend, version, feature_set)"),
    Mutant("a library whose bytes do not match its checksum is not loaded", "forecast/compiled.py",
           'if _file_sha256(library_path) != info.get("library_sha256"):', "if False:"),
    Mutant("a CSV date read as arrays is a real day", "app/rows.py",
           "if (dates.astype(\"datetime64[M]\") != months).any():", "if False:"),
    Mutant("a CSV number read as arrays is digits only", "app/rows.py",
           "if (inside & ((digits < 0) | (digits > 9))).any():", "if False:"),
    Mutant("the Kaggle CSV takes the array path", "app/rows.py",
           "if not chunk or chunk.translate(None, _PLAIN_BYTES):", "if True:"),
    Mutant("an imported Ray Serve model's compiled trees add the trees in LightGBM's order", "forecast/compiled.py",
           "TREE_BLOCK, EXACT_TREE_BLOCK = 34, 1", "TREE_BLOCK, EXACT_TREE_BLOCK = 34, 34",
           ("tests/unit/test_legacy_digits.py",)),
    Mutant("the legacy form answers the digits the original printed", "forecast/compiled.py",
           "TREE_BLOCK, EXACT_TREE_BLOCK = 34, 1", "TREE_BLOCK, EXACT_TREE_BLOCK = 34, 34",
           ("tests/stack/test_legacy.py",)),
    Mutant("an imported Ray Serve model's compiled trees may differ from LightGBM by nothing",
           "forecast/registry_checks.py", "return 0.0 if feature_set.exact_sum else COMPILED_TOLERANCE",
           "return COMPILED_TOLERANCE",
           ("tests/unit/test_legacy_digits.py",)),
    Mutant("compiled trees summed in other blocks than the version asks are not used", "forecast/compiled.py",
           '        "tree_block": tree_block(exact_sum),\n', "", ("tests/unit/test_legacy_digits.py",)),
    Mutant("our versions' compiled trees made before the block size was recorded are still used",
           "forecast/compiled.py", 'made = {"tree_block": TREE_BLOCK, **info}', "made = info",
           ("tests/unit/test_legacy_digits.py",)),
    Mutant("the request deadline must be below the worker's harakiri", "serving/settings.py",
           "if deadline_s < harakiri_s and deadline_s < read_timeout_s:", "if deadline_s < read_timeout_s:",
           ("tests/unit/test_settings.py",)),
    Mutant("the request deadline must be below nginx's upstream read timeout", "serving/settings.py",
           "if deadline_s < harakiri_s and deadline_s < read_timeout_s:", "if deadline_s < harakiri_s:",
           ("tests/unit/test_settings.py",)),
    Mutant("the launcher refuses a deadline harakiri or nginx would cut short", "launcher/stack.py",
           "            check_deadline(self.settings(), NGINX_CONF)\n", "", ("tests/stack/test_launcher.py",)),
    Mutant("the image's prestart.sh refuses a deadline harakiri or nginx would cut short", "prestart.sh",
           ' \\\n    --nginx-conf "$forecast_root/app/nginx.conf")"', ')"', ("tests/stack/test_image_layout.py",)),
    Mutant("every route's trailing-slash form is a 307 to its absolute URL", "app/views.py",
           'headers={"Location": get_current_url({**request.environ, "PATH_INFO": path})}',
           'headers={"Location": path}', ("tests/unit/test_contract.py",)),
    Mutant("the absolute URL has the client's host and port (nginx passes them)", "nginx.conf",
           "        uwsgi_param HTTP_HOST $forecast_host;", "        # uwsgi_param HTTP_HOST $forecast_host;",
           ("tests/stack/test_contract.py",)),
    Mutant("one route label whichever adapter answered", "app/fastlane.py",
           "return name, NAMED_ROUTE", "return name, ROUTE", ("tests/unit/test_contract.py",)),
    Mutant("every 405 carries Allow, nginx's own for TRACE and CONNECT too", "nginx.conf",
           "        error_page 405 = @app;\n", "", ("tests/stack/test_contract.py",)),
    Mutant("the document bounds a row's store, item and date to the served versions", "app/openapi.py",
           '        _bound_rows(definitions["$defs"], domain)', "        pass", ("tests/unit/test_contract.py",)),
    Mutant("the document requires a body (or the legacy query form)", "app/openapi.py",
           '"required": True,  # or the legacy form', '"required": False,  # or the legacy form',
           ("tests/unit/test_contract.py",)),
    Mutant("a chunked request body is read whole, not as empty", "nginx.conf",
           '        uwsgi_param HTTP_TRANSFER_ENCODING "";\n', "", ("tests/stack/test_api.py",)),
    Mutant("a scrape leaves out a metrics file a new process has not sized yet", "app/exposition.py",
           'sorted(self.directory.glob("*.db")) if _size(path) > 0]', 'sorted(self.directory.glob("*.db"))]'),
    Mutant("the benchmark's CPU of a tree does not go negative when a process of it ends", "benchmarks/systems.py",
           "after[pid] - used for pid, used in before.items() if pid in after",
           "after.get(pid, 0.0) - used for pid, used in before.items()"),
    Mutant("one child verifies every version a pod asks for", "forecast/child_check.py",
           'for model, version in wanted)]', 'for model, version in wanted[:1])]'),
    Mutant("a version a verifying child crashed on is refused, the rest verified", "forecast/child_check.py",
           "outcomes[on] = _failure(", "outcomes[on] = None if on else _failure("),
    Mutant("a rollout pass checks every new version of every model in one child", "app/rollout.py",
           "            self._check_new(tables, refused)\n", ""),
    Mutant("totals add the series in order, each one (not a buffered add that drops repeats)", "forecast/buckets.py",
           "np.add.at(per_group, groups.of_series, daily)", "per_group[groups.of_series] += daily"),
    Mutant("weeks are ISO weeks: Monday to Sunday", "forecast/buckets.py",
           "of_day = (offsets + (first_day + _EPOCH_WEEKDAY) % 7) // 7", "of_day = offsets // 7"),
    Mutant("a level's half-width is the ceil((n + 1) level)-th smallest error", "forecast/intervals.py",
           "k = math.ceil((n + 1) * level / 100 - 1e-9)", "k = math.ceil(n * level / 100 - 1e-9)"),
    Mutant("a level rounds up to the calibration's grid, never down", "forecast/intervals.py",
           "if grid_level >= level - 1e-9:", "if grid_level + 1 >= level:"),
    Mutant("a band is never negative", "forecast/intervals.py",
           "lower: np.ndarray = np.maximum(np.expm1(centre - halfwidths), 0.0)",
           "lower: np.ndarray = np.expm1(centre - halfwidths)"),
    Mutant("a calibration whose bands would cross is refused", "forecast/intervals.py",
           "elif any(later < earlier for earlier, later in itertools.pairwise(row)):", "elif False:"),
    Mutant("small series get bands of their own size", "forecast/intervals.py",
           "count = min(MAX_MAGNITUDE_BINS, max(1, len(bin_errors) // MAGNITUDE_BIN_ERRORS))", "count = 1"),
    Mutant("a weekly band is calibrated on weekly sums", "forecast/backtest.py",
           "found[kind_key(Granularity.WEEK, totals, d)].add(", "found[kind_key(Granularity.DAY, totals, 1)].add("),
    Mutant("a forecast of more daily rows than the limit is 413", "app/forecasting.py",
           "if rows > max_rows:", "if rows > 2 * max_rows:"),
    Mutant("a week's or total's band comes from its own kind's errors", "app/forecasting.py",
           "key = kind_key(ask.granularity, ask.totals, length)", "key = kind_key(Granularity.DAY, None, 1)"),
    Mutant("a job's outputs cross to the mule", "serving/messages.py",
           'outputs = _name(",".join(self.outputs)) if self.outputs else b""', 'outputs = b""'),
    Mutant("each output reads its own columns of a result", "serving/messages.py",
           "for name, a, b in zip(names, edges[:-1], edges[1:], strict=True)}",
           "for name, a, b in zip(names, edges[:-1], edges[:-1], strict=True)}"),
    Mutant("a /predict row asking for bands gets its lower and upper edges", "app/answers.py",
           'obj["lower"] = dict(zip(names, low, strict=True))', 'obj["lower"] = dict(zip(names, high, strict=True))'),
    Mutant("a batch's rows ask for the same levels", "app/predict.py",
           "        if levels != asked[0]:\n", "        if False:\n"),
    Mutant("loading the same actuals twice changes nothing, new sales replace", "forecast/actuals.py",
           '"WHERE actuals.sales <> excluded.sales")', '"WHERE false")'),
    Mutant("two rows of one (date, store, item) in one load are refused", "forecast/actuals_input.py",
           "    if len(unique) != len(keys):\n", "    if False:\n"),
    Mutant("sales are never negative", "forecast/actuals_input.py",
           "if number is None or number < 0:", "if number is None:"),
    Mutant("base times the factors is 1 + sales", "app/explain.py",
           "return np.exp(expected), np.exp(np.column_stack([per_feature, version.trend.offset(days)]))",
           "return np.exp(expected), np.exp(per_feature)", ("tests/stack/test_forecast.py",)),
    Mutant("a daily forecast is /predict's number, also when explained", "mules/jobs.py",
           "values = np.column_stack([values, *blocks]) if blocks else values",
           "values = np.column_stack([values * (1 + 1e-12), *blocks]) if blocks else values",
           ("tests/stack/test_forecast.py",)),
    Mutant("an accuracy job's spare flag crosses to the mule", "serving/messages.py",
           "len(model), len(version), _SPARE if self.spare else 0,", "len(model), len(version), 0,"),
    Mutant("a spare job waits for every live job", "mules/jobs.py",
           "            if job.spare:  # after the live jobs", "            if False:  # after the live jobs"),
    Mutant("the planner page's chart library is taken only as npm published it", "app/ui/vendor.py",
           "    if integrity_of(data) != INTEGRITY:\n", "    if False:\n"),
    Mutant("GET /actuals of a store or an item answers its rows only", "app/actuals.py",
           "keep &= column == asked[name]", "keep &= column == column", ("tests/stack/test_actuals.py",)),
    Mutant("before any actuals, GET /actuals answers the series' own training weeks", "app/actuals.py",
           'if asked.get("store", store) == store and asked.get("item", item) == item', "if True",
           ("tests/stack/test_ui.py",)),
    Mutant("a result's outputs keep their widths across the wire", "serving/messages.py",
           "flags, len(self.widths))  # fmt: skip", "flags, 0)  # fmt: skip"),
    Mutant("SMAPE counts 0 where forecast and actual are both 0", "forecast/accuracy.py",
           "out=np.zeros_like(denominator, dtype=np.float64)",
           "out=np.full_like(denominator, 200.0, dtype=np.float64)"),
    Mutant("a week counts only when every day has an actual", "forecast/accuracy.py",
           "complete = np.add.reduceat(present, starts, axis=1) == buckets.lengths[None, :]",
           "complete = np.add.reduceat(present, starts, axis=1) > 0"),
    Mutant("the baseline is the actual 364 days earlier", "forecast/accuracy.py",
           "for target, offset in ((actual, 0), (baseline, SEASON_DAYS)):",
           "for target, offset in ((actual, 0), (baseline, SEASON_DAYS - 7)):"),
    Mutant("--if-better refuses a version that is not better", "forecast/promotion.py",
           "or found[0].smape >= found[1].smape:", "or found[0].smape >= found[1].smape + 1e9:"),
    Mutant("--if-better refuses with too few actuals", "forecast/promotion.py",
           "    if len(actual) < min_rows:\n", "    if False:\n"),
    Mutant("an accuracy answer is kept only while no actuals arrived for its days", "app/accuracy.py",
           "stamp = store.stamp(window.first_day, window.last_day, SEASON_DAYS)", "stamp = 0",
           ("tests/stack/test_accuracy.py",)),
    Mutant("coverage counts actuals inside both edges of a band", "app/accuracy.py",
           "inside[rows] = (lower <= actual) & (actual <= upper)", "inside[rows] = actual <= upper",
           ("tests/stack/test_accuracy.py",)),
    Mutant("the baseline's actuals are the window's days 364 days earlier", "forecast/actuals.py",
           '"day", (first_day, last_day, first_day - lag_days, last_day - lag_days))',
           '"day", (first_day, last_day, first_day, last_day))', ("tests/stack/test_accuracy.py",)),
    Mutant("the alert factor gauge is the setting", "app/accuracy_gauges.py",
           "metrics.ACCURACY_ALERT_FACTOR.set(self.settings.accuracy_alert_factor)",
           "metrics.ACCURACY_ALERT_FACTOR.set(1.0)", ("tests/stack/test_accuracy.py",)),
    Mutant("a forecast answer's rows are written row after row, each part in its place", "app/answers.py",
           "texts[n :: len(parts)] = [part] * rows if isinstance(part, str) else part",
           "texts[n :: len(parts)] = [part] * rows if isinstance(part, str) else part[::-1]"),
    Mutant("a forecast object's keys and constants are all written", "app/forecast_answers.py",
           "        parts[-1] += written\n", "        parts[-1] = written\n"),
    Mutant("writing a forecast answer leaves no cycle holding its cells", "app/forecast_answers.py",
           "    parts = [] if parts is None else parts\n",
           "    parts = [] if parts is None else parts\n    holder: list[object] = [parts]\n"
           "    holder.append(holder)\n"),
    Mutant("Swarm rolls back an update whose replicas never get healthy", "deploy/swarm/stack.yml",
           "failure_action: rollback  #", "failure_action: pause  #", ("tests/swarm/test_swarm.py",)),
    Mutant("the Swarm front sends a request a replica refused to another replica", "deploy/swarm/front.conf",
           "proxy_next_upstream error timeout;", "proxy_next_upstream off;", ("tests/swarm/test_swarm.py",)),
    Mutant("a new Swarm front starts before the old one stops", "deploy/swarm/stack.yml",
           "one host port).\n        order: start-first", "one host port).\n        order: stop-first",
           ("tests/swarm/test_swarm.py",)),
    Mutant("the Deployment's readiness probe asks /status", "k8s/deployment.yaml",
           "httpGet: {path: /status, port: http}\n            periodSeconds: 5",
           "httpGet: {path: /no-such-path, port: http}\n            periodSeconds: 5",
           ("tests/kube/test_kube_play.py",)),
    Mutant("a pickled MLflow model is never unpickled: refused", "forecast/mlflow_models.py",
           "    if data == PICKLE_FILE:\n", "    if False:\n", ("tests/unit/test_mlflow_models.py",)),
    Mutant("only an LGBMRegressor's skops file is read", "forecast/mlflow_models.py",
           'if schema.get("__class__") != "LGBMRegressor":', "if False:", ("tests/unit/test_mlflow_models.py",)),
    Mutant("a flavor model's features must be a feature set the service knows", "forecast/mlflow_models.py",
           "    if feature_set is None:\n        ours =", "    if False:\n        ours =",
           ("tests/unit/test_mlflow_models.py",)),
    Mutant("a flavor model answers through the year after the last it saw", "forecast/mlflow_models.py",
           'f"{years[1] + 1:04d}-12-31"', 'f"{years[1]:04d}-12-31"', ("tests/unit/test_mlflow_models.py",)),
    Mutant("the five guardrail tags give the original's exact answers", "forecast/mlflow_models.py",
           "if all(tags.get(name) for name in GUARDRAIL_TAGS):", "if False:", ("tests/unit/test_mlflow_models.py",)),
    Mutant("a canary's weight tag must be a percent", "forecast/mlflow_sync.py",
           "    if not 0 <= weight <= 100:\n", "    if False:\n", ("tests/unit/test_mlflow_models.py",)),
    Mutant("two MLflow models cannot be one of ours", "forecast/mlflow_sync.py",
           "if len(set(models)) != len(models):", "if False:", ("tests/unit/test_mlflow_models.py",)),
    Mutant("a run records the backtest's coverage", "forecast/mlflow_record.py",
           "found[f\"coverage.{cell.replace('/', '.')}.{level}\"] = float(share)", "pass",
           ("tests/unit/test_mlflow_models.py",)),
    Mutant("moving an MLflow alias rolls the new version out", "forecast/mlflow_sync.py",
           "if not _names_already(registry, alias, version, weight):", "if registry.alias(alias) is None:",
           ("tests/stack/test_mlflow.py",)),
    Mutant("pods sharing a registry do not move an alias between two names of one MLflow version",
           "forecast/mlflow_sync.py", " or registry.checksum(current.version) == registry.checksum(version)", "",
           ("tests/unit/test_mlflow_models.py",)),
    Mutant("GET /models shows what MLflow names and the pod refused", "app/service.py",
           "| (sync.refused if sync else {})", "| {}", ("tests/stack/test_mlflow.py",)),
    Mutant("a pass that cannot reach MLflow is counted and reported", "app/mlflow_follow.py",
           "failures=before.failures + 1", "failures=before.failures",
           ("tests/unit/test_mlflow_follow.py", "tests/stack/test_mlflow.py")),
    Mutant("GET /accuracy refuses (422 naming end) a default window starting before year 1", "app/actuals.py",
           "if first < _FIRST_DAY:", "if False:", ("tests/unit/test_accuracy_window.py",)),
    Mutant("MLflow passes are counted on the pod's state, whichever worker runs one", "app/mlflow_follow.py",
           "before = self.pool.sync_state() or SyncState(self.tracking_uri)", "before = SyncState(self.tracking_uri)",
           ("tests/unit/test_mlflow_follow.py",)),
    Mutant("train --mlflow logs the model card's metrics", "forecast/mlflow_record.py",
           '"metrics": _metrics(metadata, _now_ms())', '"metrics": []', ("tests/stack/test_mlflow.py",)),
)  # fmt: skip


FETCHED = ("app/ui/static/vendor",)  # ignored but needed: what `make venv` fetched (the planner page's chart library)
LINKED = (".venv-mlflow",)  # ignored but needed, and large: linked, not copied (the tests' MLflow server)


def copy_checkout(target: Path) -> None:
    """The checkout's files as they are now (tracked or new, never ignored ones, but :data:`FETCHED`), into
    ``target``, and links to :data:`LINKED`."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")  # fmt: skip
    listed += [str(path.relative_to(ROOT)) for folder in FETCHED for path in (ROOT / folder).glob("*")]
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_symlink():  # docs/results -> benchmarks/results: a link, as git keeps it
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).symlink_to(source.readlink())
        elif source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    for name in LINKED:
        if (ROOT / name).exists():
            (target / name).symlink_to(ROOT / name)


def run(snapshot: Path, mutant: Mutant | None, catch: tuple[str, ...] = UNIT) -> list[str]:
    """The tests of ``catch`` that fail in a copy of ``snapshot`` with ``mutant`` applied (None: the copy as it
    is), stopping at the first (empty: nothing failed)."""
    with tempfile.TemporaryDirectory(prefix="mutant-", ignore_cleanup_errors=True) as tmp:  # a stack may still write
        work = Path(tmp)
        shutil.copytree(snapshot, work, symlinks=True, dirs_exist_ok=True)
        if mutant is not None:
            source = work / mutant.path
            source.write_text(source.read_text().replace(mutant.old, mutant.new))
            catch = nearest_first(work, mutant.catch, mutant.path)
        # test_mutants.py checks the snippets are in the code: a break removes one, so it would "catch" them all
        command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--timeout=120",
                   "--ignore=tests/unit/test_mutants.py", *catch]  # fmt: skip
        out = subprocess.run(command, cwd=work, capture_output=True, text=True, check=False).stdout
    return sorted(set(re.findall(r"^(?:FAILED|ERROR) (tests/.+?)(?: - .*)?$", out, re.M)))


def nearest_first(work: Path, catch: tuple[str, ...], path: str) -> tuple[str, ...]:
    """``catch`` as test files, those that name the broken module first, then its package's: the run stops at
    its first failure, so a mutant caught by its module's own tests is judged in seconds instead of after the
    whole tier.  The same tests run either way (test_mutants.py aside, see :func:`run`); only the order changes.
    """
    module = path.removesuffix(".py").replace("/", ".")
    package = module.split(".")[0] + "."
    files = []
    for where in catch:
        found = [work / where] if (work / where).is_file() else sorted((work / where).rglob("test_*.py"))
        files += [str(f.relative_to(work)) for f in found if f.name != "test_mutants.py"]

    def distance(name: str) -> int:
        text = (work / name).read_text()
        return 0 if module in text else 1 if package in text else 2

    return tuple(sorted(files, key=distance))


def baseline_failures(snapshot: Path, chosen: list[Mutant]) -> list[str]:
    """Tests that fail in an unbroken copy: a mutant 'caught' by one of them would prove nothing."""
    catches = list(dict.fromkeys(m.catch for m in chosen))
    with ThreadPoolExecutor(len(catches) or 1) as pool:
        return [failed for found in pool.map(lambda catch: run(snapshot, None, catch), catches) for failed in found]


def verdict(snapshot: Path, mutant: Mutant) -> tuple[str, str]:
    """("caught" | "NOT CAUGHT" | "STALE", what to print after the claim)."""
    found = mutant.occurrences(snapshot)
    if found != 1:
        return "STALE", f"STALE: the snippet occurs {found} times in {mutant.path}, not once; update the mutant"
    caught = run(snapshot, mutant)
    return ("caught", ", ".join(caught)) if caught else ("NOT CAUGHT", "NOT CAUGHT")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", choices=["unit", "stack", "all"], default="unit")
    parser.add_argument("--only", default="", help="run the mutants whose claim contains this")
    parser.add_argument("--jobs", type=int, default=0,
                        help="mutants judged at once (default: a core each for the unit tier, one at a time with "
                             "stack tests, which count on deadlines)")  # fmt: skip
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if args.only in m.claim and args.tier in ("all", m.tier)]
    # One snapshot of the checkout, taken now, is what every mutant breaks: edits (a merge, a checkout) made
    # while a run goes on cannot reach it (a copy per mutant from the live checkout once took in a half-done
    # merge, whose failing test then "caught" a mutant).
    with tempfile.TemporaryDirectory(prefix="mutants-snapshot-") as tmp:
        snapshot = Path(tmp)
        copy_checkout(snapshot)
        broken = baseline_failures(snapshot, chosen)
        if broken:
            print("the unbroken copy fails already, so no mutant can be judged: " + ", ".join(broken))
            return 2
        counts = dict.fromkeys(("caught", "NOT CAUGHT", "STALE"), 0)
        jobs = args.jobs or (os.cpu_count() or 1 if all(m.tier == "unit" for m in chosen) else 1)
        with ThreadPoolExecutor(jobs) as pool:  # each mutant in its own copy: independent; printed in order
            verdicts = pool.map(lambda m: verdict(snapshot, m), chosen)
            for mutant, (outcome, detail) in zip(chosen, verdicts, strict=True):
                counts[outcome] += 1
                print(f"- {mutant.claim} ({mutant.path}): {detail}", flush=True)
    print(f"mutants ({args.tier} tier): {len(chosen)} run, {counts['caught']} caught, "
          f"{counts['NOT CAUGHT']} not caught, {counts['STALE']} stale")  # fmt: skip
    return 0 if chosen and counts["caught"] == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
