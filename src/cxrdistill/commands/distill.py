"""``cxrdistill distill | probe | finetune | evaluate | export-onnx``: distil a teacher's embeddings into an open
student, fit heads on frozen embeddings, fine-tune, score predictions with CIs, and export to ONNX.

Each training command reads the package defaults (``cxrdistill/configs/<stage>.yaml``), then ``--config FILE``,
then explicit options, then ``--set key=value`` overrides (e.g. ``--set train.lr=3e-4``).
"""
from __future__ import annotations

from typing import List, Optional

import typer

from cxrdistill.commands import _common as C

_SET = typer.Option(None, "--set", help="override a config key, e.g. train.lr=3e-4 (repeatable)")
_CONFIG = typer.Option(None, "--config", help="YAML config (keys as in the package defaults)")
_CACHE = typer.Option(None, "--cache-dir", help="image cache root (default $CXRDISTILL_CACHE or ~/.cache/cxrdistill)")
_FRESH = typer.Option(False, "--fresh", help="discard an existing checkpoint in --out and start over")
_QUIET = C.quiet_option()
_SEED = C.seed_option(None, help="Seed of the initialisation and the data order [0].")
_DEVICE = C.device_option(None, help=C.DEVICE_HELP + " [auto]")


def _tasks(values: Optional[List[str]]) -> Optional[List[str]]:
    if not values:
        return None
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


def _print_summary(command: str, out: str, summary: dict) -> None:
    C.summary(command, out, **{k: v for k, v in summary.items() if k not in ("command", "status", "out")})


def distill(
    cohort: str = typer.Option(..., "--cohort", help="cohort table with a split column (train, val; rows of split "
                               "pool: unlabelled images, distilled on like train rows)"),
    images_root: str = typer.Option(..., "--images-root", help="directory the cohort's paths are relative to"),
    embeddings: str = typer.Option(..., "--embeddings", help="the teacher's embedding store (cxrdistill embed)"),
    out: str = C.out_option(help="Run directory (resumed when it holds a checkpoint)."),
    student: Optional[str] = typer.Option(None, "--student", help="preset or timm name [mobilenetv3_small_050]"),
    weights: Optional[str] = typer.Option(None, "--weights", help="local timm-named weights to start the student"),
    loss: Optional[str] = typer.Option(None, "--loss", help="KD loss, or a mix 'mse=1,rkd=0.5' [mse_cosine]"),
    size: Optional[int] = typer.Option(None, "--size", min=8, help="student input size in px [64]"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="training epochs [10]"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="training batch size [64]"),
    lr: Optional[float] = typer.Option(None, "--lr", help="learning rate [1e-2]"),
    method: Optional[str] = typer.Option(None, "--method", help="training method from the METHODS registry [distill]"),
    attribute: Optional[List[str]] = C.attribute_option(False, help="Sensitive attribute given to the method as its "
                                                        "group (needed by --fair; used in training only)."),
    seed: Optional[int] = _SEED,
    device: Optional[str] = _DEVICE,
    fair: Optional[str] = typer.Option(None, "--fair", help="fairness-aware distillation: balanced | adversarial | "
                                       "fairdi | mmd (needs --attribute; used in training only)"),
    config: Optional[str] = _CONFIG,
    set_: Optional[List[str]] = _SET,
    cache_dir: Optional[str] = _CACHE,
    fresh: bool = _FRESH,
    quiet: bool = _QUIET,
) -> None:
    """Distil the teacher's stored embeddings into a student that sees the images (writes OUT/student.safetensors)."""
    from cxrdistill.training.run_config import load_config
    from cxrdistill.training.runs import run_distill

    attribute = C.single_attribute(attribute, "distill")
    if fair:
        from cxrdistill.errors import InputError

        if method:
            raise InputError("give either --fair or --method, not both")
        if not attribute:
            raise InputError(f"--fair {fair} needs --attribute (the sensitive attribute, e.g. sex or race)")
        method = f"fairkd_{fair}"
    cfg = load_config("distill", config, {"student.name": student, "student.weights": weights, "loss": loss,
                                          "size": size, "train.epochs": epochs, "train.batch_size": batch_size,
                                          "train.lr": lr, "train.seed": seed, "train.device": device, "method": method},
                      set_)
    _print_summary("distill", out, run_distill(cfg, cohort, images_root, embeddings, out, attribute=attribute,
                                               cache_dir=cache_dir, fresh=fresh, quiet=quiet))


