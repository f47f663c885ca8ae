"""The stages of a study, in order. Each reads earlier stages' files from the run directory and returns a small
JSON summary (kept in ``stages/<name>.json`` with its cache key); the report and ``results.json`` are built from
those summaries and files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cxrdistill.cohorts.importer import cohort_summary, import_cohort
from cxrdistill.cohorts.splits import assign_splits, check_no_leakage, split_from_file
from cxrdistill.cohorts.validate import load_cohort, save_cohort
from cxrdistill.errors import CxrError
from cxrdistill.evaluation.audit import run_audit
from cxrdistill.evaluation.compare import compare_dirs
from cxrdistill.evaluation.embedding_input import load_embeddings, open_embeddings
from cxrdistill.evaluation.features import audit_embeddings
from cxrdistill.evaluation.predictions import read_predictions
from cxrdistill.evaluation.probes import probe_attributes
from cxrdistill.report.audit_html import write_audit
from cxrdistill.report.feature_report import write_compare, write_feature_audit, write_probes
from cxrdistill.storage.config import deep_merge, validate
from cxrdistill.storage.io import atomic_open, clean_json, read_table, write_table
from cxrdistill.storage.store import EmbeddingStore
from cxrdistill.study.engine import Stage, StudyContext
from cxrdistill.synth.generate import generate, render_batch
from cxrdistill.teachers.client import embed_cohort
from cxrdistill.teachers.importers import import_embeddings
from cxrdistill.teachers.local import resolve_teacher, token_from_env
from cxrdistill.teachers.pretrain import TeacherPretrainConfig, pretrain_teacher
from cxrdistill.teachers.server import BackgroundServer, create_app
from cxrdistill.training.inputs import image_cache
from cxrdistill.training.run_config import STAGES as RUN_CONFIGS, stage_defaults


def _dump(m) -> Any:
    return json.loads(m.model_dump_json()) if hasattr(m, "model_dump_json") else m


# ------------------------------------------------------------------------------------------------ cohort & split
def stage_cohort(ctx: StudyContext) -> dict:
    """Synthesise (or read) the cohort and write ``cohort_raw.parquet``."""
    c = ctx.cfg.cohort
    out = ctx.path("cohort_raw.parquet")
    planted = None
    if c.source == "synth":
        import shutil

        data = ctx.out / "data"
        if data.exists():
            shutil.rmtree(data)
        generate(data, n=c.synth.n, size=max(ctx.cfg.size, 64), seed=c.synth.seed, scenario=c.synth.scenario,
                 workers=c.synth.workers, preview=ctx.path("figures", "synth_preview.png"))
        df, _ = import_cohort("chexpert", None, images_root=data, csv=str(data / "train.csv"), sample=16)
        images_root = data
        scen = data / "scenario.json"
        planted = json.loads(scen.read_text()) if scen.exists() else None
    elif c.source == "table":
        if not c.table:
            raise CxrError("cohort.table: give the cohort parquet (source: table)")
        df = load_cohort(c.table)
        images_root = Path(c.images_root or df.attrs.get("images_root", "."))
    else:
        df, _ = import_cohort(c.source, None, images_root=c.images_root, **c.reader_args)
        images_root = Path(c.images_root or df.attrs.get("images_root", "."))
    if c.frontal_only and "frontal" in df.columns:
        df = df[df["frontal"].fillna(False).astype(bool)].reset_index(drop=True)
    if c.max_images and len(df) > c.max_images:
        df = df.sample(n=c.max_images, random_state=ctx.cfg.seed).sort_values("image_id").reset_index(drop=True)
    df.attrs["images_root"] = str(Path(images_root).resolve())
    save_cohort(df, out)
    return {"images_root": str(Path(images_root).resolve()), "summary": cohort_summary(df), "planted": planted}


def stage_split(ctx: StudyContext) -> dict:
    s = ctx.cfg.split
    df = load_cohort(ctx.out / "cohort_raw.parquet")
    synth_split = ctx.out / "data" / "split.csv"
    if s.from_file:
        df, _ = split_from_file(df, s.from_file)
    elif ctx.cfg.cohort.source == "synth" and s.use_synth_split and synth_split.exists():
        # the generator's split keeps a planted shortcut confined to training data (and flipped at test time)
        df, _ = split_from_file(df, synth_split)
    elif not (s.keep_existing and "split" in df.columns and df["split"].notna().all()):
        strat = [c for c in [*s.stratify, *ctx.cfg.tasks[:3]] if c in df.columns]
        df = assign_splits(df, s.fractions, stratify=strat, seed=s.seed)
    check_no_leakage(df, "study cohort")
    df.attrs["images_root"] = ctx.results["cohort"]["images_root"]
    save_cohort(df, ctx.path("cohort.parquet"))
    return {"splits": {k: int(v) for k, v in df["split"].value_counts().items()},
            "patients": int(df["patient_id"].nunique())}


def stage_images(ctx: StudyContext) -> dict:
    """Decode every image once into the uint8 cache at the study's size, which every image stage then shares (so
    that stages running at once never build it twice); with a distillation pool, also the cache the distillation
    stage reads (cohort and pool)."""
    import pandas as pd

    cache, _ = _images(ctx, pd.read_parquet(ctx.out / "cohort.parquet"))
    out = {"cache": str(cache.dir), "n": len(cache)}
    if "pool" in ctx.results:
        both = image_cache(_distill_frame(ctx), ctx.results["cohort"]["images_root"], ctx.cfg.size, ctx.out / "cache",
                           progress=False)
        out.update(distill_cache=str(both.dir), distill_n=len(both))
    return out


# ------------------------------------------------------------------------------------------------ distillation pool
POOL_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


def stage_pool(ctx: StudyContext) -> dict:
    """The unlabelled distillation pool in ``pool/pool.parquet``: ids prefixed ``pool/``, absolute paths, split
    ``pool``, no label columns (labels are never used, even where the source has them)."""
    import numpy as np
    import pandas as pd

    p = ctx.cfg.distill_pool
    out = ctx.out / "pool"
    if p.source == "synth":
        meta = _render_pool(ctx, out / "images")
    elif p.source == "table":
        meta = read_table(p.table, dtype={"image_id": str, "patient_id": str})
        for col in ("image_id", "path"):
            if col not in meta.columns:
                raise CxrError(f"distill_pool.table {p.table}: no {col!r} column (a cohort table has image_id and "
                               "path, relative to distill_pool.images_root)")
        root = Path(p.images_root or Path(p.table).parent).resolve()
        meta = meta.assign(path=[str(root / x) for x in meta["path"].astype(str)])
    else:
        root = Path(p.dir).resolve()
        files = sorted(f for f in root.rglob("*") if f.suffix.lower() in POOL_SUFFIXES and f.is_file())
        if not files:
            raise CxrError(f"distill_pool.dir {root}: no image files ({', '.join(POOL_SUFFIXES)}) under it")
        meta = pd.DataFrame({"image_id": [str(f.relative_to(root).with_suffix("")) for f in files],
                             "path": [str(f) for f in files]})
    if p.max_images and len(meta) > p.max_images:
        meta = meta.sample(n=p.max_images, random_state=ctx.cfg.seed).sort_index()
    keep = [c for c in ("sex", "age", "race", "view") if c in meta.columns]
    ids = "pool/" + meta["image_id"].astype(str)
    pats = ("pool/" + meta["patient_id"].astype(str)) if "patient_id" in meta.columns else ids
    df = pd.DataFrame({"image_id": ids.to_numpy(), "patient_id": pats.to_numpy(), "path": meta["path"].to_numpy(),
                       "frontal": True, **{c: meta[c].to_numpy() for c in keep},
                       "split": np.full(len(meta), "pool", dtype=object)})
    if df["image_id"].duplicated().any():
        raise CxrError(f"distill_pool: image_id {df['image_id'][df['image_id'].duplicated()].iloc[0]!r} appears "
                       "twice; give each pool image a unique id")
    write_table(df, out / "pool.parquet")
    return {"table": str(out / "pool.parquet"), "n": len(df), "source": p.source}


def _render_pool(ctx: StudyContext, root: Path, chunk: int = 5000):
    """More images of the synthetic cohort's population (its scenario, the pool's seed), as PNG files; rendered in
    chunks (each its own sample of the population, seeded from the pool's seed) so that memory stays bounded."""
    import shutil

    import pandas as pd
    from PIL import Image

    c, p = ctx.cfg.cohort, ctx.cfg.distill_pool
    if root.exists():
        shutil.rmtree(root)
    parts = []
    for k, start in enumerate(range(0, p.n, chunk)):
        images, meta = render_batch(min(chunk, p.n - start), max(ctx.cfg.size, 64), seed=p.seed + 7919 * k,
                                    scenario=c.synth.scenario, workers=c.synth.workers)
        paths = []
        for a, rel in zip(images, meta["path"]):
            f = root / str(k) / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(f, format="PNG", compress_level=1)
            paths.append(str(f))
        parts.append(meta.assign(path=paths, image_id=f"{k}/" + meta["image_id"],
                                 patient_id=f"{k}/" + meta["patient_id"]))
    ctx.log(f"[distill_pool] rendered {p.n} unlabelled images (seed {p.seed})")
    return pd.concat(parts, ignore_index=True)


def _distill_frame(ctx: StudyContext):
    """The cohort's rows followed by the distillation pool's: what the teacher embeds and the student distils on."""
    import pandas as pd

    return pd.concat([pd.read_parquet(ctx.out / "cohort.parquet"), pd.read_parquet(ctx.results["pool"]["table"])],
                     ignore_index=True)


def _distill_table(ctx: StudyContext) -> Path:
    """The table the student distils on: ``cohort.parquet``, or with a pool ``distill_cohort.parquet``, written once
    by the embed stage (the stage that decides what the teacher embeds)."""
    if "pool" not in ctx.results:
        return ctx.out / "cohort.parquet"
    return Path(ctx.results["embed"].get("table") or ctx.out / "distill_cohort.parquet")


def _images(ctx: StudyContext, df):
    """The cohort's images at the study's size and their rows for ``df`` (the uint8 cache every stage shares)."""
    cache = image_cache(df, ctx.results["cohort"]["images_root"], ctx.cfg.size, ctx.out / "cache", progress=False)
    return cache, cache.index_of(df["image_id"].astype(str).tolist())


# ------------------------------------------------------------------------------------------------ teacher
def _pretrain_config(ctx: StudyContext):
    base = {"size": ctx.cfg.size}
    return TeacherPretrainConfig.model_validate({**base, **ctx.cfg.teacher.pretrain})


def stage_teacher(ctx: StudyContext) -> dict:
    """The black-box teacher: pretrained here (default) or named by the config."""
    t = ctx.cfg.teacher
    if t.kind == "pretrain":
        ckpt = ctx.path("teacher", "teacher.safetensors")
        # a re-run with changed teacher settings starts the run directory over (the same settings resume it)
        summary = pretrain_teacher(ckpt, _pretrain_config(ctx), run_dir=ctx.out / "teacher" / "run", progress=False,
                                   log=ctx.log, restart_changed=True)
        return {"spec": f"torch:{ckpt}", "summary": _jsonable(summary)}
    if t.kind == "local":
        return {"spec": t.local}
    if t.kind == "api":
        return {"spec": t.url}
    return {"spec": None, "files": t.files}


def _jsonable(obj):
    return json.loads(json.dumps(clean_json(obj), default=str))


def stage_embed(ctx: StudyContext) -> dict:
    """Query the teacher once for every image of the cohort (and of the pool: ``distill_cohort.parquet``, written here)
    into ``embeddings/teacher`` (HTTP on loopback for a local teacher when ``teacher.serve``: the study uses the
    teacher exactly as a black-box API)."""
    cohort = ctx.out / "cohort.parquet"
    if "pool" in ctx.results:
        cohort = ctx.out / "distill_cohort.parquet"
        write_table(_distill_frame(ctx), cohort)
    return {**_embed(ctx, cohort), "table": str(cohort)}


def _embed(ctx: StudyContext, cohort: Path) -> dict:
    import shutil

    t = ctx.cfg.teacher
    store = ctx.out / "embeddings" / "teacher"
    root = ctx.results["cohort"]["images_root"]
    if store.exists():
        shutil.rmtree(store)  # the cache key changed: the teacher or the cohort is new
    if t.kind == "files":
        src = Path(t.files)
        if (src / "manifest.json").exists():
            shutil.copytree(src, store)
        else:
            import_embeddings(t.files_format, src, store, cohort=cohort, pool=t.pool)
        return {"store": str(store), "via": "files", "n": len(EmbeddingStore.open(store))}
    spec = ctx.results["teacher"]["spec"]
    token = None
    if t.token_env:
        token = token_from_env(t.token_env)
    if spec.startswith("http"):
        res = embed_cohort(spec, cohort, root, store, concurrency=t.concurrency, batch_size=t.batch_size,
                           size=ctx.cfg.size, token=token, progress=False)
        via = "http"
    elif t.serve:
        teacher = resolve_teacher(spec, image_size=ctx.cfg.size)
        with BackgroundServer(create_app(teacher)) as srv:
            ctx.log(f"[embed] teacher served at {srv.url} (loopback); querying it over HTTP")
            res = embed_cohort(srv.url, cohort, root, store, concurrency=t.concurrency, batch_size=t.batch_size,
                               size=ctx.cfg.size, progress=False)
        via = "http (loopback)"
    else:
        res = embed_cohort(spec, cohort, root, store, batch_size=t.batch_size, size=ctx.cfg.size, progress=False)
        via = "in-process"
    return {"store": str(store), "via": via, "result": _jsonable(getattr(res, "__dict__", {}))}


# ------------------------------------------------------------------------------------------------ student
def _stage_cfg(stage: str, base: dict, section: dict):
    """A command's config for the study: the command's packaged defaults (configs/<stage>.yaml), then the study's
    shared settings, then the study's own section — so an unset key keeps the command's default."""
    return validate(RUN_CONFIGS[stage], deep_merge(deep_merge(stage_defaults(stage), base), section),
                    prefix=stage, docs="docs/study.md")


def _distill_cfg(ctx: StudyContext):
    base = {"size": ctx.cfg.size, "tasks": ctx.cfg.tasks, "label_policy": ctx.cfg.label_policy}
    return _stage_cfg("distill", base, ctx.cfg.distill)


def _probe_cfg(ctx: StudyContext):
    base = {"tasks": ctx.cfg.tasks, "label_policy": ctx.cfg.label_policy,
            "eval": {"splits": ["test"], "n_boot": ctx.cfg.audit.n_boot, "target_fpr": ctx.cfg.audit.target_fpr}}
    return _stage_cfg("probe", base, ctx.cfg.probe)


def stage_distill(ctx: StudyContext) -> dict:
    from cxrdistill.training.runs import run_distill

    out = ctx.out / "student"
    return _jsonable(run_distill(_distill_cfg(ctx), _distill_table(ctx), ctx.results["cohort"]["images_root"],
                                 ctx.results["embed"]["store"], out, cache_dir=ctx.out / "cache",
                                 fresh=not ctx.resume, quiet=True))


def stage_student_embed(ctx: StudyContext) -> dict:
    """The student's embeddings of every image (in-process: the student is ours)."""
    import shutil

    store = ctx.out / "embeddings" / "student"
    if store.exists():
        shutil.rmtree(store)
    embed_cohort(f"torch:{ctx.out / 'student' / 'student.safetensors'}", ctx.out / "cohort.parquet",
                 ctx.results["cohort"]["images_root"], store, batch_size=128, size=ctx.cfg.size, progress=False)
    return {"store": str(store)}


def _probe(ctx: StudyContext, who: str) -> dict:
    from cxrdistill.training.runs import run_probe

    out = ctx.out / "probe" / who
    store = ctx.results["embed"]["store"] if who == "teacher" else ctx.results["student_embed"]["store"]
    return _jsonable(run_probe(_probe_cfg(ctx), ctx.out / "cohort.parquet", out, embeddings=store,
                               fresh=not ctx.resume, quiet=True))


def stage_probe_teacher(ctx: StudyContext) -> dict:
    return _probe(ctx, "teacher")


def stage_probe_student(ctx: StudyContext) -> dict:
    return _probe(ctx, "student")


def stage_speed(ctx: StudyContext) -> dict:
    """Parameters and inference throughput of teacher and student at the same resolution, in one process with one
    intra-op thread each (the same conditions, and immune to oversubscription on a busy machine); the speed-up is
    the median ratio of interleaved repeated timings."""
    from cxrdistill.models.network import count_params, load_model
    from cxrdistill.models.speed import compare_speed, inference_throughput

    spec = ctx.results["teacher"].get("spec") or ""
    student, _ = load_model(ctx.out / "student" / "student.safetensors")
    if not spec.startswith("torch:"):  # an API or file teacher: nothing of it to time here
        return {"student": {"params": count_params(student), "threads": 1,
                            "throughput_img_s": inference_throughput(student, ctx.cfg.size, batch_size=64, threads=1,
                                                                     min_time=2.0)}}
    teacher, _ = load_model(Path(spec.removeprefix("torch:")))
    sp = compare_speed(teacher, student, ctx.cfg.size, batch_size=64, threads=1)
    for who in ("teacher", "student"):
        sp[who]["threads"] = 1
    return sp


def stage_finetune(ctx: StudyContext) -> dict:
    from cxrdistill.training.runs import run_finetune

    base = {"init": str(ctx.out / "student" / "student.safetensors"), "size": ctx.cfg.size, "tasks": ctx.cfg.tasks,
            "label_policy": ctx.cfg.label_policy, "augment": None,
            "eval": {"splits": ["test"], "n_boot": ctx.cfg.audit.n_boot}, "train": {"epochs": 3, "lr": 1e-3}}
    cfg = _stage_cfg("finetune", base, ctx.cfg.finetune.options)
    return _jsonable(run_finetune(cfg, ctx.out / "cohort.parquet", ctx.results["cohort"]["images_root"],
                                  ctx.out / "finetune", cache_dir=ctx.out / "cache", fresh=not ctx.resume,
                                  quiet=True))


# ------------------------------------------------------------------------------------------------ audits
def predictions_path(ctx: StudyContext, who: str) -> Path:
    """The test-split predictions table written by the probe / fine-tune stage of ``who``."""
    stage = {"teacher": "probe_teacher", "student": "probe_student", "student_finetuned": "finetune"}[who]
    try:
        return Path(ctx.results[stage]["splits"]["test"]["predictions"])
    except KeyError:
        raise CxrError(f"no test predictions from stage {stage!r}; does the cohort have a test split?") from None


def _mean_tokens(X):
    """(N, D) embeddings from (N, D), (N, T, D) or (N, H, W, D) ones: token / spatial outputs mean-pooled."""
    return X.reshape(len(X), -1, X.shape[-1]).mean(1) if X.ndim > 2 else X


def _audit_one(ctx: StudyContext, who: str, store: str | None) -> dict:
    a = ctx.cfg.audit
    out = ctx.out / "audit" / who
    preds = read_predictions(predictions_path(ctx, who))
    attrs = [x for x in ctx.cfg.attributes if x in preds.columns]
    labels = "both" if any(c.startswith("ytrue_") for c in preds.columns) else "observed"
    res = run_audit(preds, attrs, tasks=ctx.cfg.tasks, target_fpr=a.target_fpr, n_boot=a.n_boot, alpha=a.alpha,
                    correction=a.correction, seed=ctx.cfg.seed, labels=labels,
                    path=predictions_path(ctx, who))
    write_audit(res, out, title=f"Performance audit — {who}")
    summary = {"dir": str(out)}
    if store:
        import pandas as pd

        cohort = pd.read_parquet(ctx.out / "cohort.parquet")
        test = cohort[cohort["split"] == "test"].reset_index(drop=True)
        src = open_embeddings(store)
        X = src.get(test["image_id"].tolist()).astype("float32")
        X = _mean_tokens(X)
        meta = test[["image_id", *[c for c in ("sex", "race", "age", "patient_id") if c in test.columns]]]
        fa = audit_embeddings(X, meta, attributes=attrs, variance=a.pca_variance, modes=a.modes,
                              correction=a.correction, seed=ctx.cfg.seed, tsne=a.tsne)
        write_feature_audit(fa, out, inputs={"embeddings": str(store), "split": "test"}, seed=ctx.cfg.seed)
        pr = probe_attributes(X, meta, attrs + (["age"] if "age" in meta.columns else []), folds=a.probe_folds,
                              seed=ctx.cfg.seed, groups=meta.get("patient_id"), repeats=a.probe_repeats)
        write_probes(pr, out, inputs={"embeddings": str(store), "split": "test"})
        fj = json.loads((out / "features_audit.json").read_text())
        summary.update({"n_tests": fj.get("n_tests"), "n_significant": fj.get("n_significant"),
                        "bias_score": (fj.get("bias_score") or {}).get("value"),
                        "bias_score_by_attribute": (fj.get("bias_score") or {}).get("by_attribute"),
                        "probes": _jsonable(pr)})
    return summary


def stage_audit(ctx: StudyContext) -> dict:
    out = {"teacher": _audit_one(ctx, "teacher", ctx.results["embed"]["store"]),
           "student": _audit_one(ctx, "student", ctx.results["student_embed"]["store"])}
    if "finetune" in ctx.results:
        out["student_finetuned"] = _audit_one(ctx, "student_finetuned", None)
    return _jsonable(out)


def stage_compare(ctx: StudyContext) -> dict:
    names = ["teacher", "student"] + (["student_finetuned"] if "finetune" in ctx.results else [])
    res = compare_dirs([ctx.out / "audit" / n for n in names], names, alpha=ctx.cfg.audit.alpha,
                       correction=ctx.cfg.audit.correction, margin=ctx.cfg.audit.margin)
    write_compare(res, ctx.out / "audit" / "compare")
    doc = json.loads((ctx.out / "audit" / "compare" / "compare.json").read_text())
    return _jsonable({"dir": str(ctx.out / "audit" / "compare"), "summary": doc.get("summary")})


# ------------------------------------------------------------------------------------------------ fairness
def fairness_attribute(ctx: StudyContext) -> str:
    f = ctx.cfg.fairness
    if f.attribute:
        return f.attribute
    planted = (ctx.results.get("cohort") or {}).get("planted") or {}
    attr = (planted.get("scenario") or planted).get("attribute") if isinstance(planted, dict) else None
    return attr or ctx.cfg.attributes[0]


def stage_fairness(ctx: StudyContext) -> dict:
    """Fair training methods on the teacher's frozen embeddings (the fast path): ERM, resampling, GroupDRO, FIS,
    FairDi … — what a user could do with the API embeddings alone."""
    import pandas as pd

    from cxrdistill.fairness.data import from_embeddings
    from cxrdistill.fairness.run import FairRunConfig, run_fair

    cfg = FairRunConfig.model_validate(deep_merge({"methods": ["erm", "resample", "groupdro", "fis", "fairdi"],
                                               "seeds": [0, 1, 2], "train": {"epochs": 15}},
                                              ctx.cfg.fairness.options))
    attr = fairness_attribute(ctx)
    df = pd.read_parquet(ctx.out / "cohort.parquet")
    data = from_embeddings(df, ctx.results["embed"]["store"], ctx.cfg.tasks, attr,
                           label_policy=ctx.cfg.label_policy)
    with _threads(1):  # small heads on embeddings: one thread is fastest and immune to oversubscription
        res = run_fair(data, cfg, ctx.out / "fairness", log=ctx.log)
    return _jsonable({"attribute": attr, "json": res["json"]})


class _threads:
    """Temporarily set torch's intra-op threads."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        import torch

        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.old)


def _fair_distill_cfg(ctx: StudyContext):
    """The fair-distillation students: the study's student backbone and KD loss, at the study's size, on its tasks
    and label policy; ``fair_distill.options`` set methods, seeds, epochs … (see docs/study.md)."""
    from cxrdistill.fairkd.on_cohort import make_cohort_config

    d = _distill_cfg(ctx)
    defaults = {"tasks": ctx.cfg.tasks, "label_policy": ctx.cfg.label_policy, "size": ctx.cfg.size, "seeds": [0],
                "device": "auto",
                "attribute": fairness_attribute(ctx), "student": {"backbone": d.student.name, "loss": d.loss,
                                                                  "epochs": 6}}
    return make_cohort_config(ctx.cfg.fair_distill.options, **defaults)


def stage_fair_distill(ctx: StudyContext) -> dict:
    """Can the student be fairer than its teacher? The study's black-box teacher, seen only through its embeddings,
    distilled on the study's cohort into a plain-KD student and one student per fairness-aware objective
    (``cxrdistill.fairkd``), all scored by one protocol."""
    import pandas as pd

    from cxrdistill.fairkd.on_cohort import cohort_from_table, run_on_cohort
    from cxrdistill.fairkd.summary import report_section

    cfg = _fair_distill_cfg(ctx)
    out = ctx.out / "fair_distill"
    df = pd.read_parquet(ctx.out / "cohort.parquet")
    cache, rows = _images(ctx, df)
    T, info = load_embeddings(ctx.results["embed"]["store"], df["image_id"].astype(str).tolist())
    T = _mean_tokens(T)
    c = ctx.cfg.cohort
    label = c.synth.scenario if c.source == "synth" else c.source
    cohort = cohort_from_table(df, cache, cfg.attribute, cfg.tasks, cfg.label_policy, label, rows=rows)
    T = T[cohort.meta["table_row"].to_numpy()]  # rows without the attribute are not in the cohort
    name = info.get("name") or (ctx.results["teacher"].get("spec") or "teacher").split("/")[-1]
    run_on_cohort(cohort, T, cfg, out, teacher_name=str(name), log=ctx.log)
    with atomic_open(out / "section.html", "w", encoding="utf-8") as fh:  # escaped by report_section
        fh.write(report_section(out))
    doc = json.loads((out / "fairkd.json").read_text())
    return _jsonable({"dir": str(out), "results": doc.get("results"), "goal_lines": doc.get("goal_lines"),
                      "label_bias": doc.get("label_bias")})


def stage_pretraining(ctx: StudyContext) -> dict:
    """The pretraining question on this cohort: random vs ImageNet vs in-domain supervised vs Barlow Twins."""
    import pandas as pd

    from cxrdistill.pretraining.grid import run_grid

    df = pd.read_parquet(ctx.out / "cohort.parquet")
    cache, _ = _images(ctx, df)
    opts = deep_merge({"label_policies": [ctx.cfg.label_policy], "tasks": ctx.cfg.tasks}, ctx.cfg.pretraining.options)
    table = run_grid(opts, df, cache, ctx.out / "pretraining", log=ctx.log, fresh=not ctx.resume)
    return {"table": _jsonable(table.to_dict(orient="records"))}


STAGES: list[Stage] = [
    Stage("cohort", stage_cohort, (), lambda c: [_dump(c.cfg.cohort), c.cfg.size, c.cfg.seed],
          description="synthesise / read the cohort"),
    Stage("split", stage_split, ("cohort",), lambda c: [_dump(c.cfg.split), c.cfg.tasks[:3]]),
    Stage("pool", stage_pool, (), lambda c: [_dump(c.cfg.distill_pool), c.cfg.size, c.cfg.seed,
                                             c.cfg.cohort.synth.scenario],
          enabled=lambda c: c.cfg.distill_pool.source != "none",
          description="the unlabelled images used only for distillation", cost=2),
    Stage("images", stage_images, ("split", "pool"), lambda c: c.cfg.size, description="decode the images once"),
    Stage("teacher", stage_teacher, (), lambda c: [_dump(c.cfg.teacher), c.cfg.size],
          description="the black-box teacher", cost=3),
    Stage("embed", stage_embed, ("split", "teacher", "pool"), lambda c: [c.cfg.size, c.cfg.teacher.serve],
          description="query the teacher once per image"),
    Stage("distill", stage_distill, ("embed", "images"), lambda c: _dump(_distill_cfg(c)),
          description="distil the teacher into the student", cost=3),
    Stage("student_embed", stage_student_embed, ("distill",), lambda c: c.cfg.size),
    Stage("probe_teacher", stage_probe_teacher, ("embed",), lambda c: _dump(_probe_cfg(c))),
    Stage("probe_student", stage_probe_student, ("student_embed",), lambda c: _dump(_probe_cfg(c))),
    Stage("speed", stage_speed, ("distill", "teacher"), lambda c: c.cfg.size, exclusive=True,
          description="throughput of both models, with no other stage running"),
    Stage("finetune", stage_finetune, ("distill", "images"), lambda c: [_dump(c.cfg.finetune), c.cfg.tasks,
                                                               c.cfg.label_policy],
          enabled=lambda c: c.cfg.finetune.enabled),
    Stage("audit", stage_audit, ("probe_teacher", "probe_student", "finetune"),
          lambda c: [_dump(c.cfg.audit), c.cfg.attributes, c.cfg.tasks], cost=2),
    Stage("compare", stage_compare, ("audit",), lambda c: _dump(c.cfg.audit)),
    Stage("fairness", stage_fairness, ("embed",),
          lambda c: [_dump(c.cfg.fairness), c.cfg.tasks, c.cfg.label_policy],
          enabled=lambda c: c.cfg.fairness.enabled, cost=2),
    Stage("fair_distill", stage_fair_distill, ("embed", "images"), lambda c: _dump(_fair_distill_cfg(c)),
          enabled=lambda c: c.cfg.fair_distill.enabled, cost=4),
    Stage("pretraining", stage_pretraining, ("images",), lambda c: [_dump(c.cfg.pretraining), c.cfg.tasks],
          enabled=lambda c: c.cfg.pretraining.enabled, cost=5),
]
