"""The `bench` command line: run, report, rank, validate, ls."""
from __future__ import annotations

import argparse
import sys

from .errors import ConfigError


def _csv(s: str | None):
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def _shard(s: str):
    try:
        i, n = (int(x) for x in s.split("/"))
        assert 0 <= i < n
        return i, n
    except (ValueError, AssertionError):
        raise argparse.ArgumentTypeError(f"--shard wants INDEX/COUNT with 0 <= INDEX < COUNT, got '{s}'") from None


def cmd_run(args) -> int:
    from .config import load_datasets, load_zoo
    from .runner import RunOptions, run_grid
    from .validate import problems
    zoo, dsets = load_zoo(args.zoo), load_datasets(args.datasets)
    opts = RunOptions(out=args.out, cache_dir=args.cache_dir, device=args.device, force=args.force,
                      models=_csv(args.models), datasets=_csv(args.only_datasets), protocols=_csv(args.protocols),
                      seeds=[int(s) for s in _csv(args.seed)] if args.seed else None, shard=args.shard)
    found = problems(zoo, dsets, opts.models, opts.datasets)
    if found:
        raise ConfigError(found[0] + (f" (and {len(found) - 1} more problem(s); run bench validate)"
                                      if len(found) > 1 else ""))
    from .launch.run import launch_grid, record_plan
    if args.launcher != "none":
        return launch_grid(args, zoo, dsets, opts)
    record_plan(zoo, dsets, opts)
    s = run_grid(zoo, dsets, opts)
    print(f"done: {s.ok} computed, {s.skipped} already done, {len(s.errors)} failed; features: "
          f"{s.features_computed} extracted, {s.features_cached} from cache; records in {opts.out}")
    for cell, msg in s.errors:
        print(f"  failed: {cell.model} × {cell.dataset} × {cell.protocol} (seed {cell.seed}): {msg}", file=sys.stderr)
    return 1 if s.errors else 0


def cmd_status(args) -> int:
    from .launch.run import cmd_status as status
    return status(args)


def cmd_validate(args) -> int:
    from .config import load_datasets, load_zoo
    from .validate import problems
    zoo = load_zoo(args.zoo) if args.zoo else None
    dsets = load_datasets(args.datasets) if args.datasets else None
    found = problems(zoo, dsets)
    for p in found:
        print(p, file=sys.stderr)
    if found:
        return 2
    print(f"ok: {len(zoo.models) if zoo else 0} models, {len(dsets.datasets) if dsets else 0} datasets")
    return 0


def cmd_ls(args) -> int:
    from .data.sources import DATASET_SOURCES, PACKAGED_DATA, TORCHVISION_SPLITS
    from .models.sources import MODEL_SOURCES, PACKAGED_WEIGHTS
    from .protocols import training_protocols
    from .proxies import PROXIES
    print("model sources:   " + ", ".join(MODEL_SOURCES.names()))
    print("  package:       " + ", ".join(PACKAGED_WEIGHTS))
    print("dataset sources: " + ", ".join(DATASET_SOURCES.names()))
    print("  torchvision:   " + ", ".join(TORCHVISION_SPLITS))
    print("  packaged:      " + ", ".join(PACKAGED_DATA))
    print("proxies (frozen features):")
    for name in PROXIES.names():
        p = PROXIES.get(name)
        print(f"  {name:<15} {'higher' if p.higher_is_better else 'lower '} is better  {p.doc}")
    train = training_protocols()
    if train is not None:
        print("training protocols:")
        for name in train.names():
            print(f"  {name:<15} {train.get(name).doc}")
    return 0


def cmd_report(args) -> int:
    from .report.cli import report
    return report(args)


def cmd_rank(args) -> int:
    from .report.rank import rank
    return rank(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bench", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="compute every (model, dataset, protocol, seed) cell that lacks a valid record")
    r.add_argument("--zoo", default="model_zoo.yaml")
    r.add_argument("--datasets", default="datasets.yaml")
    r.add_argument("--out", default="results")
    r.add_argument("--cache-dir", default=None, help="feature cache (default: OUT/.cache)")
    r.add_argument("--models", help="comma-separated model names")
    r.add_argument("--only-datasets", "--dataset", dest="only_datasets", help="comma-separated dataset names")
    r.add_argument("--protocols", help="comma-separated protocols (default: settings.protocols)")
    r.add_argument("--seed", help="comma-separated seeds (default: settings.seeds)")
    r.add_argument("--device", default="cuda" if _cuda() else "cpu")
    r.add_argument("--force", action="store_true", help="recompute cells that already have ok records")
    r.add_argument("--shard", type=_shard, default=(0, 1), help="INDEX/COUNT: this worker's share (e.g. SLURM)")
    from .launch import add_launch_args, add_status_args
    add_launch_args(r)
    r.set_defaults(fn=cmd_run)

    st = sub.add_parser("status", help="cells done/failed/missing per protocol and array task states of a results dir")
    add_status_args(st)
    st.set_defaults(fn=cmd_status)

    v = sub.add_parser("validate", help="check the YAML files without downloading anything")
    v.add_argument("--zoo", default="model_zoo.yaml")
    v.add_argument("--datasets", default="datasets.yaml")
    v.set_defaults(fn=cmd_validate)

    ls = sub.add_parser("ls", help="list model sources, dataset sources, proxies and protocols")
    ls.set_defaults(fn=cmd_ls)

    from .report.cli import add_report_args
    rep = sub.add_parser("report", help="correlation tables and figures from records (or a published table)")
    add_report_args(rep)
    rep.set_defaults(fn=cmd_report)

    from .report.rank import add_rank_args
    rk = sub.add_parser("rank", help="rank a zoo for a new dataset with the cheap proxies")
    add_rank_args(rk)
    rk.set_defaults(fn=cmd_rank)
    return ap


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; finished cells are saved, run again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
