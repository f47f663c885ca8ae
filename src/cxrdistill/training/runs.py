"""The distill / probe / finetune / evaluate stages as library functions (the CLI commands and the study call these).

Each stage reads a cohort table (one row per image, ``split`` column), writes into its run directory
(``config.yaml``, ``checkpoints/last.pt``, ``history.json``, the model, ``predictions/<split>.parquet``,
``metrics/<split>.csv``, a JSON summary, ``log.txt``) and returns the summary. Re-running a stage on the same directory
resumes it exactly; a directory holding a run with another configuration is refused unless ``fresh=True``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from cxrdistill.cohorts.schema import label_columns
from cxrdistill.cohorts.validate import load_cohort
from cxrdistill.errors import CxrError, InputError
from cxrdistill.evaluation.embedding_input import load_embeddings
from cxrdistill.images.dataset import CxrDataset
from cxrdistill.losses.kd import build_kd_loss, parse_loss_spec
from cxrdistill.models.device import resolve_device
from cxrdistill.models.heads import HEADS, head_input_dim, load_head, save_head
from cxrdistill.models.network import CxrNet, count_params, load_model, save_model
from cxrdistill.models.students import create_student, load_for_finetune, prepare_targets, target_shape
from cxrdistill.storage.io import clean_json, write_json, write_table
from cxrdistill.storage.store import EmbeddingStore
from cxrdistill.training import inputs as I
from cxrdistill.training.data import ArrayDataset
from cxrdistill.training.distributed import barrier, init_distributed
from cxrdistill.training.method import METHODS
from cxrdistill.training.methods.distill import DistillModel, target_stats
from cxrdistill.training.methods.finetune import Finetune
from cxrdistill.training.methods.probe import Probe
from cxrdistill.training.predict import attach_metrics, auc_summary, head_scores, model_outputs, predictions_table
from cxrdistill.training.run_config import DistillConfig, FinetuneConfig, ProbeConfig
from cxrdistill.training.run_dir import RunLog, prepare_run_dir, removes_new_run_dir_on_failure
from cxrdistill.training.trainer import Trainer


def _group_codes(df, attribute: str | None, path=None) -> tuple[np.ndarray | None, list[str]]:
    """Integer codes of an attribute column (sorted values; missing → -1), for methods that use groups."""
    if not attribute:
        return None, []
    if attribute not in df.columns:
        raise InputError("attribute column not found in the cohort", path=path, column=attribute)
    s = df[attribute]
    values = sorted(map(str, s.dropna().unique()))
    pos = {v: k for k, v in enumerate(values)}
    codes = np.array([pos.get(str(v), -1) if v == v and v is not None else -1 for v in s], dtype=np.int64)
    return codes, values


def _shared_cache(df, images_root, size, cache_dir, mode, log):
    """Build the image cache once (rank 0 under torchrun, the others wait) and open it."""
    if images_root is None:
        raise InputError("this stage needs the images", hint="pass --images-root DIR (the root of the cohort paths)")
    dist = init_distributed()
    if dist.is_main:
        log(f"image cache: {len(df)} images at {size}px")
        cache = I.image_cache(df, images_root, size, cache_dir, mode, progress=sys.stderr.isatty())
    barrier(dist)
    if not dist.is_main:
        cache = I.image_cache(df, images_root, size, cache_dir, mode, progress=False)
    return cache


def _is_main() -> bool:
    return init_distributed().is_main


# ------------------------------------------------------------------------------------------------- distill
#: the split value of images used only for distillation (an unlabelled pool)
POOL = "pool"


@removes_new_run_dir_on_failure
def run_distill(cfg: DistillConfig, cohort: str | Path, images_root: str | Path | None, embeddings: str | Path,
                out: str | Path, *, attribute: str | None = None, cache_dir: str | Path | None = None,
                fresh: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Distil the teacher's stored embeddings of the cohort's train split into a student; validate on ``val``.
    Rows of split ``pool`` (unlabelled images, used only for distillation) are trained on like ``train`` rows:
    feature KD needs no labels.

    Writes ``student.safetensors`` (a CxrNet whose ``embedding`` output is in the teacher's units) and
    ``distill.json``. ``attribute`` adds group codes ``g`` to the batches (for fairness-aware methods).
    """
    import torch

    out = prepare_run_dir(out, "distill", cfg, {"cohort": cohort, "images_root": images_root,
                                                 "embeddings": embeddings, "attribute": attribute}, fresh)
    log = RunLog(out, quiet)
    df = load_cohort(cohort, check="ids")
    labelled = I.split_index(df, "train", cohort)
    pool = I.split_index(df, POOL, cohort, required=False)
    tr = np.concatenate([labelled, pool])
    va = I.split_index(df, "val", cohort, required=False)
    use = np.concatenate([tr, va])
    ids = df["image_id"].iloc[use].tolist()
    T, tinfo = load_embeddings(embeddings, ids)
    I.check_finite(T, "teacher embeddings", embeddings)
    tshape = tuple(T.shape[1:])
    tgt_shape = target_shape(tshape, cfg.student.token_mode)
    tgt = np.asarray(prepare_targets(T, tshape, cfg.student.token_mode), dtype=np.float32)
    del T
    log(f"distill: {len(labelled)} train" + (f" + {len(pool)} unlabelled pool" if len(pool) else "") +
        f" / {len(va)} val images; teacher embedding {tshape} → target {tgt_shape}; loss {cfg.loss}")

    tasks, Y = _labels_if_any(df, cfg.tasks, cfg.label_policy, cohort)
    G, groups = _group_codes(df, attribute, cohort)
    t_mean = t_std = None
    if cfg.standardize:
        t_mean, t_std = target_stats(tgt[: len(tr)])

    options = {k: dict(v) for k, v in cfg.loss_options.items()}

    if "logit_kd" in parse_loss_spec(cfg.loss):
        if Y is None:
            raise InputError("logit_kd needs labels in the cohort to train the teacher probe", path=cohort)
        probe = _teacher_probe(tgt[: len(labelled)], Y[labelled], t_mean, t_std, cfg, log)  # labelled rows only
        options.setdefault("logit_kd", {})["probe"] = probe
        options["logit_kd"].setdefault("num_labels", len(tasks))
    kd = build_kd_loss(cfg.loss, dim=tgt_shape[-1], options=options)
    torch.manual_seed(cfg.train.seed)
    student = create_student(cfg.student.name, tshape, weights=cfg.student.weights,
                             proj_hidden=cfg.student.proj_hidden, token_mode=cfg.student.token_mode)
    model = DistillModel(student, kd, tgt_shape, t_mean, t_std)

    cache = _shared_cache(df, images_root, cfg.size, cache_dir, cfg.preprocess, log)
    rows = cache.index_of(df["image_id"].tolist())

    def data(idx, pos, augment):
        y = Y[idx] if Y is not None else None
        g = G[idx] if G is not None else None
        t = tgt[pos]
        if augment:
            return CxrDataset(cache, rows[idx], targets=y, groups=g, teacher=t, augment=augment, seed=cfg.train.seed)
        return I.ImageBatches(cache.array, rows[idx], t=t, y=y, g=g)

    n_tr = len(tr)
    train_data = data(tr, np.arange(n_tr), cfg.augment)
    val_data = data(va, np.arange(n_tr, n_tr + len(va)), None) if len(va) else None
    method = METHODS.create(cfg.method, **cfg.method_options)
    meta = {"student": {"preset": cfg.student.name, "image_size": cfg.size, "teacher_shape": list(tshape),
                        "target_shape": list(tgt_shape), "token_mode": cfg.student.token_mode, "kd_loss": cfg.loss,
                        "standardized": cfg.standardize, "method": cfg.method, "mean": I.MEAN, "std": I.STD,
                        "tasks": tasks},
            "distilled_from": clean_json(tinfo)}
    trainer = Trainer(model, method, train_data, val_data, cfg.train, run_dir=out, weights_metadata=meta, log=log)
    hist = trainer.fit()
    summary: dict[str, Any] = {}
    if trainer.dist.is_main:
        st = model.export_student()
        save_model(st, out / "student.safetensors", **meta)
        summary = {"stage": "distill", "student": str(out / "student.safetensors"), "student_params": count_params(st),
                   "backbone": st.config["backbone"], "teacher_shape": list(tshape), "target_shape": list(tgt_shape),
                   "loss": cfg.loss, "method": cfg.method, "epochs": len(hist), "best_epoch": trainer.best_epoch,
                   "train_images": int(len(labelled)), "pool_images": int(len(pool)),
                   "groups": groups or None, "history": hist[-1] if hist else None}
        write_json(clean_json(summary), out / "distill.json")
        log(f"student written: {out / 'student.safetensors'}")
    return summary


