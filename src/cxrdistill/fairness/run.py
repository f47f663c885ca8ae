"""Seeds × methods → one tidy results table, the comparison table, ``fair.json`` and the Pareto plot.

Layout of ``OUT/``::

    fair_results.parquet      tidy: seed, method, labels, attribute, task, group, metric, value, n, n_pos
    fair_table.csv / .md      per method: mean ± std over seeds, Δ and paired-test p against ERM
    fair.json                 {method: {auc, worst_group_auc, auc_gap, es_auc, psd, group_auc, …, vs_erm}}
    fair_config.json          what was run (data, attribute, groups and counts, methods and parameters, notes)
    pareto.png                overall AUC vs AUC gap
    predictions/<method>_seed<s>.parquet   predictions table (image_id, attributes, y_T, p_T, ytrue_T)
    runs/<method>/seed<s>/    the trainer's run directories (checkpoints: a killed run resumes), result.json

A (method, seed) whose ``result.json`` matches the current data and settings is not trained again.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from cxrdistill.errors import CxrError
from cxrdistill.evaluation.probes import probe_attribute
from cxrdistill.fairness.base import FAIR_METHODS
from cxrdistill.fairness.benchmark import (Repetition, precheck_report, prechecks, summarize as summarize_repetitions,
                                           with_group_input)
from cxrdistill.fairness.datasets import dataset_groups, predict_logits, subset_dataset
from cxrdistill.fairness.metrics import tidy_rows
from cxrdistill.fairness.report import markdown_table, pareto_plot, per_seed, summarize
from cxrdistill.models.network import CxrNet
from cxrdistill.storage.checkpoint import save_weights
from cxrdistill.storage.io import atomic_open, clean_json, write_json, write_parquet, write_table
from cxrdistill.training.run_dir import open_run
from cxrdistill.training.trainer import TrainConfig

HEADS = ("linear", "mlp")


class FairRunConfig(BaseModel):
    """Settings of a fairness comparison (YAML-configurable; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    methods: list[str] = Field(default_factory=lambda: ["erm", "fairdi"])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    select: Literal["auc", "worst", "dto"] = "auc"
    method_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-method keyword arguments, e.g. fairdi: {lam: 0.9}")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields (epochs, lr, batch_size, …)")
    head: Literal["linear", "mlp"] = "mlp"
    hidden: int = Field(256, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    backbone: str = "resnet10t"
    baseline: str = "erm"
    prechecks: bool = Field(False, description="also train the pre-check models (a minority-only ERM, ERM given "
                            "the group) and probe the attribute: P1/P2/P3 in fair.json and fair_table.md")


def make_head(kind: str, in_dim: int, n_out: int, hidden: int = 256, dropout: float = 0.1):
    """A head on frozen embeddings: ``linear`` or ``mlp`` (D → hidden → K with BatchNorm, ReLU, dropout)."""
    from torch import nn

    if kind == "linear":
        return nn.Linear(in_dim, n_out)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout),
                             nn.Linear(hidden, n_out))
    raise CxrError(f"unknown head {kind!r}; use one of: {', '.join(HEADS)}")


def model_factory(data, cfg: FairRunConfig) -> Callable[[], Any]:
    """The model every method starts from (same architecture and, per seed, the same initial weights)."""
    k = len(data.tasks)
    if data.kind == "embeddings":
        return lambda: make_head(cfg.head, data.input_shape[0], k, cfg.hidden, cfg.dropout)

    return lambda: CxrNet(cfg.backbone, in_chans=1, num_classes=k)


def predictions_table(data, probs: np.ndarray) -> pd.DataFrame:
    """The shared predictions-table format: image_id, attributes, y_T (label source), p_T, ytrue_T when known."""
    df = data.test_meta.drop(columns=["_group"]).copy()
    if data.attribute not in df.columns:
        df[data.attribute] = data.test_meta["_group"].to_numpy()
    for k, t in enumerate(data.tasks):
        df[f"y_{t}"] = data.y_eval[data.label_source][:, k]
        df[f"p_{t}"] = probs[:, k]
        if "true" in data.y_eval:
            df[f"ytrue_{t}"] = data.y_eval["true"][:, k]
    return df


