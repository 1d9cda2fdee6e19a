"""`bench rank`: rank a zoo for a new domain with the cheap proxies only, reusing cached features."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import ConfigError
from .load import load_records, seed_summary
from .pool import add_pool_scores
from .tables import to_markdown


# The cheap frozen proxies, then the analytic estimators (train features only; leep/nce need a source classifier).
# nleep is left out: its Gaussian mixture (5 components per class, full covariances) costs hours at 50k samples.
DEFAULT_PROXIES = "linear,knn,logme,hscore,reg_hscore,transrate,leep,nce,sfda,parc,gbc,ncti,etran"


def add_rank_args(ap):
    ap.add_argument("--zoo", default="model_zoo.yaml")
    ap.add_argument("--dataset", required=True, help="a datasets.yaml entry name, or an ImageFolder path")
    ap.add_argument("--datasets", default=None, help="datasets YAML holding the entry (and its settings)")
    ap.add_argument("--proxy", default=DEFAULT_PROXIES, help="comma-separated proxies; the first one orders the table")
    ap.add_argument("--resolution", type=int, default=None, help="input resolution for a folder dataset")
    ap.add_argument("--results", default="results", help="records directory (shared with bench run)")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--device", default=None)


def _dataset_config(args):
    from ..config import DatasetEntry, DatasetsConfig, Settings, load_datasets
    if args.datasets:
        cfg = load_datasets(args.datasets)
        if any(d.name == args.dataset for d in cfg.datasets):
            return cfg, args.dataset
    path = Path(args.dataset).expanduser()
    if path.is_dir():
        entry = DatasetEntry(name=path.name, folder=str(path), resolution=args.resolution)
        return DatasetsConfig("<bench rank>", [entry], Settings(), {}), entry.name
    raise ConfigError(f"dataset '{args.dataset}' is neither an entry of {args.datasets or '(no --datasets given)'} "
                      f"nor a folder with train/; pass --datasets or an ImageFolder path")


def rank(args) -> int:
    from ..cli import _cuda
    from ..config import load_zoo
    from ..proxies import PROXIES
    from ..runner import RunOptions, run_grid
    from ..validate import problems
    zoo = load_zoo(args.zoo)
    dsets, name = _dataset_config(args)
    proxies = [p.strip() for p in args.proxy.split(",") if p.strip()]
    for p in proxies:
        PROXIES.get(p, "bench rank --proxy")
    found = problems(zoo, dsets, datasets=[name])
    if found:
        raise ConfigError(found[0])
    opts = RunOptions(out=args.results, device=args.device or ("cuda" if _cuda() else "cpu"), datasets=[name],
                      protocols=proxies)
    s = run_grid(zoo, dsets, opts)
    long, _ = load_records(args.results)
    mean = add_pool_scores(seed_summary(long[long.dataset == name]))
    table = pd.DataFrame({"model": [m.name for m in zoo.models]}).set_index("model")
    for p in proxies:
        meta = PROXIES.get(p)
        col = mean[(mean.protocol == p) & (mean.metric == meta.primary)].set_index("model")["mean"]
        table[f"{p}.{meta.primary}"] = col
    target = dsets.settings.target
    ft = mean[(mean.protocol == target) & (mean.metric == "top1")].set_index("model")["mean"]
    if len(ft):
        table[f"{target}.top1 (recorded)"] = ft
    first = PROXIES.get(proxies[0])
    key = f"{proxies[0]}.{first.primary}"
    table = table.sort_values(key, ascending=not first.higher_is_better, na_position="last")
    table = table.reset_index()
    table.insert(0, "rank", range(1, len(table) + 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"rank_{name}.csv"
    table.to_csv(path, index=False)
    print(f"Ranking of {len(table)} models on '{name}' by {key} "
          f"({'higher' if first.higher_is_better else 'lower'} is better; {s.ok} cells computed, "
          f"{s.skipped} reused):")
    print(to_markdown(table, ".2f"))
    print(f"wrote {path}")
    if s.errors:
        print(f"{len(s.errors)} cell(s) failed; see the error records under {args.results}")
    return 1 if s.errors else 0