def _labelled_splits(df, cfg, cohort):
    """A labelled stage's tasks, their targets (under the label policy) and the rows of train, val (may be empty) and
    of every evaluation split."""
    tasks = I.default_tasks(df, cfg.tasks, cohort)
    Y = I.targets(df, tasks, cfg.label_policy)
    tr = I.split_index(df, "train", cohort)
    va = I.split_index(df, "val", cohort, required=False)
    ev = {s: I.split_index(df, s, cohort) for s in cfg.eval.splits}
    return tasks, Y, tr, va, ev


def _labels_if_any(df, tasks, policy, path):
    if not tasks and not any((df[c] == 1).any() for c in label_columns(df)
                             if np.issubdtype(df[c].dtype, np.number)):
        return [], None
    tasks = I.default_tasks(df, tasks, path)
    return tasks, I.targets(df, tasks, policy)


def _teacher_probe(Xtr, Ytr, mean, std, cfg: DistillConfig, log):
    """A linear probe on (standardised) teacher targets — the source of logit_kd's teacher logits."""
    X = Xtr.reshape(len(Xtr), -1, Xtr.shape[-1]).mean(1) if Xtr.ndim == 3 else Xtr
    if mean is not None:
        m = mean.numpy().reshape(-1, Xtr.shape[-1]).mean(0) if Xtr.ndim == 3 else mean.numpy()
        s = std.numpy().reshape(-1, Xtr.shape[-1]).mean(0) if Xtr.ndim == 3 else std.numpy()
        X = (X - m) / np.where(s > 1e-6, s, 1.0)
    head = HEADS.create("linear", in_dim=X.shape[1], num_classes=Ytr.shape[1])
    Trainer(head, Probe(monitor="train_loss"), ArrayDataset(x=X.astype(np.float32), y=Ytr), None,
            cfg.logit_kd_probe).fit()
    log("logit_kd: teacher probe trained on the train split's teacher embeddings")
    return head.eval()