def probe(
    cohort: str = typer.Option(..., "--cohort", help="cohort table with labels and a split column"),
    out: str = C.out_option(help="Run directory."),
    embeddings: Optional[str] = typer.Option(None, "--embeddings", help="frozen embeddings (store, .npy+ids, table)"),
    model: Optional[str] = typer.Option(None, "--model", help="or a cxrdistill model computing them (e.g. a student)"),
    images_root: Optional[str] = typer.Option(None, "--images-root", help="images, when --model is given"),
    head: Optional[str] = typer.Option(None, "--head", help="linear | mlp3 | mlp5 [linear]"),
    tasks: Optional[List[str]] = typer.Option(None, "--tasks", help="tasks (comma-separated or repeated) [all]"),
    label_policy: Optional[str] = typer.Option(None, "--label-policy", help="u-ignore | u-zeros | u-ones | mix"),
    loss: Optional[str] = typer.Option(None, "--loss", help="bce | aucm [bce]"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="training epochs [20]"),
    aggregate: Optional[str] = typer.Option(None, "--aggregate", help="image | study (max over views)"),
    n_boot: Optional[int] = C.n_boot_option(None, help=f"{C.N_BOOT_HELP} [{C.N_BOOT}]"),
    seed: Optional[int] = _SEED,
    device: Optional[str] = _DEVICE,
    config: Optional[str] = _CONFIG,
    set_: Optional[List[str]] = _SET,
    cache_dir: Optional[str] = _CACHE,
    fresh: bool = _FRESH,
    quiet: bool = _QUIET,
) -> None:
    """Fit a head on frozen embeddings (teacher's or a student's); predict and score the test split with CIs."""
    from cxrdistill.training.run_config import load_config
    from cxrdistill.training.runs import run_probe

    cfg = load_config("probe", config, {"head": head, "tasks": _tasks(tasks), "label_policy": label_policy,
                                        "loss": loss, "train.epochs": epochs, "eval.aggregate": aggregate,
                                        "eval.n_boot": n_boot, "train.seed": seed, "train.device": device}, set_)
    _print_summary("probe", out, run_probe(cfg, cohort, out, embeddings=embeddings, model=model,
                                           images_root=images_root, cache_dir=cache_dir, fresh=fresh, quiet=quiet))


def finetune(
    cohort: str = typer.Option(..., "--cohort", help="cohort table with labels and a split column"),
    images_root: str = typer.Option(..., "--images-root", help="directory the cohort's paths are relative to"),
    out: str = C.out_option(help="Run directory."),
    init: Optional[str] = typer.Option(None, "--init", help="CHECKPOINT | random | imagenet:FILE [random]"),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="timm backbone for random/imagenet init"),
    size: Optional[int] = typer.Option(None, "--size", min=8, help="image side in px [64]"),
    tasks: Optional[List[str]] = typer.Option(None, "--tasks", help="tasks (comma-separated or repeated) [all]"),
    label_policy: Optional[str] = typer.Option(None, "--label-policy", help="u-ignore | u-zeros | u-ones | mix"),
    loss: Optional[str] = typer.Option(None, "--loss", help="bce | aucm"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="training epochs [10]"),
    lr: Optional[float] = typer.Option(None, "--lr", help="learning rate [3e-4]"),
    aggregate: Optional[str] = typer.Option(None, "--aggregate", help="image | study"),
    n_boot: Optional[int] = C.n_boot_option(None, help=f"{C.N_BOOT_HELP} [{C.N_BOOT}]"),
    seed: Optional[int] = _SEED,
    device: Optional[str] = _DEVICE,
    config: Optional[str] = _CONFIG,
    set_: Optional[List[str]] = _SET,
    cache_dir: Optional[str] = _CACHE,
    fresh: bool = _FRESH,
    quiet: bool = _QUIET,
) -> None:
    """Fine-tune a whole network with a classification head (writes OUT/model.safetensors, predictions, metrics)."""
    from cxrdistill.training.run_config import load_config
    from cxrdistill.training.runs import run_finetune

    cfg = load_config("finetune", config, {"init": init, "backbone": backbone, "size": size, "tasks": _tasks(tasks),
                                           "label_policy": label_policy, "loss": loss, "train.epochs": epochs,
                                           "train.lr": lr, "eval.aggregate": aggregate, "eval.n_boot": n_boot,
                                           "train.seed": seed, "train.device": device}, set_)
    _print_summary("finetune", out, run_finetune(cfg, cohort, images_root, out, cache_dir=cache_dir, fresh=fresh,
                                                 quiet=quiet))


