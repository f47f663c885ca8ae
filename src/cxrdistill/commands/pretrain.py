"""``cxrdistill pretrain run`` (in-domain pretraining: supervised view/sex/age or Barlow Twins), ``pretrain finetune``
(pathology fine-tuning from any init, any label policy, optional auxiliary heads) and ``pretrain grid`` (the
init × label policy × aux × seed study with one table). The old spellings ``pretrain-finetune`` and
``pretrain-grid`` still work."""
from __future__ import annotations

from typing import List, Optional

import typer

from cxrdistill.commands import _common as C

_CACHE = typer.Option(None, "--cache-dir", help="image cache root (default $CXRDISTILL_CACHE or ~/.cache/cxrdistill)")
_WORKERS = typer.Option(2, "--workers", min=1, help="image decoding processes for the cache")
_FRESH = typer.Option(False, "--fresh", help="start over instead of resuming / reusing")
_SET = typer.Option(None, "--set", help="override a config key, e.g. train.lr=3e-4 (repeatable)")
_DEVICE = C.device_option(None, help=C.DEVICE_HELP + " [auto]")
#: the options every pretraining command takes, after its own: device, overrides, the image cache, how a re-run
#: starts, and what is printed
_RUN = {"device": (Optional[str], _DEVICE), "set_": (Optional[List[str]], _SET), "cache_dir": (Optional[str], _CACHE),
        "workers": (int, _WORKERS), "fresh": (bool, _FRESH), "quiet": (bool, C.quiet_option())}


def _csv(values: Optional[List[str]]) -> Optional[List[str]]:
    """Repeatable options that also accept comma-separated lists (``--inits random,imagenet``)."""
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


def _load_cohort_and_images(cohort: str, images_root: Optional[str], size: int, run: dict):
    from cxrdistill.cohorts.validate import load_cohort
    from cxrdistill.errors import InputError
    from cxrdistill.training import inputs as I

    if images_root is None:
        raise InputError("the images are needed", hint="pass --images-root DIR (the root of the cohort's paths)")
    df = load_cohort(cohort, check="ids")
    cache = I.image_cache(df, images_root, size, run["cache_dir"], "resize", workers=run["workers"],
                          progress=not run["quiet"])
    return df, cache


def _logger(quiet: bool):
    import sys
    import time

    return (lambda s: None) if quiet else (lambda s: print(f"{time.strftime('%H:%M:%S')} {s}", file=sys.stderr,
                                                           flush=True))


@C.with_options(_RUN)
def pretrain_cmd(
    method: str = typer.Option("supervised", "--method", help="supervised (view/sex/age) | barlow (Barlow Twins)"),
    cohort: str = typer.Option(..., "--cohort", help="pretraining cohort table (its train split; val for "
                                                       "validation; every row when it has no split column)"),
    images_root: Optional[str] = typer.Option(None, "--images-root", help="directory the cohort's paths are "
                                                                         "relative to"),
    out: str = C.out_option(help="Output checkpoint (.safetensors); the run directory is OUT.run/."),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="timm model name [efficientnet_lite0]"),
    size: int = typer.Option(64, "--size", min=8, help=C.SIZE_HELP),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="training epochs [2]"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=2, help="training batch size [64]"),
    lr: Optional[float] = typer.Option(None, "--lr", help="learning rate [1e-3]"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="AdamW weight decay [1e-4]"),
    init: Optional[str] = typer.Option(None, "--init", help="random | imagenet | imagenet:FILE | checkpoint:PATH"),
    augment: Optional[str] = typer.Option(None, "--augment", help="augmentation name (light, ssl, barlow, none)"),
    multi_instance: Optional[str] = typer.Option(None, "--multi-instance",
                                                 help="barlow: none | patient | study (pair two images of one "
                                                      "patient / study)"),
    lambd: Optional[float] = typer.Option(None, "--lambda", help="barlow: off-diagonal weight (default 0.0051)"),
    projector: Optional[str] = typer.Option(None, "--projector", help="barlow: projector sizes, e.g. 2048,2048,2048"),
    meta_tasks: Optional[List[str]] = typer.Option(None, "--meta-task",
                                                   help="supervised: frontal, ap_pa, sex, age (repeatable)"),
    seed: Optional[int] = C.seed_option(None, help="Seed of the initialisation and the data order [0]."),
    config: Optional[str] = typer.Option(None, "--config", help="YAML with the PretrainConfig keys"),
    run_dir: Optional[str] = typer.Option(None, "--run-dir", help="trainer directory (default OUT.run/)"),
    **run,
) -> None:
    """Pretrain a backbone on a chest X-ray cohort; the checkpoint starts any fine-tune or student."""
    from cxrdistill.pretraining.config import PretrainConfig, load_config
    from cxrdistill.pretraining.pretrain import pretrain

    proj = [int(x) for x in projector.split(",") if x.strip()] if projector else None
    cfg = load_config(PretrainConfig, config, {
        "method": method, "backbone": backbone, "init": init, "augment": augment, "multi_instance": multi_instance,
        "lambd": lambd, "projector": proj, "meta_tasks": _csv(meta_tasks), "train.epochs": epochs,
        "train.batch_size": batch_size, "train.lr": lr, "train.weight_decay": weight_decay, "train.seed": seed,
        "train.device": run["device"], "train.progress": not run["quiet"]}, run["set_"])
    from cxrdistill.pretraining.methods import PRETRAINERS

    PRETRAINERS.get(cfg.method)  # an unknown method fails before any image is read
    df, cache = _load_cohort_and_images(cohort, images_root, size, run)
    res = pretrain(cfg, df, cache, out, run_dir=run_dir, fresh=run["fresh"], log=_logger(run["quiet"]),
                   cache_dir=run["cache_dir"])
    last = (res.get("history") or [{}])[-1]
    C.summary("pretrain run", out, checkpoint=res.get("checkpoint"), method=res.get("method"),
              backbone=res.get("backbone"), epochs=res.get("epochs"), val_loss=last.get("val_loss"),
              train_loss=last.get("train_loss"))


