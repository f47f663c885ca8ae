"""The pretraining study grid (Awatramani et al., Figure 6): ``init × label policy × auxiliary heads × seeds`` fine-tuned on a
downstream cohort, after in-domain pretraining (``supervised`` / ``barlow``) on a *separate* pretraining cohort.

One call, :func:`run_grid`, writes into ``out_dir``:

* ``pretrain/<method>.safetensors`` (+ ``.run/``) — the in-domain backbones, pretrained once (and the synthetic
  pretraining cohort, ``pretrain/synthetic-*.parquet|npy``, when none is given);
* ``runs/<init>__<policy>__aux<0|1>__s<seed>/`` — one fine-tuning run each (``history.json``, predictions, metrics);
* ``results.parquet`` — tidy: every run's per-task metrics (``metrics_table``: AUC, AUC-PR, … with label-stratified
  bootstrap CIs) with the run's ``init, label_policy, aux, seed``;
* ``table.parquet`` / ``table.csv`` — tidy summary, one row per condition × task (and ``mean``): AUC averaged over
  seeds with a 95% percentile CI from a *paired* bootstrap of the test images (the same resampled images for every
  seed, task and condition), and, for each condition, the difference of mean AUC to the reference init (the first of
  ``inits``) with its CI and a two-sided bootstrap p-value;
* ``table.md`` — the same as one readable table (``AUC [CI]`` per task);
* ``loss_curves_<policy>_aux<0|1>.png`` (train and validation loss per epoch of every init) and ``auc.png``;
* ``grid.json`` — configuration, pretraining summaries, run list, timings.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from cxrdistill.errors import InputError
from cxrdistill.evaluation import bootstrap as bs
from cxrdistill.pretraining.config import GridConfig, coerce_config
from cxrdistill.pretraining.data import image_size, resolve_images
from cxrdistill.pretraining.finetune import finetune
from cxrdistill.pretraining.methods import PRETRAINERS
from cxrdistill.pretraining.pretrain import pretrain
from cxrdistill.storage.io import atomic_open, atomic_path, clean_json, read_table, write_json, write_table
from cxrdistill.synth import render_batch
from cxrdistill.training.inputs import default_tasks

INIT_LABELS = {"random": "random", "imagenet": "ImageNet", "supervised": "in-domain supervised",
               "supervised_meta": "in-domain supervised", "barlow": "Barlow Twins"}


def init_label(init: str) -> str:
    """A readable row name: ``imagenet:/x/w.safetensors`` → ``ImageNet (w.safetensors)``."""
    name, sep, arg = str(init).partition(":")
    if not sep:
        return INIT_LABELS.get(init, init)
    return f"{INIT_LABELS.get(name, name)} ({Path(arg).name})"


def slug(value: Any) -> str:
    """A short file-name-safe name for an init or policy (with a hash when it had to be shortened)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    s = re.sub(r"[^A-Za-z0-9]+", "-", Path(text).name if ":" in text and "/" in text else text).strip("-")
    if s == text and len(s) <= 40:
        return s
    return f"{s[:32]}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def policy_name(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def synthetic_pretraining_cohort(n: int, size: int, seed: int, scenario: str = "none",
                                 val_fraction: float = 0.1) -> tuple[pd.DataFrame, np.ndarray]:
    """A synthetic pretraining cohort rendered in memory, split by patient into train / val."""
    images, df = render_batch(int(n), int(size), seed=int(seed), scenario=scenario)
    patients = df["patient_id"].astype(str).unique()
    rng = np.random.default_rng(seed)
    val_p = set(rng.choice(patients, size=max(1, int(round(val_fraction * len(patients)))), replace=False))
    df = df.copy()
    df["split"] = np.where(df["patient_id"].astype(str).isin(val_p), "val", "train")
    df["dataset"] = "synthetic-pretraining"
    return df, images