def evaluate(
    cohort: str = typer.Option(..., "--cohort", help="cohort table with labels (and a split column)"),
    out: str = C.out_option(help="Predictions table to write (.parquet or .csv)."),
    model: Optional[str] = typer.Option(None, "--model", help="a classifier (finetune) or an embedding model"),
    head: Optional[str] = typer.Option(None, "--head", help="a head from `probe` (on --model or --embeddings)"),
    embeddings: Optional[str] = typer.Option(None, "--embeddings", help="frozen embeddings for --head"),
    images_root: Optional[str] = typer.Option(None, "--images-root", help="images, when --model is given"),
    split: str = typer.Option("test", "--split", help="split to predict; 'all' for every row"),
    size: Optional[int] = typer.Option(None, "--size", min=8, help="image size (default: the model's)"),
    label_policy: str = typer.Option("u-ignore", "--label-policy", help="u-ignore | u-zeros | u-ones | mix"),
    aggregate: str = typer.Option("image", "--aggregate", help="image | study (max over a study's views)"),
    n_boot: int = C.n_boot_option(),
    target_fpr: float = typer.Option(0.2, "--target-fpr", help="FPR of the operating point for TPR@FPR"),
    seed: int = C.seed_option(help="Seed of the bootstrap."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="metrics table path [OUT-stem.metrics.csv]"),
    cache_dir: Optional[str] = _CACHE,
) -> None:
    """Write the predictions table of a split and its tidy metrics (AUC, AUC-PR, Youden, TPR@FPR) with CIs."""
    from cxrdistill.training.runs import run_evaluate

    res = run_evaluate(cohort, out, split=None if split == "all" else split, model=model, head=head,
                       embeddings=embeddings, images_root=images_root, size=size, label_policy=label_policy,
                       aggregate=aggregate, n_boot=n_boot, target_fpr=target_fpr, seed=seed, cache_dir=cache_dir,
                       metrics_out=metrics)
    _print_summary("evaluate", out, res)


def export_onnx(
    checkpoint: str = typer.Argument(..., help="a cxrdistill model (student.safetensors, model.safetensors)"),
    out: str = C.out_option(help="ONNX file to write."),
    size: Optional[int] = typer.Option(None, "--size", min=8, help="input size (default: the model's)"),
    opset: int = typer.Option(17, "--opset", help="ONNX opset version"),
    check: bool = typer.Option(True, "--check/--no-check", help="compare onnxruntime with torch"),
    atol: float = typer.Option(1e-4, "--atol", help="largest absolute difference accepted by the check"),
) -> None:
    """Export a model to ONNX (dynamic batch) and check onnxruntime against torch within tolerance."""
    from cxrdistill.export import export_onnx as run

    _print_summary("export-onnx", out, run(checkpoint, out, size=size, opset=opset, check=check, atol=atol))


def register(app: typer.Typer) -> None:
    app.command("distill")(distill)
    app.command("probe")(probe)
    app.command("finetune")(finetune)
    app.command("evaluate")(evaluate)
    app.command("export-onnx")(export_onnx)