@C.with_options(_RUN)
def finetune_cmd(
    cohort: str = typer.Option(..., "--cohort", help="downstream cohort table with train / val / test splits"),
    images_root: Optional[str] = typer.Option(None, "--images-root", help="directory the cohort's paths are "
                                                                         "relative to"),
    out: str = C.out_option(help="Run directory."),
    init: Optional[str] = typer.Option(None, "--init", help="random | imagenet | imagenet:FILE | checkpoint:PATH"),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="timm model (random / imagenet inits)"),
    size: int = typer.Option(64, "--size", min=8, help=C.SIZE_HELP),
    tasks: Optional[List[str]] = typer.Option(None, "--tasks", help="label columns (repeatable or comma-separated)"),
    label_policy: Optional[str] = typer.Option(None, "--label-policy",
                                               help="u-ignore | u-zeros | u-ones | mix 'u-ones:edema;u-zeros:*'"),
    aux: Optional[bool] = typer.Option(None, "--aux/--no-aux", help="auxiliary view / sex / age heads"),
    aux_weight: Optional[float] = typer.Option(None, "--aux-weight", help="weight of the auxiliary loss [0.1]"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="training epochs [3]"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="training batch size [32]"),
    lr: Optional[float] = typer.Option(None, "--lr", help="learning rate [1e-3]"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="AdamW weight decay [1e-4]"),
    augment: Optional[str] = typer.Option(None, "--augment", help="augmentation name (light, none, …)"),
    seed: Optional[int] = C.seed_option(None, help="Seed of the initialisation and the data order [0]."),
    n_boot: Optional[int] = C.n_boot_option(None, help=f"{C.N_BOOT_HELP} [{C.N_BOOT}]"),
    config: Optional[str] = typer.Option(None, "--config", help="YAML with the PretrainFinetuneConfig keys"),
    **run,
) -> None:
    """Fine-tune for pathologies from any initialisation under any label policy (optional auxiliary heads)."""
    from cxrdistill.pretraining.config import PretrainFinetuneConfig, load_config
    from cxrdistill.pretraining.finetune import finetune

    cfg = load_config(PretrainFinetuneConfig, config, {
        "init": init, "backbone": backbone, "tasks": _csv(tasks), "label_policy": label_policy, "aux": aux,
        "aux_weight": aux_weight, "augment": augment, "n_boot": n_boot, "train.epochs": epochs,
        "train.batch_size": batch_size, "train.lr": lr, "train.weight_decay": weight_decay, "train.seed": seed,
        "train.device": run["device"], "train.progress": not run["quiet"]}, run["set_"])
    df, cache = _load_cohort_and_images(cohort, images_root, size, run)
    res = finetune(cfg, df, cache, out, fresh=run["fresh"], log=_logger(run["quiet"]), cache_dir=run["cache_dir"])
    C.summary("pretrain finetune", out, model=res["model"], mean_auc=res["observed"]["mean_auc"],
              mean_auc_true=(res.get("true") or {}).get("mean_auc"), epochs=res["epochs"])


