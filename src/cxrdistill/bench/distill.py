"""Distillation benchmarks, side by side in one run:

* the mean AUC retention of a linear probe on the student's embeddings vs one on the teacher's, on synthetic
  downstream cohorts: against the size of an unlabelled distillation pool (0, 1, 3, 10 × the labelled train split,
  every point at the same training budget), and over several seeds (each its own cohort, pool and student: mean ± sd);
* student vs teacher inference speed-up at equal resolution (1 thread each, median of interleaved rounds), per seed;
* the shared trainer's training throughput vs a bare PyTorch loop on the same model and data (goal ≥ 0.95).

The teacher is the default of ``cxrdistill teacher pretrain`` (resnet18, 64 px), pretrained here on its own synthetic
cohort; the student is the CPU default (mobilenetv3_small_050) distilled with the default loss (MSE + cosine).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from cxrdistill.bench.rounds import paired_rounds

STUDENT = "mobilenetv3_small_050"
#: intra-op threads for every timing (the goal is stated for 2; on an oversubscribed machine OpenMP threads that
#: wait for each other make 2 threads far slower than 1 — set CXRDISTILL_BENCH_THREADS=1 there)
THREADS = int(os.environ.get("CXRDISTILL_BENCH_THREADS", "2"))


def _row(name, value, unit, goal="", note=""):
    return {"name": name, "value": value, "unit": unit, "goal": goal, "note": note}


# ------------------------------------------------------------------------------------------------ trainer vs bare
def _trainer_vs_bare(quick: bool) -> list[dict]:
    import torch

    from cxrdistill.losses.kd import build_kd_loss
    from cxrdistill.models.students import create_student
    from cxrdistill.training.inputs import ImageBatches
    from cxrdistill.training.methods.distill import Distill, DistillModel
    from cxrdistill.training.trainer import Trainer, TrainConfig

    n, size, bs, epochs, dim, rounds = (128, 48, 32, 1, 256, 4) if quick else (1024, 64, 64, 2, 512, 9)
    rng = np.random.default_rng(0)
    data = ImageBatches(rng.integers(0, 255, (n, size, size), dtype=np.uint8),
                        t=rng.normal(size=(n, dim)).astype(np.float32))

    def model():
        torch.manual_seed(0)
        return DistillModel(create_student(STUDENT, (dim,)), build_kd_loss("mse_cosine", dim=dim), (dim,))

    cfg = TrainConfig(epochs=epochs, batch_size=bs, lr=1e-3, schedule="cosine", progress=False, device="cpu")

    def with_trainer() -> int:
        with tempfile.TemporaryDirectory() as d:
            Trainer(model(), Distill(), data, None, cfg, run_dir=d).fit()  # with its per-epoch checkpoints
        return n * epochs

    def bare() -> int:
        import math

        m = model().train()
        opt = torch.optim.AdamW(m.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = epochs * math.ceil(n / bs)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
        for e in range(epochs):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(e))
            for s in range(0, n, bs):
                b = data.get_batch(order[s:s + bs])
                loss = m(b["x"], t=b["t"])["kd_loss"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                float(loss.detach())  # a bare loop logs its loss too
        return n * epochs

    old = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        bare()  # warm-up (allocator, kernels), not timed
        p = paired_rounds(with_trainer, bare, rounds)
    finally:
        torch.set_num_threads(old)
    med, q25, q75 = p.summary("wall")
    return [_row("trainer / bare PyTorch loop (training throughput)", round(med, 3), "ratio", "≥ 0.95",
                 f"median of {rounds} interleaved rounds (IQR {q25:.3f}–{q75:.3f}); CPU time per image: "
                 f"{p.describe('cpu')}; distill step of {STUDENT} at {size} px, batch {bs}, {n} images × {epochs} "
                 f"epochs, {THREADS} threads; trainer {p.rate('a'):.0f} img/s (with per-epoch checkpoints, written "
                 f"by a background thread), bare {p.rate('b'):.0f} img/s; load average {os.getloadavg()[0]:.1f}")]


# ------------------------------------------------------------------------------------------------ retention
def _split(meta, seed: int = 0):
    """Patient-level 60/20/20 train/val/test split (seeded)."""
    pats = meta["patient_id"].astype(str).unique()
    r = np.random.default_rng(seed).random(len(pats))
    lab = dict(zip(pats, np.where(r < 0.6, "train", np.where(r < 0.8, "val", "test"))))
    return meta["patient_id"].astype(str).map(lab)


#: sizes of the retention experiments: full (make bench) and quick (a smoke test of the harness, not meaningful).
#: ``n``: labelled images per seed; ``pools``: unlabelled pool sizes as multiples of the labelled train split, each
#: distilled at the same budget (``epochs`` passes over the train split's worth of images); ``curve_seeds`` run every
#: pool size, the other ``seeds`` only the first two (the spread of the headline numbers).
FULL = dict(size=64, teacher_n=3000, teacher_epochs=4, n=1200, epochs=20, pools=(0, 1, 3, 10), seeds=(0, 1, 2),
            curve_seeds=(0,))
QUICK = dict(size=32, teacher_n=300, teacher_epochs=1, n=240, epochs=2, pools=(0, 1), seeds=(0, 1), curve_seeds=(0,))


def _write_images(root: Path, images, meta, prefix: str = ""):
    from PIL import Image

    meta = meta.copy()
    paths = []
    for k, a in enumerate(images):
        p = f"img/{prefix}{k:06d}.png"
        Image.fromarray(a).save(root / p, compress_level=1)
        paths.append(p)
    meta["path"] = paths
    return meta


def _seed_data(root: Path, teacher, z: dict, seed: int, pool_factor: int):
    """A labelled cohort (scenario ``mixed``) and an unlabelled pool of ``pool_factor`` × its train split, rendered
    with this seed, embedded once by the teacher into one store."""
    import pandas as pd

    from cxrdistill import synth
    from cxrdistill.storage.store import EmbeddingStore

    size = z["size"]
    (root / "img").mkdir(parents=True)
    images, meta = synth.render_batch(z["n"], size, seed=2024 + seed, scenario="mixed", workers=2)
    meta = _write_images(root, images, meta)
    meta["split"] = _split(meta, seed).to_numpy()
    n_train = int((meta["split"] == "train").sum())
    parts, arrays = [meta], [images]
    if pool_factor:
        pimg, pmeta = synth.render_batch(pool_factor * n_train, size, seed=9024 + seed, scenario="mixed", workers=2)
        pmeta = _write_images(root, pimg, pmeta, prefix="pool")
        keep = [c for c in ("image_id", "patient_id", "path", "sex", "race", "age", "view") if c in pmeta.columns]
        pmeta = pmeta[keep].assign(image_id="pool/" + pmeta["image_id"], patient_id="pool/" + pmeta["patient_id"],
                                   split="pool")
        parts.append(pmeta)
        arrays.append(pimg)
    df = pd.concat(parts, ignore_index=True)
    store = EmbeddingStore.create(root / "teacher_store", teacher.info.embedding_shape, "float32",
                                  teacher.info.to_dict())
    store.append(df["image_id"].astype(str).tolist(), teacher.embed(np.concatenate(arrays)))
    return df, n_train


def _distil_and_probe(root: Path, df, n_pool: int, n_train: int, z: dict, tag: str) -> dict:
    """Distil on the labelled train split plus the first ``n_pool`` pool rows at the fixed budget; probe the
    student's embeddings (linear head, test split)."""
    from cxrdistill.training.run_config import load_config
    from cxrdistill.training.runs import run_distill, run_probe

    import pandas as pd

    table = pd.concat([df[df["split"] != "pool"], df[df["split"] == "pool"].iloc[:n_pool]], ignore_index=True)
    cohort = root / f"cohort_{tag}.parquet"
    table.to_parquet(cohort, index=False)
    epochs = max(1, round(z["epochs"] * n_train / (n_train + n_pool)))
    dcfg = load_config("distill", options={"size": z["size"], "train.epochs": epochs, "train.progress": False})
    t0 = time.perf_counter()
    run_distill(dcfg, cohort, root, root / "teacher_store", root / f"distill_{tag}", cache_dir=root / "cache",
                quiet=True)
    seconds = time.perf_counter() - t0
    pcfg = load_config("probe", options={"train.progress": False, "eval.n_boot": 200})
    ps = run_probe(pcfg, cohort, root / f"probe_{tag}", model=root / f"distill_{tag}" / "student.safetensors",
                   images_root=root, cache_dir=root / "cache", quiet=True)
    return {"student": ps["splits"]["test"], "epochs": epochs, "samples": epochs * (n_train + n_pool),
            "seconds": seconds, "model": root / f"distill_{tag}" / "student.safetensors"}