# ------------------------------------------------------------------------------------------------- probe
@removes_new_run_dir_on_failure
def run_probe(cfg: ProbeConfig, cohort: str | Path, out: str | Path, *, embeddings: str | Path | None = None,
              model: str | Path | None = None, images_root: str | Path | None = None,
              cache_dir: str | Path | None = None, fresh: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Fit a head on frozen embeddings (from ``embeddings``, or computed by ``model`` over the images) on the train
    split; predict and score the ``cfg.eval.splits``. Writes ``head.safetensors``, predictions and metrics."""
    if (embeddings is None) == (model is None):
        raise CxrError("give either --embeddings STORE or --model CHECKPOINT (with --images-root)")
    out = prepare_run_dir(out, "probe", cfg, {"cohort": cohort, "embeddings": embeddings, "model": model,
                                               "images_root": images_root}, fresh)
    log = RunLog(out, quiet)
    df = load_cohort(cohort, check="ids")
    tasks, Y, tr, va, ev = _labelled_splits(df, cfg, cohort)
    use = np.unique(np.concatenate([tr, va, *ev.values()]))
    X, info = _embeddings_for(df, use, embeddings, model, images_root, cfg.size, cache_dir, out, log)
    I.check_finite(X, "embeddings", embeddings or model)
    where = {int(r): k for k, r in enumerate(use)}

    def sel(idx):
        return X[[where[int(i)] for i in idx]]

    head = HEADS.create(cfg.head, in_dim=head_input_dim(X.shape[1:], cfg.pool), num_classes=len(tasks),
                        pool=cfg.pool)
    Xtr = sel(tr)
    if cfg.standardize:
        import torch

        F = head.flatten_input(torch.from_numpy(Xtr)).double()
        head.set_standardization(F.mean(0), F.std(0, unbiased=False))
    log(f"probe: {cfg.head} head on {X.shape[1:]} embeddings, {len(tasks)} tasks, {len(tr)} train / {len(va)} val")
    meta = {"probe": {"tasks": tasks, "label_policy": cfg.label_policy, "loss": cfg.loss, "source": str(embeddings or model),
                      "embedding_shape": list(X.shape[1:])}}
    trainer = Trainer(head, Probe(cfg.loss, cfg.loss_options, monitor=cfg.monitor),
                      ArrayDataset(x=Xtr, y=Y[tr]), ArrayDataset(x=sel(va), y=Y[va]) if len(va) else None,
                      cfg.train, run_dir=out, weights_metadata={"head": head.config, **meta}, log=log)
    hist = trainer.fit()
    summary: dict[str, Any] = {}
    if trainer.dist.is_main:
        save_head(head, out / "head.safetensors", **meta)
        summary = {"stage": "probe", "head": str(out / "head.safetensors"), "kind": cfg.head, "tasks": tasks,
                   "embedding_source": info, "epochs": len(hist), "best_epoch": trainer.best_epoch, "splits": {}}
        for split, idx in ev.items():
            scores = head_scores(head, sel(idx))
            summary["splits"][split] = _write_eval(df.iloc[idx], tasks, scores, Y[idx], out, split, cfg.eval, log)
        write_json(clean_json(summary), out / "probe.json")
    return summary


def _embeddings_for(df, use, embeddings, model, images_root, size, cache_dir, out: Path, log):
    """Frozen embeddings of rows ``use``: read from a store/file, or computed by a cxrdistill model over the images
    (then also saved as an embedding store in ``out/embeddings`` for the feature audit)."""
    ids = df["image_id"].iloc[use].tolist()
    if embeddings is not None:
        X, info = load_embeddings(embeddings, ids)
        return np.asarray(X, dtype=np.float32), info

    net, meta = load_model(model)
    sm = meta.get("student") or meta.get("finetune") or meta.get("teacher") or {}
    size = int(size or sm.get("image_size") or 64)
    cache = _shared_cache(df, images_root, size, cache_dir, "resize", log)
    rows = cache.index_of(ids)
    X = model_outputs(net, I.ImageBatches(cache.array, rows), "embedding")
    info = {"model": str(model), "image_size": size, "shape": list(X.shape[1:])}
    store = out / "embeddings"
    if _is_main() and not store.exists():
        st = EmbeddingStore.create(store, X.shape[1:], "float32", {"name": f"student:{Path(str(model)).name}",
                                                                   "version": "1", **info})
        st.append(ids, X)
    log(f"embeddings computed by {model} at {size}px: {X.shape}")
    return X, info


# ------------------------------------------------------------------------------------------------- evaluation
def _write_eval(rows, tasks, scores, y, out: Path, split: str, ecfg, log) -> dict[str, Any]:
    pred = predictions_table(rows, tasks, scores, y, aggregate=ecfg.aggregate)
    write_table(pred, out / "predictions" / f"{split}.parquet")
    metrics = attach_metrics(pred, tasks, n_boot=ecfg.n_boot, seed=ecfg.seed, target_fpr=ecfg.target_fpr)
    write_table(metrics, out / "metrics" / f"{split}.csv")
    res = {"n": int(len(pred)), "predictions": str(out / "predictions" / f"{split}.parquet"),
           "metrics": str(out / "metrics" / f"{split}.csv"), "observed": auc_summary(metrics, "observed")}
    if (metrics["labels"] == "true").any():
        res["true"] = auc_summary(metrics, "true")
    m = res["observed"]["mean_auc"]
    log(f"{split}: mean AUC {m:.4f} over {len(tasks)} tasks (n={len(pred)})" if m is not None else
        f"{split}: no task with both classes")
    return res


def run_evaluate(cohort: str | Path, out: str | Path, *, split: str | None = "test", model: str | Path | None = None,
                 head: str | Path | None = None, embeddings: str | Path | None = None,
                 images_root: str | Path | None = None, size: int | None = None, label_policy="u-ignore",
                 aggregate: str = "image", n_boot: int = 1000, target_fpr: float = 0.2, seed: int = 0,
                 cache_dir: str | Path | None = None, metrics_out: str | Path | None = None,
                 quiet: bool = True, device: str = "cpu") -> dict[str, Any]:
    """Predict ``split`` of ``cohort`` with a classifier (``model`` with a head), a head on a model's embeddings
    (``model`` + ``head``), or a head on stored embeddings (``embeddings`` + ``head``); write the predictions table
    to ``out`` and the tidy metrics table next to it (``<out>.metrics.csv``). This is also the *direct* transfer
    mode: apply a model trained on one cohort to another. ``model`` runs on ``device`` (``auto``: a GPU if any)."""
    out = Path(out)
    df = load_cohort(cohort, check="ids")
    idx = I.split_index(df, split, cohort) if split else np.arange(len(df))
    rows_df = df.iloc[idx]
    ids = rows_df["image_id"].tolist()
    hd, hmeta = load_head(head) if head else (None, {})
    tasks = list((hmeta.get("probe") or {}).get("tasks") or [])
    if model is None and (embeddings is None or hd is None):
        raise CxrError("give --model CKPT (a classifier, or with --head), or --embeddings STORE with --head HEAD")
    if model is not None:
        dev = resolve_device(device)
        net, meta = load_model(model)
        sm = meta.get("finetune") or meta.get("student") or meta.get("teacher") or {}
        size = int(size or sm.get("image_size") or 64)
        if images_root is None:
            raise InputError("a model needs the images", hint="pass --images-root DIR")
        cache = I.image_cache(df, images_root, size, cache_dir, "resize", progress=not quiet)
        data = I.ImageBatches(cache.array, cache.index_of(ids))
        if hd is not None:
            scores = head_scores(hd, model_outputs(net, data, "embedding", device=dev))
        else:
            scores = 1 / (1 + np.exp(-model_outputs(net, data, "logits", device=dev).astype(np.float64)))
            tasks = list(sm.get("tasks") or [])
    else:
        X, _ = load_embeddings(embeddings, ids)
        scores = head_scores(hd, np.asarray(X, dtype=np.float32))
    if not tasks or len(tasks) != scores.shape[1]:
        raise InputError(f"the model has {scores.shape[1]} outputs but its task list is missing or different",
                         path=head or model, hint="use a head or model written by cxrdistill probe/finetune")
    missing = [t for t in tasks if t not in df.columns]
    y = I.targets(rows_df, tasks, label_policy) if not missing else None
    pred = predictions_table(rows_df, tasks, scores, y, aggregate=aggregate)
    write_table(pred, out)
    metrics_path = Path(metrics_out) if metrics_out else out.with_name(out.name.split(".")[0] + ".metrics.csv")
    summary: dict[str, Any] = {"predictions": str(out), "n": int(len(pred)), "tasks": tasks}
    if model is not None:
        summary["device"] = str(dev)
    if y is not None:
        metrics = attach_metrics(pred, tasks, n_boot=n_boot, seed=seed, target_fpr=target_fpr)
        write_table(metrics, metrics_path)
        summary["metrics"] = str(metrics_path)
        summary["observed"] = auc_summary(metrics, "observed")
        if (metrics["labels"] == "true").any():
            summary["true"] = auc_summary(metrics, "true")
    return summary


# ------------------------------------------------------------------------------------------------- finetune
def build_finetune_model(cfg: FinetuneConfig, tasks: list[str]):
    """The network to fine-tune: from a cxrdistill checkpoint, random init, or ``imagenet:FILE`` (timm-named)."""
    init, num_classes = cfg.init, len(tasks)
    if init == "random":
        return CxrNet(cfg.backbone, num_classes=num_classes), {"init": "random"}
    if init.startswith("imagenet:"):
        path = init.split(":", 1)[1]
        if not path:
            raise InputError("imagenet: init needs a weights file", hint="--init imagenet:resnet18.safetensors")
        return CxrNet(cfg.backbone, num_classes=num_classes, weights=path), {"init": init}
    model, meta = load_for_finetune(init, num_classes, cfg.head_on, tasks=tasks)
    return model, {"init": str(init), "init_meta": {k: meta[k] for k in ("student", "teacher") if k in meta}}


@removes_new_run_dir_on_failure
def run_finetune(cfg: FinetuneConfig, cohort: str | Path, images_root: str | Path, out: str | Path, *,
                 cache_dir: str | Path | None = None, fresh: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Fine-tune a whole network with a head on the train split (val for model selection); predict and score
    ``cfg.eval.splits``. ``out/model.safetensors`` is the fine-tuned classifier (``load_model`` reads it)."""
    import torch

    out = prepare_run_dir(out, "finetune", cfg, {"cohort": cohort, "images_root": images_root}, fresh)
    log = RunLog(out, quiet)
    df = load_cohort(cohort, check="ids")
    tasks, Y, tr, va, ev = _labelled_splits(df, cfg, cohort)
    torch.manual_seed(cfg.train.seed)
    model, init_info = build_finetune_model(cfg, tasks)
    cache = _shared_cache(df, images_root, cfg.size, cache_dir, cfg.preprocess, log)
    rows = cache.index_of(df["image_id"].tolist())
    if cfg.augment:
        train_data = CxrDataset(cache, rows[tr], targets=Y[tr], augment=cfg.augment, seed=cfg.train.seed)
    else:
        train_data = I.ImageBatches(cache.array, rows[tr], y=Y[tr])
    val_data = I.ImageBatches(cache.array, rows[va], y=Y[va]) if len(va) else None
    meta = {"cxrnet": model.config, "finetune": {"image_size": cfg.size, "tasks": tasks, "label_policy": cfg.label_policy,
                                                 "loss": cfg.loss, **init_info, "mean": I.MEAN, "std": I.STD}}
    log(f"finetune: {model.config['backbone']} ({count_params(model):,} params) from {cfg.init}; {len(tasks)} tasks; "
        f"{len(tr)} train / {len(va)} val")
    trainer = Trainer(model, Finetune(cfg.loss, cfg.loss_options, monitor=cfg.monitor), train_data, val_data,
                      cfg.train, run_dir=out, weights_metadata=clean_json(meta), log=log)
    hist = trainer.fit()
    summary: dict[str, Any] = {}
    if trainer.dist.is_main:
        summary = {"stage": "finetune", "model": str(out / "model.safetensors"), "tasks": tasks, **init_info,
                   "params": count_params(model), "epochs": len(hist), "best_epoch": trainer.best_epoch, "splits": {}}
        for split, idx in ev.items():
            logits = model_outputs(model, I.ImageBatches(cache.array, rows[idx]), "logits")
            scores = 1 / (1 + np.exp(-logits.astype(np.float64)))
            summary["splits"][split] = _write_eval(df.iloc[idx], tasks, scores, Y[idx], out, split, cfg.eval, log)
        write_json(clean_json(summary), out / "finetune.json")
    return summary
