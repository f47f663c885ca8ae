"""Fair segmentation (the FairDi paper applies it to segmentation too): a small U-Net, per-image Dice, the ``seg`` task
that lets every fairness method (ERM, GroupDRO, FIS, SWAD, FairDi with pixel-wise KD, …) train a segmenter, and the
runner behind ``cxrdistill fair-seg``.

Dice of one image and structure: 2|P ∩ G| / (|P| + |G|) with P = sigmoid(logit) > 0.5 (1 when both are empty).
Per group: the mean Dice of its images; Dice gap = max − min over groups; ES-Dice = Dice / (1 + Σ_g |Dice − Dice_g|)
(the equity scaling of FairVision's ES-AUC, as in FairDi's segmentation tables); PSD = std of the group Dice.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from cxrdistill.errors import InputError
from cxrdistill.evaluation.attribute_groups import group_labels
from cxrdistill.fairness.base import FAIR_METHODS
from cxrdistill.fairness.data import SPLITS, _fingerprint, patient_split
from cxrdistill.fairness.datasets import iterate_batches
from cxrdistill.fairness.metrics import OVERALL, SUMMARY
from cxrdistill.fairness.report import markdown_table, pareto_plot, per_seed, summarize
from cxrdistill.fairness.tasks import FAIR_TASKS
from cxrdistill.images.preprocess import MEAN, STD
from cxrdistill.storage.checkpoint import save_weights
from cxrdistill.storage.io import atomic_open, clean_json, write_json, write_parquet, write_table
from cxrdistill.training.data import ArrayDataset
from cxrdistill.training.inputs import image_cache
from cxrdistill.training.methods.supervised import logits_of
from cxrdistill.training.run_dir import open_run
from cxrdistill.training.trainer import TrainConfig


# ------------------------------------------------------------------------------------------------------ model
def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A small U-Net (Ronneberger et al. 2015): ``depth`` down/up levels from ``base`` channels; logits (B, C, H, W).
    H and W must be divisible by 2**depth."""

    def __init__(self, in_chans: int = 1, n_classes: int = 2, base: int = 16, depth: int = 3):
        super().__init__()
        self.config = dict(in_chans=in_chans, n_classes=n_classes, base=base, depth=depth)
        chans = [base * 2 ** i for i in range(depth + 1)]
        self.enc = nn.ModuleList()
        c = in_chans
        for ch in chans[:-1]:
            self.enc.append(_block(c, ch))
            c = ch
        self.bottleneck = _block(c, chans[-1])
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for ch in reversed(chans[:-1]):
            self.up.append(nn.ConvTranspose2d(ch * 2, ch, 2, stride=2))
            self.dec.append(_block(ch * 2, ch))
        self.out = nn.Conv2d(base, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for enc in self.enc:
            x = enc(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.out(x)


# ------------------------------------------------------------------------------------------------------ metric
def dice_per_image(pred, target) -> np.ndarray:
    """Dice of every image and channel (N, C) of binary masks (N, C, H, W); 1 where both masks are empty."""
    p = torch.as_tensor(pred).bool().flatten(2)
    t = torch.as_tensor(target).bool().flatten(2)
    inter = (p & t).sum(-1).double()
    den = (p.sum(-1) + t.sum(-1)).double()
    return torch.where(den > 0, 2 * inter / den.clamp_min(1), torch.ones_like(den)).numpy()


def group_summary(values: np.ndarray, groups: np.ndarray, group_names: Sequence[str]) -> dict[str, Any]:
    """Overall mean, per-group means, worst group, gap, ES-score and PSD of a per-image score."""
    v = np.asarray(values, dtype=float)
    g = np.asarray(groups, dtype=object)
    overall = float(np.mean(v)) if v.size else float("nan")
    per = {str(n): (float(np.mean(v[g == n])) if (g == n).any() else None) for n in group_names}
    vals = np.array([x for x in per.values() if x is not None])
    if not vals.size:
        return {"score": overall, "groups": per, "worst": np.nan, "gap": np.nan, "es": np.nan, "psd": np.nan}
    return {"score": overall, "groups": per, "worst": float(vals.min()), "gap": float(vals.max() - vals.min()),
            "es": float(overall / (1 + np.abs(vals - overall).sum())), "psd": float(vals.std())}


@FAIR_TASKS.register("seg")
class SegmentationTask:
    """Multi-structure segmentation: per-image BCE + soft-Dice loss; scored by Dice (threshold 0.5)."""

    metric = "dice"

    def per_sample_loss(self, logits, y):
        y = y.to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none").flatten(1).mean(1)
        p = torch.sigmoid(logits).flatten(2)
        t = y.flatten(2)
        soft = (2 * (p * t).sum(-1) + 1.0) / (p.sum(-1) + t.sum(-1) + 1.0)
        return bce + (1.0 - soft).mean(1)

    def mean_loss(self, logits, y):
        return self.per_sample_loss(logits, y).mean()

    def evaluate(self, model, batches, n_groups: int) -> dict[str, Any]:
        losses, dices, gs = [], [], []
        for b in batches:
            lg = logits_of(model(b["x"])).float()
            losses.append(self.per_sample_loss(lg, b["y"]).cpu())
            dices.append(dice_per_image((lg > 0).cpu(), (b["y"] > 0.5).cpu()).mean(1))
            if "g" in b:
                gs.append(b["g"].cpu().numpy())
        if not dices:
            return {"loss": np.nan, "score": np.nan, "worst": np.nan, "gap": np.nan, "groups": [np.nan] * n_groups}
        d = np.concatenate(dices)
        g = np.concatenate(gs) if gs else np.zeros(len(d), dtype=np.int64)
        s = group_summary(d, g, list(range(n_groups)))
        return {"loss": float(torch.cat(losses).mean()), "score": s["score"], "worst": s["worst"], "gap": s["gap"],
                "groups": [np.nan if s["groups"][str(k)] is None else s["groups"][str(k)] for k in range(n_groups)]}


# ------------------------------------------------------------------------------------------------------ data
@dataclass
class SegData:
    train: Any
    val: Any
    test: Any
    structures: list[str]
    attribute: str
    group_names: list[str]
    test_ids: list[str]
    test_groups: np.ndarray
    size: int
    fingerprint: str
    notes: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)


def load_mask(path: Path, size: int) -> np.ndarray:
    """A mask PNG (any bit depth; > half of its maximum = inside) resized to size×size by nearest neighbour."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("L"), dtype=np.uint8)
    except FileNotFoundError:
        raise InputError("mask file not found", path=path, hint="check --images-root and the mask columns") from None
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"mask is not a readable image ({e})", path=path) from None
    if a.shape != (size, size):
        a = np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.NEAREST))
    return a > 127


def mask_column(df: pd.DataFrame, structure: str, path: object = None) -> str:
    for c in (f"synth_mask_{structure}", f"mask_{structure}"):
        if c in df.columns:
            return c
    raise InputError(f"no mask column for {structure!r} (looked for synth_mask_{structure}, mask_{structure})",
                     path=path, hint="synthetic cohorts carry synth_mask_lung and synth_mask_heart")


def seg_data_from_arrays(images: np.ndarray, masks: np.ndarray, frame: pd.DataFrame, structures: Sequence[str],
                         attribute: str, group_names: Sequence[str], notes: list[str], fingerprint: str) -> SegData:
    """Datasets from uint8 images (N, H, W), binary masks (N, C, H, W) and a frame with ``_split``/``_g``."""
    x = (torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0).sub_(MEAN).div_(STD)).unsqueeze(1)
    y = torch.from_numpy(np.ascontiguousarray(masks)).float()
    g = torch.from_numpy(np.array(frame["_g"], dtype=np.int64))
    split = frame["_split"].to_numpy()
    ds = {}
    for s in ("train", "val", "test"):
        idx = torch.from_numpy(np.flatnonzero(split == s))
        ds[s] = ArrayDataset(x=x[idx], y=y[idx], g=g[idx])
    te = split == "test"
    counts = {s: {n: int(((split == s) & (frame["_group"].to_numpy() == n)).sum()) for n in group_names}
              for s in ("train", "val", "test")}
    return SegData(ds["train"], ds["val"], ds["test"], list(structures), attribute, list(group_names),
                   frame.loc[te, "image_id"].astype(str).tolist(), frame.loc[te, "_group"].to_numpy(dtype=object),
                   int(images.shape[-1]), fingerprint, notes, counts)


def seg_data_from_cohort(df: pd.DataFrame, images_root: str | Path, size: int, attribute: str,
                         structures: Sequence[str] = ("lung", "heart"), *, cache_dir: str | Path | None = None,
                         age_bins=None, split_seed: int = 0, workers: int = 2, cohort_path: object = None) -> SegData:
    """Images through the uint8 cache, masks from the cohort's mask columns (paths relative to ``images_root``)."""
    notes: list[str] = []
    if attribute not in df.columns:
        raise InputError("attribute column not found", path=cohort_path, column=attribute)
    if size % 8:
        raise InputError(f"--size {size} must be a multiple of 8 for the U-Net")
    cols = [mask_column(df, s, cohort_path) for s in structures]
    df = df.reset_index(drop=True)
    labels = group_labels(df[attribute], attribute, bins=tuple(age_bins) if age_bins else None, path=cohort_path)
    split = df["split"] if "split" in df.columns and df["split"].notna().any() else None
    if split is None:
        split = patient_split(df, split_seed)
        notes.append("the cohort has no split: patients split 70/10/20 (seeded by --split-seed)")
    keep = labels.notna().to_numpy() & split.isin(SPLITS).to_numpy()
    for c in cols:
        keep = keep & df[c].notna().to_numpy()
    if (~keep).any():
        notes.append(f"{int((~keep).sum())} row(s) without attribute, split or mask left out")
    frame = df.loc[keep].reset_index(drop=True)
    frame["_split"] = split[keep].to_numpy()
    frame["_group"] = labels[keep].to_numpy()
    names = sorted(frame["_group"].unique())
    frame["_g"] = frame["_group"].map({n: i for i, n in enumerate(names)}).astype(np.int64)
    for s in SPLITS:
        if not (frame["_split"] == s).any():
            raise InputError(f"no {s} rows", path=cohort_path, column="split",
                             hint="split the cohort with `cxrdistill cohort split`")
    cache = image_cache(frame[["image_id", "path"]], images_root, int(size), cache_dir, workers=workers,
                        progress=False)
    images = np.asarray(cache.array[cache.index_of(frame["image_id"].tolist())])
    root = Path(images_root)
    masks = np.stack([np.stack([load_mask(root / str(p), int(size)) for p in frame[c]]) for c in cols], axis=1)
    fp = _fingerprint({"root": str(root.resolve()), "size": int(size), "structures": list(structures),
                       "attribute": attribute, "split": frame["_split"].tolist()}, frame["image_id"].tolist())
    return seg_data_from_arrays(images, masks.astype(np.uint8), frame, structures, attribute, names, notes, fp)


# ------------------------------------------------------------------------------------------------------ runner
def seg_tidy_rows(dice: np.ndarray, groups: np.ndarray, structures: Sequence[str], group_names: Sequence[str],
                  **keys: Any) -> list[dict[str, Any]]:
    """Tidy rows per structure: overall and per-group Dice, then worst-group Dice, Dice gap, ES-Dice, PSD."""
    rows = []
    g = np.asarray(groups, dtype=object)
    for c, st in enumerate(structures):
        s = group_summary(dice[:, c], g, group_names)

        def add(group, metric, value, n):
            rows.append({**keys, "task": st, "group": group, "metric": metric,
                         "value": float("nan") if value is None else float(value), "n": int(n)})

        add(OVERALL, "dice", s["score"], len(g))
        for n in group_names:
            add(str(n), "dice", s["groups"][str(n)], int((g == n).sum()))
        for m, k in (("worst_group_dice", "worst"), ("dice_gap", "gap"), ("es_dice", "es"), ("psd", "psd")):
            add(SUMMARY, m, s[k], len(g))
    return rows


def run_seg(data: SegData, cfg, out: str | Path, *, base: int = 16, depth: int = 3, device: str = "auto",
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Seeds × methods on a segmentation task → ``seg_results.parquet``, ``seg_table.csv/.md``, ``seg.json``,
    ``seg_pareto.png`` (``cfg`` is a :class:`~cxrdistill.fairness.run.FairRunConfig`)."""
    out = Path(out)
    for m in cfg.methods:
        FAIR_METHODS.get(m)
    rows, infos = [], []
    for seed in cfg.seeds:
        for method in cfg.methods:
            params = cfg.method_params.get(method, {})
            tcfg = TrainConfig(**{"progress": False, "device": device, **cfg.train, "seed": int(seed)})
            res_path = out / "dice" / f"{method}_seed{seed}.parquet"
            run = open_run(out / "runs" / method / f"seed{seed}", "fair-seg",
                           {"method": method, "params": params, "train": tcfg.model_dump(), "select": cfg.select,
                            "unet": [base, depth]}, {"data": data.fingerprint}, summary="result.json",
                           on_change="restart", exclusive=True, is_done=lambda info: res_path.exists())
            rd = run.dir
            if run.done is not None:
                info = run.done
                dice = pd.read_parquet(res_path)[[f"dice_{s}" for s in data.structures]].to_numpy()
                log(f"[fair-seg] {method} seed {seed}: done before, reusing {res_path}")
            else:
                torch.manual_seed(int(seed))
                model = UNet(1, len(data.structures), base, depth)
                meth = FAIR_METHODS.create(method, **{"task": "seg", "select": cfg.select, **params})
                log(f"[fair-seg] {method} seed {seed}: training")
                t0 = time.perf_counter()
                res = meth.fit(model, data.train, data.val, tcfg, run_dir=rd, log=lambda s: None)
                dev = next(res.model.parameters()).device
                res.model.eval()
                dl = []
                with torch.no_grad():
                    for b in iterate_batches(data.test, 64):
                        lg = res.model(b["x"].to(dev)).float().cpu()
                        dl.append(dice_per_image(lg > 0, b["y"] > 0.5))
                dice = np.concatenate(dl)
                save_weights(res.model.state_dict(), rd / "final.safetensors", {"unet": res.model.config})
                write_parquet(pd.DataFrame({"image_id": data.test_ids, data.attribute: data.test_groups,
                                            **{f"dice_{s}": dice[:, c] for c, s in enumerate(data.structures)}}),
                              res_path)
                info = run.finish({"key": run.key, "method": method, "seed": int(seed),
                                   "seconds": time.perf_counter() - t0, "info": res.info})
            infos.append(info)
            rows += seg_tidy_rows(dice, data.test_groups, data.structures, data.group_names, seed=int(seed),
                                  method=method, labels="masks", attribute=data.attribute)
    tidy = pd.DataFrame(rows)
    write_parquet(tidy, out / "seg_results.parquet")
    ps = per_seed(tidy, "masks", data.group_names, score="dice")
    table, js = summarize(ps, cfg.baseline, metrics=("dice", "worst_group_dice", "dice_gap", "es_dice"))
    write_table(table, out / "seg_table.csv")
    with atomic_open(out / "seg_table.md", encoding="utf-8") as fh:
        fh.write(markdown_table(table, data.group_names, cfg.baseline, score="dice",
                                title=f"Segmentation Dice ({', '.join(data.structures)}), attribute {data.attribute}"))
        fh.write(f"\nPer seed, Dice is the mean over structures; mean ± std over seeds "
                 f"{', '.join(map(str, cfg.seeds))}; test against {cfg.baseline}: two-sided paired t-test across "
                 "seeds (scipy.stats.ttest_rel).\n")
    write_json(clean_json(js), out / "seg.json")
    pareto_plot(ps, out / "seg_pareto.png", score="dice", title=f"{data.attribute}: Dice vs gap")
    write_json(clean_json({"attribute": data.attribute, "groups": data.group_names, "counts": data.counts,
                           "structures": data.structures, "notes": data.notes, "config": cfg.model_dump(),
                           "runs": infos}), out / "seg_config.json")
    return {"tidy": tidy, "per_seed": ps, "table": table, "json": js}