def _mean_sd(values) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return "n/a"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def _retention(quick: bool, root: Path, sizes: dict | None = None) -> list[dict]:
    """Retention against the unlabelled pool's size (the curve), and retention and speed-up over seeds (spread)."""
    from cxrdistill.models.network import load_model
    from cxrdistill.models.speed import compare_speed
    from cxrdistill.teachers.local import torch_teacher
    from cxrdistill.teachers.pretrain import TeacherPretrainConfig, pretrain_teacher
    from cxrdistill.training.run_config import load_config
    from cxrdistill.training.runs import run_probe

    z = {**(QUICK if quick else FULL), **(sizes or {})}
    size = z["size"]
    t0 = time.perf_counter()
    pcfg = TeacherPretrainConfig(n=z["teacher_n"], size=size, epochs=z["teacher_epochs"], workers=1 if quick else 2,
                          val_fraction=0.0 if quick else 0.1)
    pretrain_teacher(root / "teacher.safetensors", pcfg, progress=False)
    t_teacher = time.perf_counter() - t0
    teacher = torch_teacher(str(root / "teacher.safetensors"), image_size=size)
    tnet, _ = load_model(root / "teacher.safetensors")
    tag = "quick mode: tiny, not meaningful; " if quick else ""
    pools = list(z["pools"])
    runs = []  # one row per (seed, pool factor)
    gaps = []  # the ERM head's race AUC gap on the teacher's embeddings, per seed
    for seed in z["seeds"]:
        factors = pools if seed in z["curve_seeds"] else pools[:2]
        d = root / f"seed{seed}"
        df, n_train = _seed_data(d, teacher, z, seed, max(factors))
        labelled = df[df["split"] != "pool"]
        labelled.to_parquet(d / "labelled.parquet", index=False)
        pt = run_probe(load_config("probe", options={"train.progress": False, "eval.n_boot": 200}),
                       d / "labelled.parquet", d / "probe_teacher", embeddings=d / "teacher_store", quiet=True)
        ta, tt = pt["splits"]["test"]["observed"]["mean_auc"], (pt["splits"]["test"].get("true") or {}).get("mean_auc")
        gaps.append(_erm_race_gap(labelled, d / "teacher_store", d / "fair", quick))
        for f in factors:
            r = _distil_and_probe(d, df, f * n_train, n_train, z, f"pool{f}")
            sa = r["student"]["observed"]["mean_auc"]
            st = (r["student"].get("true") or {}).get("mean_auc")
            sp = compare_speed(tnet, load_model(r["model"])[0], size, threads=1, min_time=0.2 if quick else 0.5,
                               repeats=3 if quick else 5) if f == factors[0] else None
            runs.append({"seed": seed, "pool": f, "n_train": n_train, "teacher": ta, "student": sa,
                         "retention": sa / ta, "retention_true": st / tt if st and tt else None,
                         "speedup": sp["speedup"] if sp else None, "epochs": r["epochs"], "samples": r["samples"],
                         "seconds": r["seconds"], "n_test": r["student"]["n"]})
    rows = []
    curve = [r for r in runs if r["seed"] in z["curve_seeds"]]
    budget = f"{z['epochs']} epochs of the {curve[0]['n_train']}-image train split" if curve else ""
    for r in curve:
        rows.append(_row(f"retention, distilled on train + a pool of {r['pool']}× train (observed labels)",
                         round(r["retention"], 4), "ratio", "≥ 0.97" if r["pool"] == pools[-1] else "",
                         f"{tag}seed {r['seed']}; same budget ({budget}): {r['epochs']} epochs over "
                         f"{r['n_train'] * (1 + r['pool'])} images in {r['seconds']:.0f} s; "
                         f"teacher {r['teacher']:.3f}, student {r['student']:.3f}; "
                         f"true labels {r['retention_true'] or float('nan'):.3f}; test n={r['n_test']}"))
    for f in pools[:2]:
        sel = [r for r in runs if r["pool"] == f]
        values = ", ".join(f"{r['retention']:.3f}" for r in sel)
        rows.append(_row(f"retention over {len(sel)} seeds, pool {f}× train (mean ± sd; observed / true labels)",
                         _mean_sd(r["retention"] for r in sel), "ratio", "≥ 0.97",
                         f"{tag}true labels {_mean_sd(r['retention_true'] for r in sel)}; each seed its own cohort, "
                         f"pool and student; values {values}"))
    sps = [r["speedup"] for r in runs if r["speedup"] is not None]
    sp_values = ", ".join(f"{v:.1f}" for v in sps)
    rows.append(_row(f"student speed-up vs teacher over {len(sps)} seeds (mean ± sd)", _mean_sd(sps), "×", "≥ 10",
                     f"{tag}{size} px, batch 64, 1 thread each; each seed's speed-up is the median of interleaved "
                     f"rounds, each model in its faster memory layout; teacher resnet18, student {STUDENT}; values "
                     f"{sp_values}; teacher pretrain {t_teacher:.0f} s"))
    rows.append(_row(f"ERM race AUC gap on the teacher's embeddings over {len(gaps)} seeds (mean ± sd)",
                     _mean_sd(gaps), "AUC", "",
                     f"{tag}the fairness stage's default head, one training seed per cohort seed; the demo's "
                     f"findings, u-ones, scenario mixed; values "
                     f"{', '.join(f'{g:.3f}' for g in gaps)}"))
    return rows


