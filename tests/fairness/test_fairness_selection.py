"""Model selection (overall / worst-group / DTO as in MEDFAIR), the Pareto front and the summary statistics."""
import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
from fairness_helpers import fast_cfg, head

from cxrdistill.fairness import FAIR_METHODS
from cxrdistill.fairness.report import per_seed, summarize
from cxrdistill.fairness.selection import dto_distances, pareto_front, select_index


def test_dto_is_medfair_distance_to_the_utopia_point():
    aucs = np.array([[0.90, 0.70], [0.85, 0.80], [0.80, 0.82]])
    utopia = aucs.max(0)
    expect = np.sqrt((((aucs / utopia) - 1) ** 2).sum(1))  # MEDFAIR: columns / their max, distance to ones
    assert np.allclose(dto_distances(aucs), expect)
    assert select_index(aucs.mean(1), aucs.min(1), aucs, "dto") == 1
    assert select_index(aucs.mean(1), aucs.min(1), aucs, "auc") == 1  # 0.825 is the best mean
    assert select_index([0.8, 0.9], [0.7, 0.6], None, "worst") == 0
    assert select_index([0.8, 0.8, 0.7], [0, 0, 0], None, "auc") == 0  # ties: the earliest
    assert select_index([np.nan, 0.6], [0, 0], None, "auc") == 1
    # a group that cannot be scored for some candidate does not rank them
    assert np.allclose(dto_distances([[0.9, np.nan], [0.8, 0.7]]), [0.0, 1 - 0.8 / 0.9])


def test_pareto_front_high_auc_low_gap():
    pts = np.array([[0.80, 0.05], [0.85, 0.08], [0.82, 0.10], [0.78, 0.02], [0.85, 0.09]])
    assert pareto_front(pts).tolist() == [3, 0, 1]  # sorted by AUC; (0.82, 0.10) and (0.85, 0.09) dominated


@pytest.mark.parametrize("rule", ["auc", "worst", "dto"])
def test_method_restores_the_selected_epoch(rule, tiny, tmp_path):
    tr, va = tiny
    torch.manual_seed(1)
    m = FAIR_METHODS.create("erm", select=rule)
    res = m.fit(head(), tr, va, fast_cfg(epochs=4, lr=2e-2), run_dir=tmp_path)
    h = pd.DataFrame(res.history)
    if rule == "auc":
        best = int(h["val_auc"].idxmax())
    elif rule == "worst":
        best = int(h["val_worst_auc"].idxmax())
    else:
        best = int(np.argmin(dto_distances(h[["val_auc_g0", "val_auc_g1"]].to_numpy())))
    assert res.info["selected_epoch"] == best + 1
    # the returned weights are that epoch's: re-validating gives its recorded scores
    m2 = FAIR_METHODS.create("erm")
    m2.n_groups = 2
    res.model.eval()
    with torch.no_grad():
        r = m2.validate(res.model, [va.get_batch(torch.arange(len(va)))])
    assert r["val_auc"] == pytest.approx(h["val_auc"][best], abs=1e-9)
    kept = sorted(p.name for p in (tmp_path / "candidates").glob("*.safetensors"))
    assert f"epoch_{best + 1:04d}.safetensors" in kept and (rule == "dto" or len(kept) == 1)


def test_summary_mean_std_and_paired_ttest():
    rows = []
    rng = np.random.default_rng(0)
    for method, shift in (("erm", 0.0), ("fairdi", 0.03)):
        for seed in range(4):
            for task in ("a", "b"):
                base = 0.8 + 0.01 * seed + rng.normal(0, 0.005)
                for group, v in (("(overall)", base + shift), ("F", base + shift - 0.05), ("M", base + shift)):
                    rows.append(dict(seed=seed, method=method, labels="observed", task=task, group=group,
                                     metric="auc", value=v))
                for m, v in (("worst_group_auc", base + shift - 0.05), ("auc_gap", 0.05 - shift),
                             ("es_auc", base), ("psd", 0.025)):
                    rows.append(dict(seed=seed, method=method, labels="observed", task=task, group="(summary)",
                                     metric=m, value=v))
    ps = per_seed(pd.DataFrame(rows), "observed", ["F", "M"])
    table, js = summarize(ps)
    e, f = ps[ps.method == "erm"].sort_values("seed"), ps[ps.method == "fairdi"].sort_values("seed")
    assert js["fairdi"]["auc"] == pytest.approx(f["auc"].mean())
    assert js["fairdi"]["auc_std"] == pytest.approx(f["auc"].std(ddof=1))
    p = scipy.stats.ttest_rel(f["auc"], e["auc"]).pvalue
    assert js["fairdi"]["vs_erm"]["auc"]["p"] == pytest.approx(p)
    assert js["fairdi"]["vs_erm"]["auc"]["delta"] == pytest.approx(np.mean(f["auc"].to_numpy() - e["auc"].to_numpy()))
    assert set(js["erm"]["group_auc"]) == {"F", "M"} and "vs_erm" not in js["erm"]
