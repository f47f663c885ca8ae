"""``cxrdistill fair run`` and ``cxrdistill fair seg``: compare fairness methods (ERM, resampling, GroupDRO, FIS, SWAD,
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

from cxrdistill.commands import _common as C

_SET = typer.Option(None, "--set", help="override: train.lr=3e-4, fairdi.lam=0.9, head=linear (repeatable)")
_FRESH = typer.Option(False, "--fresh", help="Retrain every (method, seed) instead of reusing finished ones in OUT.")
_EPOCHS = typer.Option(None, "--epochs", min=1, help="epochs per training stage [10]")
_BATCH_SIZE = typer.Option(None, "--batch-size", min=1, help="training batch size [64]")
_LR = typer.Option(None, "--lr", help="learning rate [1e-3]")
_SPLIT_SEED = typer.Option(0, "--split-seed", help="seed of the patient split when the cohort has none")
_CACHE = typer.Option(None, "--cache-dir", help="image cache root [$CXRDISTILL_CACHE]")
_CONFIG = typer.Option(None, "--config", help="YAML run config (FairRunConfig keys)")
DOCS = "docs/fairness.md"
#: the options both comparisons take, after their own: training length, age groups, split, cache, device, where the
#: settings come from, and how a re-run starts
_RUN = {"epochs": (Optional[int], _EPOCHS), "batch_size": (Optional[int], _BATCH_SIZE), "lr": (Optional[float], _LR),
        "age_bins": (Optional[str], C.age_bins_option()), "split_seed": (int, _SPLIT_SEED),
        "cache_dir": (Optional[Path], _CACHE), "device": (str, C.device_option()), "config": (Optional[Path], _CONFIG),
        "set_": (Optional[List[str]], _SET), "fresh": (bool, _FRESH), "quiet": (bool, C.quiet_option())}


def _build_config(run: dict, methods: list[str], seeds: Optional[str], select: Optional[str], extra: dict):
    """FairRunConfig from defaults < YAML (``--config``) < options < ``--set``, with one-line errors."""
    from cxrdistill.errors import InputError
    from cxrdistill.fairness import FAIR_METHODS
    from cxrdistill.fairness.run import FairRunConfig
    from cxrdistill.storage.config import layers, validate
    from cxrdistill.training.trainer import TrainConfig

    def route(key: str) -> str:  # train.lr → the trainer; fairdi.lam → a method's parameter; head → the run
        head, _, rest = key.partition(".")
        if not rest or head == "train":
            return key
        if head not in FAIR_METHODS:
            raise InputError(f"--set {key}: {head!r} is neither 'train' nor a method",
                             hint=f"methods: {', '.join(FAIR_METHODS.names())}")
        return f"method_params.{key}"

    config = run["config"]
    options = {"methods": list(dict.fromkeys(methods)) or None, "seeds": C.parse_seeds(seeds), "select": select or None,
               **{f"train.{k}": run[k] for k in ("epochs", "batch_size", "lr")}, **extra}
    data = layers(path=config, options=options, sets=run["set_"], example="fairdi.lam=0.9", route=route)
    for m in data.get("methods", []):
        FAIR_METHODS.get(m)  # an unknown method fails before any data is read
    cfg = validate(FairRunConfig, data, path=config, docs=DOCS)
    validate(TrainConfig, cfg.train, path=config, docs=DOCS, prefix="train")  # a misspelled trainer key fails now
    return cfg


def _inputs(run: dict, cohort: Path):
    """The cohort table, the age groups and the log of a comparison (after its settings were checked)."""
    from cxrdistill.cohorts.validate import load_cohort

    log = (lambda s: None) if run["quiet"] else (lambda s: typer.echo(s, err=True))
    return load_cohort(cohort, check="ids"), _age_bins(run["age_bins"]), log


@C.with_options(_RUN)
def fair(
    cohort: Path = typer.Option(..., "--cohort", help="cohort table (Parquet/CSV) with a split column"),
    attribute: List[str] = C.attribute_option(help=C.ATTRIBUTE_HELP[:-1] + ": one comparison each (OUT/ATTRIBUTE/)."),
    tasks: List[str] = typer.Option(..., "--tasks", help="label columns, comma-separated (repeatable)"),
    out: Path = C.out_option(),
    method: Optional[List[str]] = typer.Option(None, "--method", "-m",
                                               help="erm | resample | groupdro | fis | swad | fairdi (repeat) "
                                                    "[erm, fairdi]"),
    seeds: Optional[str] = C.seeds_option(help=C.SEEDS_HELP + " [0,1,2]"),
    embeddings: Optional[Path] = typer.Option(None, "--embeddings", help="embedding store (fast path: heads)"),
    images_root: Optional[Path] = typer.Option(None, "--images-root", help="train on images under this root"),
    size: int = typer.Option(64, "--size", min=8, help="image size in px (images only)"),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="timm backbone for images [resnet10t]"),
    head: Optional[str] = typer.Option(None, "--head", help="head on embeddings: linear | mlp [mlp]"),
    label_policy: str = typer.Option("u-ignore", "--label-policy", help="u-ignore | u-zeros | u-ones | a mix"),
    label_source: str = typer.Option("observed", "--label-source", help="observed | true (synthetic ground truth)"),
    select: Optional[str] = typer.Option(None, "--select", help="model selection: auc | worst | dto [auc]"),
    **run,
) -> None:
    """Compare fairness methods over seeds → OUT/fair_results.parquet, fair_table.csv/.md, fair.json, pareto.png."""
    from cxrdistill.errors import InputError
    from cxrdistill.fairness import data as D
    from cxrdistill.fairness.run import run_fair

    if (embeddings is None) == (images_root is None):
        raise InputError("give exactly one of --embeddings STORE or --images-root DIR")
    cfg = _build_config(run, C.csv_list(method), seeds, select, {"head": head, "backbone": backbone})
    df, bins, log = _inputs(run, cohort)
    common = dict(label_policy=label_policy, label_source=label_source, age_bins=bins, split_seed=run["split_seed"],
                  cohort_path=cohort)
    attrs = list(dict.fromkeys(attribute))
    rows = 0
    for a in attrs:
        dest = out / a if len(attrs) > 1 else out
        _start_over(run["fresh"], dest, "runs", "predictions")
        if embeddings is not None:
            data = D.from_embeddings(df, embeddings, C.csv_list(tasks), a, **common)
        else:
            data = D.from_images(df, images_root, size, C.csv_list(tasks), a, cache_dir=run["cache_dir"], **common)
        for n in data.notes:
            log(f"note: {n}")
        res = run_fair(data, cfg, dest, device=run["device"], log=log)
        rows += len(res["tidy"])
        typer.echo((dest / "fair_table.md").read_text(encoding="utf-8"))
        typer.echo(f"wrote {dest}/fair_results.parquet, fair_table.csv/.md, fair.json, pareto.png "
                   f"({len(res['tidy'])} result rows)")
    C.summary("fair run", out, attributes=attrs, methods=cfg.methods, seeds=cfg.seeds, result_rows=rows)


def _start_over(fresh: bool, dest: Path, *cached: str) -> None:
    """``--fresh``: drop the finished (method, seed) runs a re-run would reuse (only those folders of OUT)."""
    if fresh:
        import shutil

        for name in cached:
            shutil.rmtree(dest / name, ignore_errors=True)


def _age_bins(text: Optional[str]) -> Optional[list[float]]:
    from cxrdistill.evaluation.resample import parse_bins

    return parse_bins(text) if text else None


@C.with_options(_RUN)
def fair_seg(
    cohort: Path = typer.Option(..., "--cohort", help="cohort table with mask columns (synth_mask_lung, …)"),
    images_root: Path = typer.Option(..., "--images-root", help="root of the image and mask paths"),
    attribute: List[str] = C.attribute_option(help=C.ATTRIBUTE_HELP[:-1] + ": one comparison each (OUT/ATTRIBUTE/)."),
    out: Path = C.out_option(),
    structures: str = typer.Option("lung,heart", "--structures", help="mask structures, comma-separated"),
    method: Optional[List[str]] = typer.Option(None, "--method", "-m", help="fairness method (repeat) [erm, fairdi]"),
    seeds: Optional[str] = C.seeds_option(help=C.SEEDS_HELP + " [0,1,2]"),
    size: int = typer.Option(64, "--size", min=8, help="image size in px (multiple of 8)"),
    base: int = typer.Option(16, "--base", min=4, help="U-Net channels at the first level"),
    select: Optional[str] = typer.Option(None, "--select", help="model selection: auc (= overall Dice) | worst | dto"),
    **run,
) -> None:
    """Segmentation (small U-Net) by fairness method: Dice per group, Dice gap, ES-Dice → OUT/seg_*."""
    from cxrdistill.fairness.segmentation import run_seg, seg_data_from_cohort

    cfg = _build_config(run, C.csv_list(method), seeds, select, {})
    df, bins, log = _inputs(run, cohort)
    attrs = list(dict.fromkeys(attribute))
    for a in attrs:
        dest = out / a if len(attrs) > 1 else out
        _start_over(run["fresh"], dest, "runs", "dice")
        data = seg_data_from_cohort(df, images_root, size, a, C.csv_list([structures]), cache_dir=run["cache_dir"],
                                    age_bins=bins, split_seed=run["split_seed"], cohort_path=cohort)
        for n in data.notes:
            log(f"note: {n}")
        run_seg(data, cfg, dest, base=base, device=run["device"], log=log)
        typer.echo((dest / "seg_table.md").read_text(encoding="utf-8"))
        typer.echo(f"wrote {dest}/seg_results.parquet, seg_table.csv/.md, seg.json, seg_pareto.png")
    C.summary("fair seg", out, attributes=attrs, methods=cfg.methods, seeds=cfg.seeds)


def register(app: typer.Typer) -> None:
    group = C.family(app, "fair")
    group.command("run")(fair)
    group.command("seg")(fair_seg)
    app.command("fair-seg", hidden=True, help="Old spelling of 'fair seg'.")(fair_seg)
