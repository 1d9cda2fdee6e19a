"""The `bench` command line: run, report, rank, select, validate, ls."""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from . import stopping
from .errors import ConfigError, DiskFull
from .stopping import Stopped


def _stop(signum, frame):
    # The first signal stops the run; later ones (Ctrl-C pressed twice, a scheduler's repeated TERM) must not
    # interrupt the cleanup that releases the claims, nor print a traceback from inside it. The request is also
    # recorded: an exception raised inside some C-level calls is dropped, and the loops' check() raises it again.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    stopping.request(signum)
    raise Stopped(signum)


def _install_stop_handlers():
    """SIGTERM (SLURM's preemption and time limit, `kill`) ends the run like Ctrl-C: one line, claims released,
    exit 128 + signal. Only the CLI installs them: submitit's task processes keep their own handlers (they call
    the runner directly, not main), so requeueing on preemption is untouched. Returns the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    stopping.clear()
    return {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}


def _csv(s: str | None):
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def _seeds(s: str) -> list[int]:
    """--seed 0,1,2: non-negative, distinct integers (an argparse type, so a bad value is a usage error)."""
    try:
        seeds = [int(x) for x in _csv(s) or []]
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants comma-separated integers like 0,1,2, got '{s}'") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"wants distinct non-negative integers like 0,1,2, got '{s}'")
    return seeds


class _Parser(argparse.ArgumentParser):
    """Usage errors end in one `bench: error:` line (exit 2), like every other bad input."""

    def error(self, message):
        self.exit(2, f"bench: error: {message} (see '{self.prog} --help')\n")


def _check_run_flags(zoo, dsets, opts) -> None:
    """Names given on the command line are blamed on their flag, not on the YAML file they are looked up in."""
    from . import protocols as P
    from .errors import unknown_name
    for flag, wanted, valid, kind in (("--models", opts.models, [m.name for m in zoo.models], "model"),
                                      ("--only-datasets", opts.datasets, [d.name for d in dsets.datasets],
                                       "dataset")):
        for name in wanted or []:
            if name not in valid:
                raise unknown_name(kind, name, valid, flag)
    for name in opts.protocols or []:
        P.kind_of(name, "--protocols")
    if opts.protocols is not None and len(set(opts.protocols)) != len(opts.protocols):
        raise ConfigError(f"--protocols '{','.join(opts.protocols)}' names a protocol twice; name each once")


def _shard(s: str):
    try:
        i, n = (int(x) for x in s.split("/"))
        assert 0 <= i < n
        return i, n
    except (ValueError, AssertionError):
        raise argparse.ArgumentTypeError(f"--shard wants INDEX/COUNT with 0 <= INDEX < COUNT, got '{s}'") from None


def _devices(s: str):
    """'0,1,2,3' -> cuda:0..3; full device names (cuda:1, cpu) pass through."""
    out = [f"cuda:{d}" if d.isdigit() else d for d in (x.strip() for x in s.split(",")) if d]
    if not out:
        raise argparse.ArgumentTypeError(f"--devices wants a comma-separated list such as 0,1,2,3, got '{s}'")
    return out


def _without(argv: list, flags: tuple) -> list:
    """argv minus the given options (with their values, in '--opt v' or '--opt=v' form)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in flags:
            skip = True
        elif not any(a.startswith(f + "=") for f in flags):
            out.append(a)
    return out


def run_on_devices(args) -> int:
    """One worker process per device over disjoint (model, dataset) groups (the --shard order), so a multi-GPU
    node is used without a scheduler; the workers share --out and the caches, and cell claims keep them apart."""
    import subprocess
    base = _without(args.argv, ("--devices", "--device", "--shard"))
    n = len(args.devices)
    procs = [subprocess.Popen([sys.executable, "-m", "benchmark.cli", *base, "--device", d, "--shard", f"{i}/{n}"])
             for i, d in enumerate(args.devices)]
    try:
        codes = [p.wait() for p in procs]
    except Stopped as e:  # the workers stop the same way (each releases its claims), then so do we
        for p in procs:
            if p.poll() is None:
                p.send_signal(e.signum)
        for p in procs:
            p.wait()
        raise
    print(f"devices: {n} workers on {', '.join(args.devices)}; exit codes {codes}")
    return max(codes)


def cmd_run(args) -> int:
    from .config import load_datasets, load_zoo
    from .devices import resolve_device
    from .paths import writable_dir
    from .runner import RunOptions, run_grid
    from .validate import problems
    zoo, dsets = load_zoo(args.zoo), load_datasets(args.datasets)
    opts = RunOptions(out=args.out, cache_dir=args.cache_dir, device=args.device, force=args.force,
                      models=_csv(args.models), datasets=_csv(args.only_datasets), protocols=_csv(args.protocols),
                      seeds=args.seed, shard=args.shard)
    _check_run_flags(zoo, dsets, opts)
    found = problems(zoo, dsets, opts.models, opts.datasets)
    if found:
        raise ConfigError(found[0] + (f" (and {len(found) - 1} more problem(s); run bench validate)"
                                      if len(found) > 1 else ""))
    opts.device = resolve_device(args.device)
    writable_dir(opts.out, "--out")
    if opts.cache_dir:
        writable_dir(opts.cache_dir, "--cache-dir")
    from .launch.run import launch_grid, record_plan
    if args.launcher != "none":
        if getattr(args, "devices", None):
            raise ConfigError("--devices runs workers on this node; with --launcher give each task its GPUs "
                              "with --gpus-per-task instead")
        return launch_grid(args, zoo, dsets, opts)
    if getattr(args, "devices", None):
        return run_on_devices(args)
    record_plan(zoo, dsets, opts)
    s = run_grid(zoo, dsets, opts)
    busy = f", {len(s.busy)} claimed by another run" if s.busy else ""
    print(f"done: {s.ok} computed, {s.skipped} already done{busy}, {len(s.errors)} failed, "
          f"{s.not_applicable} not applicable; features: {s.features_computed} extracted, "
          f"{s.features_cached} from cache; records in {opts.out}")
    for cell, msg in s.errors:
        print(f"  failed: {cell.model} × {cell.dataset} × {cell.protocol} (seed {cell.seed}): {msg}", file=sys.stderr)
    return 1 if s.errors else 0