def cached_synthetic_cohort(d: Path, n: int, size: int, seed: int, scenario: str = "none"):
    """:func:`synthetic_pretraining_cohort`, stored once in ``d`` (table + uint8 images) so that a re-run of the
    grid does not render it again."""
    key = hashlib.sha1(json.dumps([int(n), int(size), int(seed), str(scenario)]).encode()).hexdigest()[:12]
    table, pixels = d / f"synthetic-{key}.parquet", d / f"synthetic-{key}.npy"
    if table.exists() and pixels.exists():
        return read_table(table), np.load(pixels, allow_pickle=False)
    df, images = synthetic_pretraining_cohort(n, size, seed, scenario)
    with atomic_path(pixels) as p:
        with open(p, "wb") as fh:
            np.save(fh, images, allow_pickle=False)
    write_table(df, table)
    return df, images


def _resolve_init(init: str, ckpts: dict[str, Path], cfg: GridConfig) -> str:
    if init in ckpts:
        return f"checkpoint:{ckpts[init]}"
    if init == "imagenet" and cfg.imagenet_weights:
        return f"imagenet:{cfg.imagenet_weights}"
    return init


def run_grid(cfg: GridConfig | dict | Any, cohort_df: pd.DataFrame, images: Any, out_dir: str | Path, *,
             pretrain_df: pd.DataFrame | None = None, pretrain_images: Any = None, tasks: list[str] | None = None,
             log: Callable[[str], None] | None = None, fresh: bool = False,
             cache_dir: str | Path | None = None) -> pd.DataFrame:
    """Run the grid and return the tidy summary table (also written to ``out_dir/table.parquet``).

    ``cfg``: a :class:`GridConfig`, a dict of its keys, or the study's pretraining section (same keys).
    ``cohort_df``: the downstream cohort table with a ``split`` column (``train`` for fine-tuning, ``val`` for epoch
    selection, ``test`` — or ``cfg.finetune.eval_split`` — for scoring) and label columns (plus ``true_*`` on
    synthetic cohorts, scored too). ``images``: an ``ImageCache`` holding the cohort's images, or a uint8 array
    (N, H, W) in the table's row order. ``pretrain_df`` / ``pretrain_images``: the pretraining cohort in the same form
    (its ``train``/``val`` splits are used; every row when it has none); when omitted, a synthetic one of
    ``cfg.pretrain_n`` images is rendered (seed ``cfg.pretrain_seed``). ``tasks`` overrides ``cfg.tasks``.
    Finished runs and pretrainings are reused on a re-run with the same settings (``fresh=True`` redoes them).
    """
    t_start = time.perf_counter()
    cfg = coerce_config(GridConfig, cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = log or (lambda s: None)
    df = cohort_df.reset_index(drop=True)
    pixels, _ = resolve_images(images, df)
    size = image_size(pixels)
    tasks = default_tasks(df, tasks or cfg.tasks)
    backbone = cfg.backbone or cfg.finetune.backbone

    # ---- in-domain pretraining, once per method
    methods = [i for i in dict.fromkeys(cfg.inits) if i in PRETRAINERS]
    ckpts: dict[str, Path] = {}
    pre_summaries: dict[str, Any] = {}
    if methods:
        if pretrain_df is None:
            log(f"pretraining cohort: {cfg.pretrain_n} synthetic images at {size}px (seed {cfg.pretrain_seed})")
            pretrain_df, pretrain_images = cached_synthetic_cohort(out / "pretrain", cfg.pretrain_n, size,
                                                                   cfg.pretrain_seed, cfg.pretrain_scenario)
        elif pretrain_images is None:
            raise InputError("a pretraining cohort needs its images", hint="pass pretrain_images")
        for m in methods:
            train = cfg.pretrain.train.model_copy(update={"epochs": cfg.pretrain_epochs or cfg.pretrain.train.epochs})
            upd: dict[str, Any] = {"method": m, "backbone": backbone, "train": train}
            if m == "barlow":
                upd["multi_instance"] = cfg.barlow_multi_instance
            pcfg = cfg.pretrain.model_copy(update=upd)
            ck = out / "pretrain" / f"{m}.safetensors"
            t0 = time.perf_counter()
            s = pretrain(pcfg, pretrain_df, pretrain_images, ck, fresh=fresh, cache_dir=cache_dir,
                         restart_changed=True)
            s = {k: v for k, v in s.items() if k != "history"} | {"seconds": time.perf_counter() - t0,
                                                                  "last_epoch": (s.get("history") or [None])[-1]}
            pre_summaries[m] = s
            ckpts[m] = ck
            log(f"pretrained {m}: {ck} ({s['seconds']:.1f}s)")

    # ---- fine-tuning runs
    runs: list[dict[str, Any]] = []
    metric_parts: list[pd.DataFrame] = []
    preds: dict[str, pd.DataFrame] = {}
    histories: dict[str, list[dict]] = {}
    for init in cfg.inits:
        spec = _resolve_init(init, ckpts, cfg)
        for policy in cfg.label_policies:
            for aux in cfg.aux:
                for seed in cfg.seeds:
                    name = f"{slug(init)}__{slug(policy)}__aux{int(aux)}__s{seed}"
                    train = cfg.finetune.train.model_copy(update={
                        "seed": int(seed), "epochs": cfg.finetune_epochs or cfg.finetune.train.epochs})
                    fcfg = cfg.finetune.model_copy(update={"init": spec, "backbone": backbone, "label_policy": policy,
                                                           "aux": bool(aux), "tasks": tasks, "train": train})
                    t0 = time.perf_counter()
                    s = finetune(fcfg, df, images, out / "runs" / name, fresh=fresh, cache_dir=cache_dir,
                                 plot=False, restart_changed=True)
                    secs = time.perf_counter() - t0
                    key = {"init": init, "label_policy": policy_name(policy), "aux": bool(aux), "seed": int(seed),
                           "run": name}
                    m = pd.read_csv(s["metrics"])
                    for k, v in reversed(key.items()):
                        m.insert(0, k, v)
                    metric_parts.append(m)
                    preds[name] = pd.read_parquet(s["predictions"])
                    histories[name] = s["history"]
                    runs.append({**key, "init_spec": spec, "seconds": secs, "mean_auc": s["observed"]["mean_auc"],
                                 "mean_auc_true": (s.get("true") or {}).get("mean_auc"), "dir": str(out / "runs" / name)})
                    log(f"{name}: mean AUC {s['observed']['mean_auc']} ({secs:.1f}s)")

    results = pd.concat(metric_parts, ignore_index=True)
    write_table(results, out / "results.parquet")
    table = summarize(runs, preds, tasks, n_boot=cfg.n_boot, seed=cfg.finetune.train.seed, reference=cfg.inits[0])
    write_table(table, out / "table.parquet")
    write_table(table, out / "table.csv")
    with atomic_open(out / "table.md", "w", encoding="utf-8") as fh:
        fh.write(table_markdown(table))
    if cfg.plots:
        _plots(cfg, runs, histories, table, out)
    write_json(clean_json({"config": json.loads(cfg.model_dump_json()), "tasks": tasks, "image_size": size,
                           "backbone": backbone, "pretraining": pre_summaries, "runs": runs,
                           "seconds": time.perf_counter() - t_start,
                           "files": {"results": "results.parquet", "table": "table.parquet", "markdown": "table.md"}}),
               out / "grid.json")
    return table


# ------------------------------------------------------------------------------------------------ summary table
def _paired_counts(n: int, n_boot: int, seed: int):
    """Chunks of bootstrap counts (b, n) over the evaluation images, in their row order (one stratum: images are
    resampled jointly for every task, seed and condition, so differences between conditions are paired)."""
    return bs.stratified_counts(np.zeros(n, dtype=np.int8), n_boot, bs.derive_rng(seed, "pretraining-grid"))


def summarize(runs: list[dict], preds: dict[str, pd.DataFrame], tasks: list[str], n_boot: int = 1000, seed: int = 0,
              reference: str | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """Tidy table: per condition (init, label_policy, aux) × labels (observed / true) × task (+ ``mean``): AUC
    averaged over seeds, its paired-bootstrap CI, and for the ``mean`` rows the difference to ``reference`` init."""
    first = preds[runs[0]["run"]]
    ids = first["image_id"].astype(str).to_numpy()
    for r in runs[1:]:
        if not np.array_equal(preds[r["run"]]["image_id"].astype(str).to_numpy(), ids):
            raise ValueError(f"run {r['run']} scored other images than {runs[0]['run']}")
    kinds = [(k, p) for k, p in (("observed", "y_"), ("true", "ytrue_")) if f"{p}{tasks[0]}" in first.columns]
    conds: dict[tuple, list[str]] = {}
    for r in runs:
        conds.setdefault((r["init"], r["label_policy"], r["aux"]), []).append(r["run"])
    n = len(ids)
    rows: list[dict[str, Any]] = []
    for kind, prefix in kinds:
        Y = {t: pd.to_numeric(first[f"{prefix}{t}"], errors="coerce").to_numpy(dtype=float) for t in tasks}
        ranked: dict[tuple[str, str], Any] = {}
        point: dict[tuple[str, str], float] = {}
        for names in conds.values():
            for run in names:
                for t in tasks:
                    ok = np.isfinite(Y[t])
                    y = Y[t][ok].astype(int)
                    if y.size == 0 or y.min() == y.max():
                        continue
                    r = bs.Ranked.from_scores(y, preds[run][f"p_{t}"].to_numpy(dtype=float)[ok])
                    ranked[(run, t)] = (r, np.flatnonzero(ok))
                    point[(run, t)] = float(bs.auc_from_curves(r.curves())[0])
        reps: dict[tuple[str, str], list[np.ndarray]] = {k: [] for k in ranked}
        if n_boot > 0:
            for W in _paired_counts(n, n_boot, seed):
                for k, (r, ok) in ranked.items():
                    reps[k].append(bs.auc_from_curves(r.curves(W[:, ok][:, r.order])))
        rep = {k: (np.concatenate(v) if v else np.empty(0)) for k, v in reps.items()}
        cond_mean: dict[tuple, tuple[float, np.ndarray]] = {}
        for (init, pol, aux), names in conds.items():
            per_task_pt, per_task_rep = [], []
            for t in tasks:
                have = [run for run in names if (run, t) in point]
                base = {"init": init, "init_label": init_label(init), "label_policy": pol, "aux": aux,
                        "labels": kind, "task": t, "n_seeds": len(have), "n": int(np.isfinite(Y[t]).sum()),
                        "n_pos": int(np.nansum(Y[t] == 1))}
                if not have:
                    rows.append({**base, "auc": np.nan, "ci_low": np.nan, "ci_high": np.nan})
                    continue
                pt = float(np.mean([point[(run, t)] for run in have]))
                rp = np.mean([rep[(run, t)] for run in have], axis=0) if n_boot > 0 else np.empty(0)
                lo, hi = bs.percentile_ci(rp, alpha) if rp.size else (np.nan, np.nan)
                rows.append({**base, "auc": pt, "ci_low": float(lo), "ci_high": float(hi)})
                per_task_pt.append(pt)
                per_task_rep.append(rp)
            if per_task_pt:
                pt = float(np.mean(per_task_pt))
                rp = np.nanmean(np.stack(per_task_rep), axis=0) if n_boot > 0 else np.empty(0)
                lo, hi = bs.percentile_ci(rp, alpha) if rp.size else (np.nan, np.nan)
            else:
                pt, rp, lo, hi = np.nan, np.empty(0), np.nan, np.nan
            cond_mean[(init, pol, aux)] = (pt, rp)
            rows.append({"init": init, "init_label": init_label(init), "label_policy": pol, "aux": aux,
                         "labels": kind, "task": "mean", "n_seeds": len(names), "n": n, "n_pos": None,
                         "auc": pt, "ci_low": float(lo), "ci_high": float(hi)})
        if reference is not None:
            for row in rows:
                if row["labels"] != kind or row["task"] != "mean" or row["init"] == reference:
                    continue
                ref = cond_mean.get((reference, row["label_policy"], row["aux"]))
                if ref is None:
                    continue
                pt, rp = cond_mean[(row["init"], row["label_policy"], row["aux"])]
                row["delta_vs_ref"] = pt - ref[0]
                if rp.size and ref[1].size:
                    d = rp - ref[1]
                    d = d[np.isfinite(d)]
                    if d.size >= 2:
                        lo, hi = bs.percentile_ci(d, alpha)
                        row["delta_ci_low"], row["delta_ci_high"] = float(lo), float(hi)
                        row["p_boot"] = float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean())))
    out = pd.DataFrame(rows)
    for c in ("delta_vs_ref", "delta_ci_low", "delta_ci_high", "p_boot"):
        if c not in out.columns:
            out[c] = np.nan
    out["reference"] = reference
    out["n_boot"] = int(n_boot)
    return out