def run_one(data, method: str, seed: int, cfg: FairRunConfig, out: Path, *, device: str = "auto",
            progress: bool = False, log: Callable[[str], None] = print) -> tuple[np.ndarray, dict[str, Any]]:
    """Train one (method, seed) (or reuse its finished result) → (test probabilities, result info)."""
    import torch

    params = cfg.method_params.get(method, {})
    tcfg = TrainConfig(**{"progress": progress, "device": device, **cfg.train, "seed": int(seed)})
    pred_path = out / "predictions" / f"{method}_seed{seed}.parquet"
    run = open_run(out / "runs" / method / f"seed{seed}", "fair",
                   {"method": method, "params": params, "train": tcfg.model_dump(exclude={"progress"}),
                    "select": cfg.select, "head": [cfg.head, cfg.hidden, cfg.dropout, cfg.backbone]},
                   {"data": data.fingerprint}, summary="result.json", on_change="restart", exclusive=True,
                   is_done=lambda info: pred_path.exists())
    if run.done is not None:
        log(f"[fair] {method} seed {seed}: done before, reusing {pred_path}")
        pdf = pd.read_parquet(pred_path)
        return pdf[[f"p_{t}" for t in data.tasks]].to_numpy(dtype=float), run.done
    rd = run.dir
    torch.manual_seed(int(seed))
    model = model_factory(data, cfg)()
    m = FAIR_METHODS.create(method, **{"select": cfg.select, **params})
    log(f"[fair] {method} seed {seed}: training")
    t0 = time.perf_counter()
    res = m.fit(model, data.train, data.val, tcfg, run_dir=rd, log=lambda s: None)
    seconds = time.perf_counter() - t0
    dev = next(res.model.parameters()).device
    logits = predict_logits(res.model, data.test, batch_size=tcfg.eval_batch_size or 256, device=dev)
    probs = torch.sigmoid(logits).numpy().astype(float)
    save_weights(res.model.state_dict(), rd / "final.safetensors", {"method": method, "seed": int(seed)})
    write_parquet(predictions_table(data, probs), pred_path)
    info = run.finish({"key": run.key, "method": method, "seed": int(seed), "seconds": seconds,
                       "epochs": len(res.history), "info": res.info})
    log(f"[fair] {method} seed {seed}: {seconds:.1f} s")
    return probs, info


