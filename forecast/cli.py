"""Command line: ``python -m forecast train``, ``import-legacy``, ``bootstrap`` and ``registry ...``.

Exit status 0 on success, 1 when the registry refuses (corrupt, incompatible
or missing version), 2 on usage errors.  Messages go to stderr, results to
stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from forecast.config import ModelSettings
from forecast.errors import ForecastError
from forecast.registry import ALIASES, Registry


def main(argv: list[str] | None = None) -> int:
    settings = ModelSettings()
    args = _parser(settings).parse_args(argv)
    try:
        return int(args.run(args, Registry(args.registry)))
    except ForecastError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


def _parser(settings: ModelSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m forecast", description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=settings.registry_dir, help="registry directory")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train, evaluate, register and promote a model")
    train.add_argument("--data", type=Path, default=settings.data_path, help="date,store,item,sales CSV")
    train.add_argument("--rounds", type=int, default=settings.train_rounds, help="boosting rounds")
    train.add_argument("--seed", type=int, default=0, help="seed of the generated data set")
    train.add_argument("--no-promote", action="store_true", help="register without moving 'production'")
    train.add_argument("--if-empty", action="store_true", help="do nothing if 'production' is already set")
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
                           rounds=settings.train_rounds, seed=0, no_promote=False, if_empty=True)  # fmt: skip

    registry = commands.add_parser("registry", help="inspect and manage registered versions")
    actions = registry.add_subparsers(required=True, metavar="ACTION")
    actions.add_parser("list", help="list versions, aliases and holdout SMAPE").set_defaults(run=_list)
    show = actions.add_parser("show", help="print a version's metadata")
    show.add_argument("ref", help="version (v3) or alias (production)")
    show.set_defaults(run=_show)
    verify = actions.add_parser(
        "verify", help="check checksum, compatibility, model text, features, load and both prediction paths"
    )
    verify.add_argument("ref")
    verify.add_argument("--json", action="store_true", help="on failure, print the error as one JSON object")
    verify.set_defaults(run=_verify)
    promote = actions.add_parser("promote", help="verify a version and point an alias at it")
    promote.add_argument("ref")
    promote.add_argument("--alias", choices=ALIASES, default="production")
    promote.set_defaults(run=_promote)
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
    result = train(sales_data.load_csv(args.data), rounds=args.rounds)
    version = registry.register(result.model_text, result.metadata)
    print(f"registered {version} in {registry.root}")
    if not args.no_promote:
        registry.promote(version)
        print(f"production -> {version}")
    holdout = result.metadata["metrics"]["holdout"]
    print(f"holdout SMAPE: model={holdout['model']['smape']:.2f} baseline={holdout['baseline']['smape']:.2f}")
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
    print(json.dumps(registry.metadata(args.ref), indent=2))
    return 0


def _verify(args: argparse.Namespace, registry: Registry) -> int:
    try:
        predictor = registry.verify(args.ref)
    except ForecastError as exc:
        if not args.json:
            raise
        print(json.dumps({"code": exc.code, "message": exc.message}))  # read by Registry.check
        return 1
    print(f"{predictor.version}: ok (checksum, compatibility, model text, features, load, both prediction paths)")
    return 0


def _promote(args: argparse.Namespace, registry: Registry) -> int:
    version = registry.promote(args.ref, args.alias)
    print(f"{args.alias} -> {version}")
    return 0
