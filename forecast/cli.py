"""Command line: ``python -m forecast train``, ``import-legacy``, ``bootstrap``, ``actuals`` and ``registry ...``.

Exit status 0 on success, 1 when the registry refuses (corrupt, incompatible
or missing version), 2 on usage errors.  Messages go to stderr, results to
stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from forecast.actuals import ActualsStore
from forecast.actuals_input import BadActuals
from forecast.actuals_input import from_csv as actuals_from_csv
from forecast.config import ModelSettings
from forecast.errors import ForecastError
from forecast.intervals import Calibration
from forecast.mlflow_record import MlflowTarget, remove_alias, set_alias
from forecast.promotion import DEFAULT_DAYS, DEFAULT_MIN_ROWS, judge
from forecast.registry import ALIASES, DEFAULT_MODEL, Registry
from forecast.sources import add_version


def main(argv: list[str] | None = None) -> int:
    settings = ModelSettings()
    args = _parser(settings).parse_args(argv)
    try:
        return int(args.run(args, Registry(args.registry, getattr(args, "model", DEFAULT_MODEL))))
    except ForecastError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


def _parser(settings: ModelSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m forecast", description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=settings.registry_dir, help="registry directory")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    named = argparse.ArgumentParser(add_help=False)
    named.add_argument("--model", default=DEFAULT_MODEL, help=f"the model's name (default: {DEFAULT_MODEL})")

    train = commands.add_parser("train", parents=[named], help="train, evaluate, register and promote a model")
    train.add_argument("--data", type=Path, default=settings.data_path, help="date,store,item,sales CSV")
    train.add_argument("--rounds", type=int, default=settings.train_rounds, help="boosting rounds")
    train.add_argument("--seed", type=int, default=0, help="seed of the generated data set")
    for column in ("stores", "items"):
        train.add_argument(f"--{column}", type=numbers, help=f"train on these {column} only, e.g. 1-5,8 (default: all)")
    train.add_argument(
        "--backtest-origins",
        type=int,
        default=settings.backtest_origins,
        help="cutoffs of the backtest the intervals are calibrated on (0: no intervals; FORECAST_BACKTEST_ORIGINS)",
    )
    train.add_argument("--no-promote", action="store_true", help="register without moving 'production'")
    train.add_argument("--if-empty", action="store_true", help="do nothing if 'production' is already set")
    train.add_argument(
        "--mlflow", action="store_true", help="also log the run and register the version in MLflow (FORECAST_MLFLOW_*)"
    )
    train.set_defaults(run=_train)

    legacy = commands.add_parser("import-legacy", help="import the model a Ray Serve service's registry file names")
    legacy.add_argument("source", help="the original's model_registry.json: a path or an http(s) URL")
    legacy.add_argument("--promote", action="store_true", help="then point 'production' at it")
    legacy.set_defaults(run=_import_legacy)

    bootstrap = commands.add_parser(
        "bootstrap",
        help="if 'production' is not set: import FORECAST_LEGACY_REGISTRY_URL's model when set, else train",
    )
    bootstrap.add_argument("--data", type=Path, default=settings.data_path, help="date,store,item,sales CSV")
    bootstrap.set_defaults(run=_bootstrap, legacy_registry_url=settings.legacy_registry_url,
                           compiled_trees=settings.compiled_trees,
                           rounds=settings.train_rounds, seed=0, stores=None, items=None, no_promote=False,
                           if_empty=True, backtest_origins=settings.backtest_origins, mlflow=False)  # fmt: skip

    actuals = commands.add_parser("actuals", help="actual sales: load a date,store,item,sales CSV into the store")
    actuals.add_argument("action", choices=["load"], help="load: store FILE's rows (replacing those held)")
    actuals.add_argument("file", type=Path, help="a date,store,item,sales CSV (the Kaggle train file's columns)")
    actuals.set_defaults(run=_actuals, actuals_url=settings.actuals_url)

    registry = commands.add_parser("registry", help="inspect and manage registered versions")
    actions = registry.add_subparsers(required=True, metavar="ACTION")
    actions.add_parser("list", parents=[named], help="list versions, aliases and holdout SMAPE").set_defaults(run=_list)
    actions.add_parser("models", help="list the models and their aliases").set_defaults(run=_models)
    show = actions.add_parser("show", parents=[named], help="print a version's metadata")
    show.add_argument("ref", help="version (v3) or alias (production)")
    show.add_argument("--full", action="store_true", help="the interval calibration's tables too, not its summary")
    show.set_defaults(run=_show)
    verify = actions.add_parser(
        "verify", parents=[named], help="check checksum, compatibility, model text, features, load, both paths"
    )
    verify.add_argument("ref")
    verify.add_argument("--json", action="store_true", help="on failure, print the error as one JSON object")
    verify.add_argument(
        "--compile", action="store_true", help="first compile its trees if they are not (FORECAST_COMPILED_TREES)"
    )
    verify.set_defaults(run=_verify, compiled_trees=settings.compiled_trees)
    verify_many = actions.add_parser(
        "verify-many",
        help="verify versions of any models, one JSON line each (what a pod runs: forecast/child_check.py)",
    )
    verify_many.add_argument("wanted", nargs="+", metavar="MODEL/VERSION")
    verify_many.set_defaults(run=_verify_many, compiled_trees=settings.compiled_trees)
    compile_ = actions.add_parser("compile", parents=[named], help="compile a version's trees to native code")
    compile_.add_argument("ref", help="version (v3) or alias (production)")
    compile_.set_defaults(run=_compile)
    promote = actions.add_parser("promote", parents=[named], help="verify a version and point an alias at it")
    promote.add_argument("ref")
    promote.add_argument("--alias", choices=ALIASES, default="production")
    promote.add_argument("--weight", type=int, help="canary: percent of rows it scores; shadow: percent it samples")
    promote.add_argument("--if-better", action="store_true",
                         help="only if its SMAPE on the last --days days of actuals beats production's")  # fmt: skip
    promote.add_argument("--days", type=int, default=DEFAULT_DAYS, help="--if-better: days of actuals judged on")
    promote.add_argument("--min-rows", type=int, default=DEFAULT_MIN_ROWS,
                         help="--if-better: fewer actuals than this is no evidence: refused")  # fmt: skip
    promote.set_defaults(run=_promote, actuals_url=settings.actuals_url)
    rollback = actions.add_parser(
        "rollback", parents=[named], help="production back to its previous version; canary or shadow removed"
    )
    rollback.add_argument("--alias", choices=ALIASES, default="production")
    rollback.set_defaults(run=_rollback)
    export = actions.add_parser("export", parents=[named], help="record versions in MLflow (runs, model versions)")
    export.add_argument("refs", nargs="*", metavar="REF", help="versions or aliases (default: every version)")
    export.add_argument("--mlflow", action="store_true", required=True, help="to FORECAST_MLFLOW_TRACKING_URI")
    export.set_defaults(run=_export)
    parser.set_defaults(settings=settings)
    return parser


def _train(args: argparse.Namespace, registry: Registry) -> int:
    from forecast import data as sales_data  # deferred: pandas and LightGBM are slow to import
    from forecast.train import train

    if args.if_empty and "production" in registry.aliases():
        print(f"production is {registry.aliases()['production']}; not training (--if-empty)")
        return 0
    if not args.data.exists():
        print(f"{args.data} not found: generating the synthetic data set (seed {args.seed})")
        sales_data.write_csv(sales_data.generate(args.seed), args.data)
    data = sales_data.load_csv(args.data)
    if args.stores or args.items:  # one model per store or product family: its rows, its domain
        rows = data.rows
        data = data.select(
            np.isin(rows.stores, args.stores or rows.stores) & np.isin(rows.items, args.items or rows.items)
        )
        if not len(data):
            raise ForecastError(f"no rows of {args.data} are in --stores {args.stores} --items {args.items}")
    result = train(data, rounds=args.rounds, backtest_origins=args.backtest_origins)
    # --no-promote registers without verifying, as before: promote verifies later.
    version = add_version(registry, result.candidate(), promote=not args.no_promote, verify=False,
                          on_registered=lambda new: print(f"registered {new} in {registry.root}")).version  # fmt: skip
    if not args.no_promote:
        print(f"production -> {version}")
    if args.mlflow:
        _to_mlflow(args, registry, version, None if args.no_promote else "production")
    holdout = result.metadata["metrics"]["holdout"]
    print(f"holdout SMAPE: model={holdout['model']['smape']:.2f} baseline={holdout['baseline']['smape']:.2f}")
    coverage = (result.metadata["intervals"] or {}).get("coverage", {}).get("day/series/1")
    if coverage:
        print("interval coverage on the newest backtest cutoff (daily):",
              ", ".join(f"{level}%: {share}%" for level, share in coverage.items()))  # fmt: skip
    return 0


def numbers(text: str) -> list[int]:
    """``1-5,8`` as ``[1, 2, 3, 4, 5, 8]`` (argparse's type for ``--stores`` and ``--items``)."""
    try:
        found: list[int] = []
        for part in text.split(","):
            first, _, last = part.partition("-")
            found.extend(range(int(first), int(last or first) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 1-5,8") from None
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} names nothing")
    return found


def _actuals(args: argparse.Namespace, registry: Registry) -> int:
    """Load a CSV of actual sales, checked against the stores and items of the default model's production."""
    domain = registry.metadata("production")["domain"] if "production" in registry.aliases() else {}
    try:
        actuals = actuals_from_csv(args.file.read_text(), domain.get("stores"), domain.get("items"))
    except BadActuals as exc:
        raise ForecastError(f"{args.file}: {exc.message}; nothing was stored") from None
    loaded = ActualsStore.beside(args.registry, args.actuals_url).load(actuals)
    print(f"added {loaded.added}, replaced {loaded.replaced}, unchanged {loaded.unchanged}")
    return 0


def _import_legacy(args: argparse.Namespace, registry: Registry) -> int:
    from forecast.legacy import import_legacy

    version, registered = import_legacy(registry, args.source, args.promote)
    print(f"{'registered' if registered else 'already registered as'} {version} from {args.source} (verified)")
    if args.promote:
        print(f"production -> {version}")
    return 0


def _bootstrap(args: argparse.Namespace, registry: Registry) -> int:
    if "production" in registry.aliases():
        print(f"production is {registry.aliases()['production']}")
        if args.compiled_trees:  # a registry from before compiled trees gets them once
            _compile_if_needed(registry, "production")
        return 0
    if args.legacy_registry_url:
        args.source, args.promote = args.legacy_registry_url, True
        return _import_legacy(args, registry)
    return _train(args, registry)


def _list(args: argparse.Namespace, registry: Registry) -> int:
    by_version: dict[str, list[str]] = {}
    for alias, version in registry.aliases().items():
        by_version.setdefault(version, []).append(alias)
    print(f"{'VERSION':<8} {'CREATED':<26} {'SMAPE':>7} {'BASELINE':>8}  ALIASES")
    for version in registry.versions():
        try:
            metadata = registry.metadata(version)
            holdout = metadata["metrics"].get("holdout")  # an imported version has none
            scores = (
                f"{holdout['model']['smape']:>7.2f} {holdout['baseline']['smape']:>8.2f}"
                if holdout
                else f"{'-':>7} {'-':>8}"
            )
            row = f"{metadata['created_at']:<26} {scores}"
        except (ForecastError, KeyError, TypeError):
            row = f"{'(corrupt metadata)':<26} {'-':>7} {'-':>8}"
        print(f"{version:<8} {row}  {','.join(by_version.get(version, []))}")
    return 0


def _show(args: argparse.Namespace, registry: Registry) -> int:
    metadata = registry.metadata(args.ref)
    calibration = Calibration.of_version(metadata)
    if calibration is not None and not args.full:
        metadata["intervals"] = calibration.summary()  # its tables are long: --full prints them
    print(json.dumps(metadata, indent=2))
    return 0


def _verify(args: argparse.Namespace, registry: Registry) -> int:
    try:
        version, compiled = _verified(registry, args.ref, args.compile and args.compiled_trees, args.compiled_trees)
    except ForecastError as exc:
        if not args.json:
            raise
        print(json.dumps({"code": exc.code, "message": exc.message}))
        return 1
    engine = "compiled trees agree with LightGBM" if compiled else "no compiled trees: LightGBM scores"
    print(f"{version}: ok (checksum, compatibility, model text, features, load, both prediction paths; {engine})")
    return 0


def _verify_many(args: argparse.Namespace, registry: Registry) -> int:
    """Each MODEL/VERSION compiled if needed and verified; one JSON line each, as it is done (read by
    :mod:`forecast.child_check`).  Exit 0 whatever the outcomes: they are in the lines."""
    for wanted in args.wanted:
        model, _, version = wanted.partition("/")
        report: dict[str, object] = {"model": model, "version": version}
        try:
            _verified(registry.named(model), version, args.compiled_trees, args.compiled_trees)
            report["ok"] = True
        except ForecastError as exc:
            report.update(code=exc.code, message=exc.message)
        print(json.dumps(report), flush=True)
    return 0


def _verified(registry: Registry, ref: str, compile_first: bool, compiled_trees: bool) -> tuple[str, bool]:
    """``ref`` verified on LightGBM and, with ``compiled_trees``, on its compiled trees (compiled first if
    ``compile_first`` and they are missing): the version, and whether compiled trees agree."""
    if compile_first:
        _compile_if_needed(registry, ref)
    lightgbm = registry.verify(ref, compiled=False)
    compiled = registry.verify_compiled(ref, lightgbm) if compiled_trees else None
    return lightgbm.version, compiled is not None


def _compile_if_needed(registry: Registry, ref: str) -> None:
    """Compile ``ref``'s trees unless usable ones exist; a version that cannot be compiled is served by LightGBM."""
    why_not = registry.compiled_state(ref)
    if not why_not:
        return
    try:
        report = registry.compile(ref)
    except ForecastError as exc:
        print(f"warning: {exc.message}; LightGBM will score it", file=sys.stderr)
        return
    kilobytes = report.library_bytes // 1024
    print(f"compiled {ref} ({why_not} before): {report.seconds:.1f} s, {kilobytes} KB", file=sys.stderr)


def _compile(args: argparse.Namespace, registry: Registry) -> int:
    report = registry.compile(args.ref)
    print(f"{registry.resolve(args.ref)}: compiled in {report.seconds:.1f} s ({report.library_bytes // 1024} KB)")
    return 0


def _promote(args: argparse.Namespace, registry: Registry) -> int:
    if args.if_better:
        store = ActualsStore.beside(args.registry, args.actuals_url)
        print(judge(registry, store, args.ref, args.days, args.min_rows).summary())
    version = registry.promote(args.ref, args.alias, args.weight)
    weight = "" if args.weight is None else f" ({args.weight}% of rows)"
    print(f"{registry.model}: {args.alias} -> {version}{weight}")
    if args.settings.mlflow_tracking_uri:  # the pods following MLflow follow this alias
        _to_mlflow(args, registry, version, args.alias, args.weight)
    return 0


def _rollback(args: argparse.Namespace, registry: Registry) -> int:
    version = registry.rollback(args.alias)
    print(f"{registry.model}: {args.alias} -> {version or '(removed)'}")
    if args.settings.mlflow_tracking_uri:
        target = MlflowTarget.of(args.settings, registry.model)
        if version is None:
            remove_alias(target.api, target.name, args.alias)
            print(f"MLflow {target.name}: {args.alias} removed")
        else:
            _to_mlflow(args, registry, version, args.alias)
    return 0


def _export(args: argparse.Namespace, registry: Registry) -> int:
    for ref in args.refs or registry.versions():
        _to_mlflow(args, registry, registry.resolve(ref), None)
    return 0


def _to_mlflow(args: argparse.Namespace, registry: Registry, version: str, alias: str | None,
               weight: int | None = None) -> None:  # fmt: skip
    """Record ``version`` in MLflow (unless it is there) and, with ``alias``, point MLflow's alias at it."""
    target = MlflowTarget.of(args.settings, registry.model)
    mlflow_version = target.export(registry, version)
    print(f"MLflow {target.name}: version {mlflow_version} is {registry.model} {version}")
    if alias is not None:
        set_alias(target.api, target.name, alias, mlflow_version, weight)
        print(f"MLflow {target.name}: {alias} -> version {mlflow_version}")


def _models(args: argparse.Namespace, registry: Registry) -> int:
    for model in registry.models():
        table = registry.named(model).alias_table()
        aliases = ", ".join(
            f"{name} {alias.version}" + ("" if alias.weight is None else f" ({alias.weight}%)")
            for name, alias in table.items()
        )
        print(f"{model:<20} {aliases}")
    return 0
