"""The pretraining stage: train a backbone on a pretraining cohort with a registered method (``supervised`` or
``barlow``) and save it with :func:`~cxrdistill.models.network.save_model`, so that any fine-tune (``checkpoint:PATH``
init, ``cxrdistill finetune --init PATH``) or student (``--set student.weights=…`` is timm-named; use the
checkpoint init) can start from it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from cxrdistill.errors import InputError
from cxrdistill.images.preprocess import MEAN, STD
from cxrdistill.models.network import count_params, save_model
from cxrdistill.pretraining.config import PretrainConfig, coerce_config
from cxrdistill.pretraining.data import cohort_fingerprint, image_size, resolve_images, train_val_rows
from cxrdistill.pretraining.inits import build_init, init_fingerprint
from cxrdistill.pretraining.methods import PRETRAINERS
from cxrdistill.storage.io import clean_json, write_json
from cxrdistill.training.run_dir import RunLog, open_run
from cxrdistill.training.trainer import Trainer


def pretrain(cfg: PretrainConfig | dict | None, cohort_df, images, out: str | Path, *, run_dir: str | Path | None = None,
             fresh: bool = False, log: Callable[[str], None] | None = None,
             cache_dir: str | Path | None = None, reuse: bool = True,
             restart_changed: bool = False) -> dict[str, Any]:
    """Pretrain on ``cohort_df`` (its ``train`` split, validating on ``val``; every row when it has no splits) and
    write the backbone to ``out`` (safetensors + metadata ``pretrain``). ``images``: an ``ImageCache`` or a uint8
    array aligned with the table. ``run_dir`` (default ``<out>.run/``) holds the trainer's checkpoint (an
    interrupted run resumes), ``history.json`` and ``pretrain.json``. An identical finished run is reused (``reuse``:
    the checkpoint is not rewritten); a run directory of another configuration is an error, or is started over with
    ``restart_changed``. Returns the summary."""
    import torch

    cfg = coerce_config(PretrainConfig, cfg)
    recipe_fn = PRETRAINERS.get(cfg.method)
    df = cohort_df.reset_index(drop=True)
    pixels, rows = resolve_images(images, df)
    tr, va = train_val_rows(df)
    if len(tr) < 2:
        raise InputError(f"pretraining needs at least 2 training images, the cohort has {len(tr)}",
                         hint="use a larger pretraining cohort")
    out = Path(out)
    run_dir = Path(run_dir) if run_dir else out.with_name(out.name + ".run")
    inputs = {"cohort": cohort_fingerprint(df, pixels, rows), "init_file": init_fingerprint(cfg.init)}
    run = open_run(run_dir, "pretrain", cfg, inputs, summary="pretrain.json", fresh=fresh, reuse=reuse,
                   on_change="restart" if restart_changed else "refuse",
                   is_done=lambda done: done.get("checkpoint") == str(out) and out.exists())
    if run.done is not None:
        return run.done
    log = log or RunLog(run_dir, quiet=True)
    torch.manual_seed(cfg.train.seed)
    init_info: dict[str, Any] = {}

    def make_net(num_classes: int):
        net, info = build_init(cfg.init, cfg.backbone, num_classes, cache_dir=cache_dir)
        init_info.update(info)
        return net

    recipe = recipe_fn(cfg, df, pixels, rows, tr, va, make_net)
    log(f"pretrain {cfg.method}: {cfg.backbone} from {cfg.init}, {len(tr)} train / {len(va)} val images at "
        f"{image_size(pixels)}px, {cfg.train.epochs} epochs")
    trainer = Trainer(recipe.model, recipe.method, recipe.train_data, recipe.val_data, cfg.train, run_dir=run_dir,
                      log=log)
    hist = trainer.fit()
    net = recipe.export()
    meta = {"pretrain": clean_json({"method": cfg.method, "backbone": net.config["backbone"],
                                    "image_size": image_size(pixels), "init": init_info, "n_train": int(len(tr)),
                                    "n_val": int(len(va)), "epochs": len(hist), "best_epoch": trainer.best_epoch,
                                    "mean": MEAN, "std": STD, **recipe.meta})}
    summary: dict[str, Any] = {}
    if trainer.dist.is_main:
        save_model(net, out, **meta)
        summary = {"stage": "pretrain", "checkpoint": str(out), "params": count_params(net), **meta["pretrain"],
                   "history": hist}
        write_json(clean_json(summary), run_dir / "pretrain.json")
        log(f"backbone written: {out}")
    return summary
