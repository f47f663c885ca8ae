"""``cxrdistill fair`` and ``cxrdistill fair-seg``: compare fairness methods (ERM, resampling, GroupDRO, FIS, SWAD,
FairDi) over seeds, on frozen embeddings or images, and on segmentation masks. Thin: parse options, call
``cxrdistill.fairness``.

Settings come from the defaults, then ``--config FILE`` (a YAML :class:`~cxrdistill.fairness.run.FairRunConfig`),
then explicit options, then ``--set`` overrides: ``train.lr=3e-4`` (a TrainConfig field), ``fairdi.lam=0.9`` (a
method parameter), ``head=linear`` (a top-level key).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

_SET = typer.Option(None, "--set", help="override: train.lr=3e-4, fairdi.lam=0.9, head=linear (repeatable)")


def _csv(values: Optional[List[str]]) -> list[str]:
    return [t.strip() for v in (values or []) for t in v.split(",") if t.strip()]


def _build_config(config: Optional[Path], methods: list[str], seeds: Optional[str], select: Optional[str],
                  train: dict, sets: Optional[List[str]], extra: dict):
    """FairRunConfig from defaults < YAML < options < --set, with one-line errors."""
    import yaml
    from pydantic import ValidationError

    from cxrdistill.errors import InputError
    from cxrdistill.fairness import FAIR_METHODS
    from cxrdistill.fairness.run import FairRunConfig

    data: dict = {}
    if config is not None:
        from cxrdistill.storage.io import read_yaml_mapping

        data = read_yaml_mapping(config)
    if methods:
        data["methods"] = list(dict.fromkeys(methods))
    if seeds:
        try:
            data["seeds"] = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise InputError(f"--seeds {seeds!r} must be integers separated by commas", hint="e.g. --seeds 0,1,2") \
                from None
    if select:
        data["select"] = select
    data["train"] = dict(data.get("train") or {})
    data["train"].update({k: v for k, v in train.items() if v is not None})
    data.update({k: v for k, v in extra.items() if v is not None})
    for s in sets or []:
        key, eq, raw = s.partition("=")
        if not eq or not key.strip():
            raise InputError(f"--set {s!r} must look like KEY=VALUE", hint="e.g. --set fairdi.lam=0.9")
        value = yaml.safe_load(raw)
        head, _, rest = key.strip().partition(".")
        if rest and head == "train":
            data.setdefault("train", {})[rest] = value
        elif rest:
            if head not in FAIR_METHODS:
                raise InputError(f"--set {s!r}: {head!r} is neither 'train' nor a method",
                                 hint=f"methods: {', '.join(FAIR_METHODS.names())}")
            data.setdefault("method_params", {}).setdefault(head, {})[rest] = value
        else:
            data[head] = value
    for m in data.get("methods", []):
        FAIR_METHODS.get(m)  # an unknown method fails before any data is read
    from cxrdistill.training.trainer import TrainConfig

    for model, kwargs, prefix in ((FairRunConfig, data, ""), (TrainConfig, data.get("train") or {}, "train.")):
        try:  # misspelled keys (of the run or of the trainer) fail here, before any work
            obj = model(**kwargs)
        except ValidationError as e:
            err = e.errors()[0]
            where = prefix + ".".join(str(x) for x in err.get("loc", ()))
            raise InputError(f"invalid setting {where!r}: {err.get('msg')}", path=config) from None
        if model is FairRunConfig:
            cfg = obj
    return cfg


def fair(
    cohort: Path = typer.Option(..., "--cohort", help="cohort table (Parquet/CSV) with a split column"),
    attribute: str = typer.Option(..., "--attribute", "-a", help="sensitive attribute column (sex, race, age, …)"),
    tasks: List[str] = typer.Option(..., "--tasks", help="label columns, comma-separated (repeatable)"),
    out: Path = typer.Option(..., "--out", help="output directory"),
    method: Optional[List[str]] = typer.Option(None, "--method", "-m",
                                               help="erm | resample | groupdro | fis | swad | fairdi (repeat) "
                                                    "[erm, fairdi]"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="comma-separated seeds [0,1,2]"),
    embeddings: Optional[Path] = typer.Option(None, "--embeddings", help="embedding store (fast path: heads)"),
    images_root: Optional[Path] = typer.Option(None, "--images-root", help="train on images under this root"),
    size: int = typer.Option(64, "--size", min=8, help="image size in px (images only)"),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="timm backbone for images [resnet10t]"),
    head: Optional[str] = typer.Option(None, "--head", help="head on embeddings: linear | mlp [mlp]"),
    label_policy: str = typer.Option("u-ignore", "--label-policy", help="u-ignore | u-zeros | u-ones | a mix"),
    label_source: str = typer.Option("observed", "--label-source", help="observed | true (synthetic ground truth)"),
    select: Optional[str] = typer.Option(None, "--select", help="model selection: auc | worst | dto [auc]"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="epochs per training stage [10]"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    lr: Optional[float] = typer.Option(None, "--lr"),
    age_bins: Optional[str] = typer.Option(None, "--age-bins", help="age bin edges, e.g. 40,60,80"),
    split_seed: int = typer.Option(0, "--split-seed", help="seed of the patient split when the cohort has none"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="image cache root [$CXRDISTILL_CACHE]"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML run config (FairRunConfig keys)"),
    set_: Optional[List[str]] = _SET,
    quiet: bool = typer.Option(False, "--quiet", help="no progress messages"),
) -> None:
    """Compare fairness methods over seeds → OUT/fair_results.parquet, fair_table.csv/.md, fair.json, pareto.png."""
    from cxrdistill.errors import InputError
    from cxrdistill.fairness import data as D
    from cxrdistill.fairness.run import run_fair

    if (embeddings is None) == (images_root is None):
        raise InputError("give exactly one of --embeddings STORE or --images-root DIR")
    cfg = _build_config(config, _csv(method), seeds, select,
                        {"epochs": epochs, "batch_size": batch_size, "lr": lr}, set_,
                        {"head": head, "backbone": backbone})
    bins = [float(x) for x in age_bins.split(",")] if age_bins else None
    df = D.load_cohort(cohort)
    common = dict(label_policy=label_policy, label_source=label_source, age_bins=bins, split_seed=split_seed,
                  cohort_path=cohort)
    if embeddings is not None:
        data = D.from_embeddings(df, embeddings, _csv(tasks), attribute, **common)
    else:
        data = D.from_images(df, images_root, size, _csv(tasks), attribute, cache_dir=cache_dir, **common)
    log = (lambda s: None) if quiet else (lambda s: typer.echo(s, err=True))
    for n in data.notes:
        log(f"note: {n}")
    res = run_fair(data, cfg, out, device=device, log=log)
    typer.echo((out / "fair_table.md").read_text(encoding="utf-8"))
    typer.echo(f"wrote {out}/fair_results.parquet, fair_table.csv/.md, fair.json, pareto.png "
               f"({len(res['tidy'])} result rows)")


def fair_seg(
    cohort: Path = typer.Option(..., "--cohort", help="cohort table with mask columns (synth_mask_lung, …)"),
    images_root: Path = typer.Option(..., "--images-root", help="root of the image and mask paths"),
    attribute: str = typer.Option(..., "--attribute", "-a", help="sensitive attribute column"),
    out: Path = typer.Option(..., "--out", help="output directory"),
    structures: str = typer.Option("lung,heart", "--structures", help="mask structures, comma-separated"),
    method: Optional[List[str]] = typer.Option(None, "--method", "-m", help="fairness method (repeat) [erm, fairdi]"),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="comma-separated seeds [0,1,2]"),
    size: int = typer.Option(64, "--size", min=8, help="image size in px (multiple of 8)"),
    base: int = typer.Option(16, "--base", min=4, help="U-Net channels at the first level"),
    select: Optional[str] = typer.Option(None, "--select", help="model selection: auc (= overall Dice) | worst | dto"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    lr: Optional[float] = typer.Option(None, "--lr"),
    age_bins: Optional[str] = typer.Option(None, "--age-bins", help="age bin edges, e.g. 40,60,80"),
    split_seed: int = typer.Option(0, "--split-seed"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="image cache root [$CXRDISTILL_CACHE]"),
    device: str = typer.Option("auto", "--device"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML run config (FairRunConfig keys)"),
    set_: Optional[List[str]] = _SET,
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Segmentation (small U-Net) by fairness method: Dice per group, Dice gap, ES-Dice → OUT/seg_*."""
    from cxrdistill.fairness import data as D
    from cxrdistill.fairness.segmentation import run_seg, seg_data_from_cohort

    cfg = _build_config(config, _csv(method), seeds, select,
                        {"epochs": epochs, "batch_size": batch_size, "lr": lr}, set_, {})
    bins = [float(x) for x in age_bins.split(",")] if age_bins else None
    df = D.load_cohort(cohort)
    data = seg_data_from_cohort(df, images_root, size, attribute, _csv([structures]), cache_dir=cache_dir,
                                age_bins=bins, split_seed=split_seed, cohort_path=cohort)
    log = (lambda s: None) if quiet else (lambda s: typer.echo(s, err=True))
    for n in data.notes:
        log(f"note: {n}")
    run_seg(data, cfg, out, base=base, device=device, log=log)
    typer.echo((out / "seg_table.md").read_text(encoding="utf-8"))
    typer.echo(f"wrote {out}/seg_results.parquet, seg_table.csv/.md, seg.json, seg_pareto.png")


def register(app: typer.Typer) -> None:
    app.command("fair")(fair)
    app.command("fair-seg")(fair_seg)
