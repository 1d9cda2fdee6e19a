import numpy as np
import pytest
import scipy.linalg
import scipy.special
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from benchmark.errors import CellError
from benchmark.proxies import PROXIES, get_proxy
from benchmark.proxies.knn import cosine_topk, knn_predict
from benchmark.proxies.linear import default_wds, fit_logreg, predict

from conftest import clusters


def digits_split():
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    return x[perm[:1200]], y[perm[:1200]], x[perm[1200:]], y[perm[1200:]]


def test_registry_lists_proxies_with_direction():
    assert {"linear", "knn", "nc1", "cdnv", "numerical_rank"} <= set(PROXIES.names())
    assert get_proxy("linear").higher_is_better and not get_proxy("nc1").higher_is_better
    with pytest.raises(Exception, match="Did you mean linear"):
        get_proxy("lineer")


@pytest.mark.parametrize("wd", [1e-2, 1.0, 100.0])
def test_logreg_matches_sklearn_same_regularisation(wd):
    xtr, ytr, xte, yte = digits_split()
    params = fit_logreg(xtr.double(), ytr, 10, wd, tol=1e-8)
    ours = (predict(params, xte.double()) == yte).double().mean().item() * 100
    sk = LogisticRegression(C=1.0 / wd, max_iter=5000, tol=1e-8).fit(xtr.double().numpy(), ytr.numpy())
    theirs = sk.score(xte.double().numpy(), yte.numpy()) * 100
    assert abs(ours - theirs) <= 0.5

    # Same objective (sum of CE + wd/2 ||W||^2): our minimum is no worse than sklearn's.
    def objective(W, b):
        logits = xtr.double().numpy() @ W + b
        logp = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
        return -logp[np.arange(len(ytr)), ytr.numpy()].sum() + 0.5 * wd * (W ** 2).sum()
    ours_obj = objective(params[0].T.numpy(), params[1].numpy())
    sk_obj = objective(sk.coef_.T, sk.intercept_)
    assert ours_obj <= sk_obj * (1 + 1e-6) + 1e-6


def test_linear_sweep_selects_on_validation_and_reports_test():
    xtr, ytr, xte, yte = digits_split()
    out = get_proxy("linear")(xtr[:900], ytr[:900], xte, yte, val_x=xtr[900:], val_y=ytr[900:], n_wd=9)
    assert out["n_wd"] == 9 and out["wd"] in default_wds(9)
    assert out["top1"] > 90 and 0 < out["mean_per_class"] <= 100


def test_linear_separable_clusters_reach_100():
    x, y = clusters(n_per_class=30, sep=20)
    xt, yt = clusters(n_per_class=10, sep=20, seed=0)
    out = get_proxy("linear")(x, y, xt, yt, n_wd=5)
    assert out["top1"] == 100.0 and out["mean_per_class"] == 100.0


def test_knn_neighbours_match_sklearn_and_chunks_do_not_matter():
    xtr, ytr, xte, yte = digits_split()
    _, idx = cosine_topk(xtr, xte, 20, chunk=37)
    nn = KNeighborsClassifier(n_neighbors=20, metric="cosine", algorithm="brute").fit(xtr.numpy(), ytr.numpy())
    sk_idx = nn.kneighbors(xte.numpy(), return_distance=False)
    same = np.mean([set(a) == set(b) for a, b in zip(idx.numpy(), sk_idx)])
    assert same > 0.99  # exact ties in distance may order differently
    assert torch.equal(knn_predict(xtr, ytr, xte, chunk=37), knn_predict(xtr, ytr, xte, chunk=4096))


def test_knn_matches_direct_weighted_vote():
    xtr, ytr, xte, yte = digits_split()
    xte, yte = xte[:50], yte[:50]
    a = torch.nn.functional.normalize(xtr, dim=1)
    b = torch.nn.functional.normalize(xte, dim=1)
    expected = []
    for q in b:  # the textbook loop
        sim = a @ q
        top = torch.argsort(sim, descending=True)[:20]
        votes = torch.zeros(10)
        for j in top:
            votes[ytr[j]] += torch.exp(sim[j] / 0.07)
        expected.append(int(votes.argmax()))
    out = get_proxy("knn")(xtr, ytr, xte, yte)
    assert out["top1"] == pytest.approx(100 * np.mean(np.array(expected) == yte.numpy()))
    assert out["k"] == 20 and out["temperature"] == 0.07


def nc1_direct(x, y, weighted_mean=False):
    x, y = x.double().numpy(), y.numpy()
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(0) for c in classes])
    mu_g = x.mean(0) if weighted_mean else means.mean(0)  # Papyan et al.'s global mean / mean of class means
    centred = x - means[np.searchsorted(classes, y)]
    sw = centred.T @ centred / len(x)
    sb = (means - mu_g).T @ (means - mu_g) / len(classes)
    return np.trace(sw @ scipy.linalg.pinv(sb)) / len(classes)