def table_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """The summary as Markdown: one row per condition, ``AUC [CI]`` per task, mean AUC and Δ vs the reference."""

    def fmt(v, lo, hi):
        if v is None or not np.isfinite(v):
            return "–"
        ci = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if lo is not None and np.isfinite(lo) else ""
        return f"{v:.{digits}f}{ci}"

    parts = []
    for kind in table["labels"].unique():
        t = table[table["labels"] == kind]
        tasks = [x for x in dict.fromkeys(t["task"]) if x != "mean"]
        ref = t["reference"].iloc[0]
        head = ["init", "label policy", "aux", "seeds", "mean AUC [95% CI]", f"Δ vs {ref} [95% CI], p"] + tasks
        lines = [f"**{'observed labels' if kind == 'observed' else 'ground-truth labels (synthetic)'}**", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for (init, pol, aux), g in t.groupby(["init", "label_policy", "aux"], sort=False):
            m = g[g["task"] == "mean"].iloc[0]
            if np.isfinite(m.get("delta_vs_ref", np.nan)):
                d = f"{m['delta_vs_ref']:+.{digits}f}"
                if np.isfinite(m.get("delta_ci_low", np.nan)):
                    nb = int(m.get("n_boot") or 0)
                    pv = f"p<{2 / nb:.2g}" if m["p_boot"] == 0 and nb else f"p={m['p_boot']:.2g}"
                    d += f" [{m['delta_ci_low']:+.{digits}f}, {m['delta_ci_high']:+.{digits}f}], {pv}"
            else:
                d = "(reference)" if init == ref else "–"
            cells = [str(m["init_label"]), str(pol), "on" if aux else "off", str(int(m["n_seeds"])),
                     fmt(m["auc"], m["ci_low"], m["ci_high"]), d]
            for task in tasks:
                r = g[g["task"] == task].iloc[0]
                cells.append(fmt(r["auc"], r["ci_low"], r["ci_high"]))
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------ plots
def _savefig(fig, path: Path) -> None:
    from cxrdistill.report.plots import plt

    with atomic_path(path) as p:
        fig.savefig(p, dpi=90, bbox_inches="tight", format="png")
    plt.close(fig)


def _plots(cfg: GridConfig, runs: list[dict], histories: dict[str, list[dict]], table: pd.DataFrame,
           out: Path) -> None:
    from cxrdistill.report.plots import PALETTE, loss_curves, plt

    for policy in cfg.label_policies:
        for aux in cfg.aux:
            sel = {f"{init_label(r['init'])} s{r['seed']}": histories[r["run"]] for r in runs
                   if r["label_policy"] == policy_name(policy) and r["aux"] == bool(aux)}
            fig = loss_curves(sel, title=f"fine-tuning loss · {policy_name(policy)} · aux {'on' if aux else 'off'} "
                                         "(solid train, dashed val)")
            _savefig(fig, out / f"loss_curves_{slug(policy)}_aux{int(aux)}.png")
    m = table[table["task"] == "mean"]
    kinds = list(m["labels"].unique())
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds) + 2.5, 0.3 * (len(m) // max(1, len(kinds))) + 1.4),
                             squeeze=False, sharey=True)
    for col, (ax, kind) in enumerate(zip(axes[0], kinds)):
        d = m[m["labels"] == kind].reset_index(drop=True)
        labels = [f"{r.init_label} · {r.label_policy} · aux {'on' if r.aux else 'off'}" for r in d.itertuples()]
        colour = {init: PALETTE[k % len(PALETTE)] for k, init in enumerate(dict.fromkeys(d["init"]))}
        for i, r in enumerate(d.itertuples()):
            err = [[r.auc - r.ci_low], [r.ci_high - r.auc]] if np.isfinite(r.ci_low) else None
            ax.errorbar(r.auc, i, xerr=err, fmt="o", color=colour[r.init], capsize=3)
        if col == 0:
            ax.set_yticks(range(len(d)), labels, fontsize=8)
            ax.invert_yaxis()
        else:
            ax.tick_params(labelleft=False)
        ax.set_xlabel("mean AUC over tasks (95% CI)")
        ax.set_title(f"{kind} labels", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("fine-tuned pathology AUC by initialisation", fontsize=10)
    fig.tight_layout()
    _savefig(fig, out / "auc.png")