def run_fair(data, cfg: FairRunConfig, out: str | Path, *, device: str = "auto", progress: bool = False,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every (seed, method) → the tidy table and the comparison files in ``out``. Returns {tidy, table, json}."""
    out = Path(out)
    for m in cfg.methods:
        FAIR_METHODS.get(m)  # unknown names fail before any training
    unknown = set(cfg.method_params) - set(FAIR_METHODS.names())
    if unknown:
        raise CxrError(f"method_params names unknown method(s) {sorted(unknown)}; methods: "
                       f"{', '.join(FAIR_METHODS.names())}")
    if not cfg.seeds:
        raise CxrError("no seeds given")
    rows, infos = [], []
    groups = data.test_meta["_group"].to_numpy(dtype=object)
    for seed in cfg.seeds:
        for method in cfg.methods:
            probs, info = run_one(data, method, seed, cfg, out, device=device, progress=progress, log=log)
            infos.append(info)
            for labels, y in data.y_eval.items():
                rows += tidy_rows(y, probs, groups, data.tasks, data.group_names, seed=int(seed), method=method,
                                  labels=labels, attribute=data.attribute)
    tidy = pd.DataFrame(rows, columns=["seed", "method", "labels", "attribute", "task", "group", "metric", "value",
                                       "n", "n_pos"])
    write_parquet(tidy, out / "fair_results.parquet")
    ps = per_seed(tidy, data.label_source, data.group_names)
    table, js = summarize(ps, cfg.baseline)
    write_table(table, out / "fair_table.csv")
    md = [markdown_table(table, data.group_names, cfg.baseline,
                         title=f"{data.label_source} labels, attribute {data.attribute}")]
    for labels in data.y_eval:
        if labels != data.label_source:
            ps2 = per_seed(tidy, labels, data.group_names)
            t2, js2 = summarize(ps2, cfg.baseline)
            md.append(markdown_table(t2, data.group_names, cfg.baseline, title=f"{labels} labels (evaluation only)"))
            for meth, v in js2.items():
                js.setdefault(meth, {})[f"{labels}_labels"] = v
    md.append(f"\nTasks: {', '.join(data.tasks)}. Per seed each metric is the mean over tasks; mean ± std over "
              f"seeds {', '.join(map(str, cfg.seeds))}. Test against {cfg.baseline}: {TEST_NOTE}. Model selection: "
              f"{cfg.select}.\n")
    if cfg.prechecks:
        pre = run_prechecks(data, cfg, out, device=device, log=log)
        js["_prechecks"] = pre

        md.insert(0, precheck_report(pre) + "\n")
    with atomic_open(out / "fair_table.md", encoding="utf-8") as fh:
        fh.write("\n".join(md))
    write_json(clean_json(js), out / "fair.json")
    pareto_plot(ps, out / "pareto.png", title=f"{data.attribute}: AUC vs gap ({len(cfg.seeds)} seeds)")
    write_json(clean_json({"attribute": data.attribute, "groups": data.group_names, "counts": data.counts,
                           "tasks": data.tasks, "label_source": data.label_source, "kind": data.kind,
                           "input_shape": list(data.input_shape), "notes": data.notes, "config": cfg.model_dump(),
                           "runs": infos}), out / "fair_config.json")
    return {"tidy": tidy, "per_seed": ps, "table": table, "json": js}


TEST_NOTE = "two-sided paired t-test across seeds (scipy.stats.ttest_rel)"


def run_prechecks(data, cfg: FairRunConfig, out: Path, *, device: str = "auto",
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """P1/P2/P3 (``fairness.benchmark``) on this comparison's data: per seed a minority-only ERM and ERM given the
    group, scored with ERM's predictions on the same test set; the attribute probe on the test embeddings."""
    import torch

    if data.kind != "embeddings":
        raise CxrError("pre-checks need an embeddings comparison (they train extra heads and probe the attribute)")
    g_tr, g_va = dataset_groups(data.train), dataset_groups(data.val)
    counts = np.bincount(g_tr, minlength=len(data.group_names))
    minority = int(np.argmin(counts))
    k = len(data.group_names)
    groups = data.test_meta["_group"].to_numpy(dtype=object)
    patients = (data.test_meta["patient_id"].to_numpy() if "patient_id" in data.test_meta.columns
                else np.arange(len(groups)))
    y_all = data.y_eval["true" if "true" in data.y_eval else data.label_source]
    reps = []
    for seed in cfg.seeds:
        def fit(train, val, test, in_dim):
            tcfg = TrainConfig(**{"progress": False, "device": device, **cfg.train, "seed": int(seed)})
            torch.manual_seed(int(seed))
            model = make_head(cfg.head, in_dim, len(data.tasks), cfg.hidden, cfg.dropout)
            # keyed like the compared runs: a changed setting starts over instead of resuming another run
            run = open_run(out / "prechecks" / f"seed{seed}" / f"m{in_dim}_{len(train)}", "fair-precheck",
                           {"train": tcfg.model_dump(), "select": cfg.select,
                            "head": [cfg.head, cfg.hidden, cfg.dropout]},
                           {"data": data.fingerprint}, reuse=False, on_change="restart", exclusive=True)
            res = FAIR_METHODS.create("erm", select=cfg.select).fit(model, train, val, tcfg, run_dir=run.dir,
                                                                    log=lambda s: None)
            return torch.sigmoid(predict_logits(res.model, test)).numpy()
        erm = pd.read_parquet(out / "predictions" / f"{cfg.baseline}_seed{seed}.parquet")
        p_erm = erm[[f"p_{t}" for t in data.tasks]].to_numpy(dtype=float)
        spec = fit(subset_dataset(data.train, np.flatnonzero(g_tr == minority)),
                   subset_dataset(data.val, np.flatnonzero(g_va == minority)), data.test, data.input_shape[0])
        withg = fit(with_group_input(data.train, k), with_group_input(data.val, k), with_group_input(data.test, k),
                    data.input_shape[0] + k)
        for t in range(len(data.tasks)):  # one repetition per (seed, task): the checks pool the tasks
            y = y_all[:, t]
            ok = np.isfinite(y)
            reps.append(Repetition(y=y[ok], groups=groups[ok], patients=patients[ok],
                                   scores={cfg.baseline: p_erm[ok, t], "specialist": spec[ok, t],
                                           "erm_with_group": withg[ok, t]}))
        log(f"[fair] pre-checks seed {seed}: done")
    summ = summarize_repetitions(reps, data.group_names, baseline=cfg.baseline, n_boot=500, between_reps=False)
    x_test = data.test.arrays["x"].numpy()
    probe = probe_attribute(x_test, pd.Series(groups), groups=patients, n_boot=0, repeats=1,
                            name=data.attribute)["auc"]
    pre = prechecks(summ, data.group_names[minority], [probe])
    return {"minority": data.group_names[minority], **pre}