def _erm_race_gap(df, store: Path, out: Path, quick: bool) -> float:
    """The race AUC gap (mean over findings) of an ERM head on the teacher's frozen embeddings."""
    from cxrdistill.fairness.data import from_embeddings
    from cxrdistill.fairness.run import FairRunConfig, run_fair

    tasks = ["pleural_effusion", "cardiomegaly", "pneumothorax", "edema", "consolidation", "support_devices"]
    data = from_embeddings(df, store, tasks, "race", label_policy="u-ones")
    cfg = FairRunConfig.model_validate({"methods": ["erm"], "seeds": [0], "train": {"epochs": 2 if quick else 10}})
    res = run_fair(data, cfg, out, log=lambda m: None)
    fj = res["json"]
    return float((fj.get("methods") or fj)["erm"]["auc_gap"])


def run(quick: bool = False) -> list[dict]:
    rows = _trainer_vs_bare(quick)
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as d:
        rows += _retention(quick, Path(d))
    return rows


SECTIONS = {"trainer": _trainer_vs_bare}

if __name__ == "__main__":  # python -m cxrdistill.bench.distill [--quick] [trainer]: the whole area or one section
    import json
    import sys

    fn = next((SECTIONS[a] for a in sys.argv[1:] if a in SECTIONS), run)
    print(json.dumps(fn(quick="--quick" in sys.argv), indent=1))