def cmd_status(args) -> int:
    from .launch.run import cmd_status as status
    return status(args)


def cmd_validate(args) -> int:
    from .config import load_datasets, load_zoo
    from .validate import problems, warnings
    zoo = load_zoo(args.zoo) if args.zoo else None
    dsets = load_datasets(args.datasets) if args.datasets else None
    found = problems(zoo, dsets)
    for p in found:
        print(f"bench: error: {p}", file=sys.stderr)
    if found:
        return 2
    for w in warnings(zoo):  # things that fail a cell, not the config: reported, not fatal
        print(f"warning: {w}", file=sys.stderr)
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
    if args.zoo:
        _ls_layers(args)
    return 0


def _ls_layers(args) -> None:
    """The layers each zoo model exposes to `layers:` (name, index, pooled width), read from its architecture."""
    from .config import load_zoo
    from .layer_plan import build_table
    zoo = load_zoo(args.zoo)
    wanted = _csv(args.models)
    if wanted:
        problems = [w for w in wanted if w not in {m.name for m in zoo.models}]
        if problems:
            from .errors import unknown_name
            raise unknown_name("model", problems[0], [m.name for m in zoo.models], "--models")
    for m in zoo.models:
        if wanted and m.name not in wanted:
            continue
        try:
            table = build_table(m, args.resolution)
        except Exception as e:  # noqa: BLE001 - one model that cannot be built is reported, the others listed
            print(f"layers of {m.name}: unavailable ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
            continue
        print(f"layers of {m.name} (index: name [dim]; 'last' is the pooled penultimate output):")
        print("  " + ", ".join(f"{t.index}: {t.name} [{t.dim}]" for t in table))


def cmd_report(args) -> int:
    from .report.cli import report
    return report(args)


def cmd_rank(args) -> int:
    from .report.rank import rank
    return rank(args)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="bench", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="compute every (model, dataset, protocol, seed) cell that lacks a valid record")
    r.add_argument("--zoo", default="model_zoo.yaml")
    r.add_argument("--datasets", default="datasets.yaml")
    r.add_argument("--out", default="results")
    r.add_argument("--cache-dir", default=None, help="feature cache (default: OUT/.cache)")
    r.add_argument("--models", help="comma-separated model names")
    r.add_argument("--only-datasets", "--dataset", dest="only_datasets", help="comma-separated dataset names")
    r.add_argument("--protocols", help="comma-separated protocols (default: settings.protocols)")
    r.add_argument("--seed", type=_seeds, help="comma-separated seeds (default: settings.seeds)")
    r.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    r.add_argument("--force", action="store_true", help="recompute cells that already have ok records")
    r.add_argument("--shard", type=_shard, default=(0, 1), help="INDEX/COUNT: this worker's share (e.g. SLURM)")
    r.add_argument("--devices", type=_devices, default=None,
                   help="one worker per device over disjoint groups, e.g. 0,1,2,3 (GPUs) or cuda:0,cuda:1")
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

    ls = sub.add_parser("ls", help="list model sources, dataset sources, proxies and protocols; with --zoo, the "
                                   "layers each model exposes")
    ls.add_argument("--zoo", default=None, help="also list the layers (name, index, dim) of this zoo's models")
    ls.add_argument("--models", default=None, help="comma-separated model names (with --zoo)")
    ls.add_argument("--resolution", type=int, default=None, help="input size for the models (with --zoo)")
    ls.set_defaults(fn=cmd_ls)

    from .report.args import add_rank_args, add_report_args
    rep = sub.add_parser("report", help="correlation tables and figures from records (or a published table)")
    add_report_args(rep)
    rep.set_defaults(fn=cmd_report)

    rk = sub.add_parser("rank", help="rank a zoo for a new dataset with the cheap proxies and recommend a model "
                                     "(records under --out, default ./bench_rank)")
    add_rank_args(rk)
    rk.set_defaults(fn=cmd_rank)

    from .select import add_select_args, cmd_select
    sel = sub.add_parser("select", help="budgeted selection: rank by the best proxy, fine-tune the top until the "
                                        "budget is spent (--simulate: replay on finished records)")
    add_select_args(sel)
    sel.set_defaults(fn=cmd_select)
    return ap


def main(argv=None) -> int:
    previous = _install_stop_handlers()
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # --help (0) or a usage error (2, its one line already printed)
            return e.code if isinstance(e.code, int) else 2
        args.argv = list(sys.argv[1:] if argv is None else argv)
        return args.fn(args)
    except ConfigError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except DiskFull as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Stopped) else signal.SIGINT
        what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted (SIGINT)"
        print(f"bench: {what}; claims released, finished cells are saved; run again to resume", file=sys.stderr)
        return 128 + int(signum)
    finally:
        for s, h in previous.items():  # a caller's own handlers (tests, notebooks) come back
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