@C.with_options(_RUN)
def grid_cmd(
    out: str = C.out_option(),
    config: Optional[str] = typer.Option(None, "--config", help="grid YAML (GridConfig keys)"),
    cohort: Optional[str] = typer.Option(None, "--cohort", help="downstream cohort (default: a synthetic one)"),
    images_root: Optional[str] = typer.Option(None, "--images-root", help="root of --cohort's image paths"),
    pretrain_cohort: Optional[str] = typer.Option(None, "--pretrain-cohort",
                                                  help="pretraining cohort (default: a synthetic one)"),
    pretrain_images_root: Optional[str] = typer.Option(None, "--pretrain-images-root",
                                                       help="root of --pretrain-cohort's image paths"),
    inits: Optional[List[str]] = typer.Option(None, "--inits", help="random, imagenet[:FILE], checkpoint:PATH, "
                                                                    "supervised, barlow"),
    policies: Optional[List[str]] = typer.Option(None, "--policies", help="label policies; ';'-mixes need --config"),
    aux: Optional[List[str]] = typer.Option(None, "--aux", help="off, on (or both: off,on)"),
    seeds: Optional[List[str]] = C.seeds_option(help="Fine-tuning seeds, comma-separated, e.g. 0,1,2 [0]"),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="timm model name [efficientnet_lite0]"),
    imagenet_weights: Optional[str] = typer.Option(None, "--imagenet-weights", help="timm-named file for 'imagenet'"),
    tasks: Optional[List[str]] = typer.Option(None, "--tasks", help="label columns (repeatable or comma-separated)"),
    pretrain_epochs: Optional[int] = typer.Option(None, "--pretrain-epochs", min=1, help="pretraining epochs [2]"),
    finetune_epochs: Optional[int] = typer.Option(None, "--finetune-epochs", min=1, help="fine-tuning epochs"),
    pretrain_n: Optional[int] = typer.Option(None, "--pretrain-n", min=8, help="synthetic pretraining cohort size"),
    n: int = typer.Option(600, "--n", min=20, help="synthetic downstream cohort size (without --cohort)"),
    scenario: str = typer.Option("none", "--scenario", help="synthetic downstream scenario (without --cohort)"),
    size: int = typer.Option(64, "--size", min=8, help=C.SIZE_HELP),
    seed: int = C.seed_option(help="Seed of the synthetic downstream cohort and its split."),
    n_boot: Optional[int] = C.n_boot_option(None, help=f"{C.N_BOOT_HELP} [{C.N_BOOT}]"),
    **run,
) -> None:
    """Fine-tune every init × label policy × aux × seed and write one table (mean AUC per task with CIs)."""
    from pathlib import Path

    from cxrdistill.errors import CxrError
    from cxrdistill.pretraining.config import GridConfig, load_config
    from cxrdistill.pretraining.grid import run_grid

    aux_vals = None
    if aux:
        m = {"off": False, "false": False, "no": False, "0": False, "on": True, "true": True, "yes": True, "1": True}
        bad = [a for a in _csv(aux) if a.lower() not in m]
        if bad:
            raise CxrError(f"--aux takes off/on, got {bad[0]!r}")
        aux_vals = [m[a.lower()] for a in _csv(aux)]
    seed_vals = C.parse_seeds(seeds)
    cfg = load_config(GridConfig, config, {
        "inits": _csv(inits), "label_policies": _csv(policies), "aux": aux_vals, "seeds": seed_vals,
        "backbone": backbone, "imagenet_weights": imagenet_weights, "tasks": _csv(tasks),
        "pretrain_epochs": pretrain_epochs, "finetune_epochs": finetune_epochs, "pretrain_n": pretrain_n,
        "n_boot": n_boot, "pretrain.train.device": run["device"], "finetune.train.device": run["device"]}, run["set_"])
    log = _logger(run["quiet"])
    if cohort:
        df, images = _load_cohort_and_images(cohort, images_root, size, run)
    else:
        from cxrdistill.cohorts.splits import assign_splits
        from cxrdistill.synth import render_batch

        log(f"downstream cohort: {n} synthetic images at {size}px (scenario {scenario}, seed {seed})")
        images, df = render_batch(n, size, seed=seed, scenario=scenario)
        df = assign_splits(df, (0.6, 0.15, 0.25), seed=seed)
    pdf = pimages = None
    if pretrain_cohort:
        pdf, pimages = _load_cohort_and_images(pretrain_cohort, pretrain_images_root, size, run)
    table = run_grid(cfg, df, images, out, pretrain_df=pdf, pretrain_images=pimages, log=log, fresh=run["fresh"],
                     cache_dir=run["cache_dir"])
    typer.echo((Path(out) / "table.md").read_text(encoding="utf-8"))
    log(f"{len(table)} table rows → {Path(out) / 'table.parquet'}")
    C.summary("pretrain grid", out, table=str(Path(out) / "table.parquet"), rows=len(table))


def register(app: typer.Typer) -> None:
    group = C.family(app, "pretrain")
    group.command("run")(pretrain_cmd)
    group.command("finetune")(finetune_cmd)
    group.command("grid")(grid_cmd)
    app.command("pretrain-finetune", hidden=True, help="Old spelling of 'pretrain finetune'.")(finetune_cmd)
    app.command("pretrain-grid", hidden=True, help="Old spelling of 'pretrain grid'.")(grid_cmd)