@pytest.mark.parametrize("d,k", [(8, 3), (200, 5), (50, 10)])
def test_nc1_matches_scipy_pinv(d, k):
    x, y = clusters(n_per_class=30, k=k, d=d, spread=2.0, sep=3.0, seed=d)
    assert get_proxy("nc1")(x, y)["nc1"] == pytest.approx(nc1_direct(x, y), rel=1e-6)


def test_nc1_weighted_global_mean_option():
    x, y = imbalanced([60, 10, 30], d=12, seed=5)
    weighted = get_proxy("nc1")(x, y, weighted_mean=True)["nc1"]
    assert weighted == pytest.approx(nc1_direct(x, y, weighted_mean=True), rel=1e-9)
    assert abs(weighted - get_proxy("nc1")(x, y)["nc1"]) > 1e-3 * weighted  # imbalanced: the centres differ


def test_tighter_clusters_have_lower_collapse_measures():
    loose = clusters(spread=3.0)
    tight = clusters(spread=0.5)
    for name in ("nc1", "cdnv"):
        assert get_proxy(name)(*tight)[name] < get_proxy(name)(*loose)[name]


def test_cdnv_matches_pairwise_formula():
    x, y = clusters(k=3, spread=2.0)
    xs = x.double().numpy()
    mus = [xs[y.numpy() == c].mean(0) for c in range(3)]
    var = [((xs[y.numpy() == c] - mus[c]) ** 2).sum(1).mean() for c in range(3)]
    pairs = [(var[a] + var[b]) / (2 * np.sum((mus[a] - mus[b]) ** 2)) for a in range(3) for b in range(a + 1, 3)]
    assert get_proxy("cdnv")(x, y)["cdnv"] == pytest.approx(np.mean(pairs), rel=1e-9)


def imbalanced(counts, d, seed):
    x, y = clusters(n_per_class=max(counts), k=len(counts), d=d, spread=1.5, sep=2.0, seed=seed)
    keep = torch.cat([torch.nonzero(y == c).flatten()[:n] for c, n in enumerate(counts)])
    return x[keep], y[keep]


def svd_stable_rank(h):
    s = np.linalg.svd(h, compute_uv=False)
    return (s ** 2).sum() / s[0] ** 2


@pytest.mark.parametrize("centered", [False, True])
def test_numerical_rank_equals_direct_svd(centered):
    x, y = imbalanced([40, 25, 60], d=30, seed=3)
    xs, ys = x.double().numpy(), y.numpy()
    expected = []
    for c in range(3):
        h = xs[ys == c]
        expected.append(svd_stable_rank(h - h.mean(0) if centered else h))  # Li et al.: H_k uncentred
    out = get_proxy("numerical_rank")(x, y, centered=centered)["numerical_rank"]
    assert out == pytest.approx(np.mean(expected), rel=1e-10)


def test_numerical_rank_tends_to_one_under_collapse():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(3).repeat_interleave(50)
    means = 5 * torch.randn(3, 20, generator=g)
    noise = torch.randn(150, 20, generator=g)
    ranks = [get_proxy("numerical_rank")(means[y] + s * noise, y)["numerical_rank"] for s in (1.0, 0.1, 1e-4)]
    assert ranks[0] > ranks[1] > ranks[2] and ranks[2] == pytest.approx(1.0, abs=1e-6)
    # The centred variant measures the spread alone: it does not see the collapse.
    centred = get_proxy("numerical_rank")(means[y] + 1e-4 * noise, y, centered=True)["numerical_rank"]
    assert centred > 5


def test_bad_inputs_give_clear_errors():
    x, y = clusters(k=2)
    with pytest.raises(CellError, match="at least two classes"):
        get_proxy("nc1")(x, torch.zeros_like(y))
    y1 = y.clone()
    y1[0] = 7  # a class with a single sample
    with pytest.raises(CellError, match="class 7 has 1 sample"):
        get_proxy("nc1")(x, y1)
    bad = x.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(CellError, match="NaN/inf"):
        get_proxy("knn")(bad, y, x, y)


def test_numerical_rank_leaves_out_and_counts_all_zero_classes():
    """Dead features (a class mapped to exact zeros) have no rank: left out of the mean and counted."""
    x, y = clusters(n_per_class=12, k=3, d=8)
    full = get_proxy("numerical_rank")(x[y < 2], y[y < 2])["numerical_rank"]
    x = x.clone()
    x[y == 2] = 0
    out = get_proxy("numerical_rank")(x, y)
    assert out["zero_feature_classes"] == 1 and abs(out["numerical_rank"] - full) < 1e-12
