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
_N_BOOT = C.n_boot_option(None, help=f"{C.N_BOOT_HELP} [{C.N_BOOT}]")
_LABELLED = typer.Option(..., "--cohort", help="cohort table with labels and a split column")
_IMAGES = typer.Option(..., "--images-root", help="directory the cohort's paths are relative to")
_MODEL_IMAGES = typer.Option(None, "--images-root", help="images, when --model is given")
_TASKS = typer.Option(None, "--tasks", help="tasks (comma-separated or repeated) [all]")
_POLICY_HELP = "u-ignore | u-zeros | u-ones | mix"
_SEED = C.seed_option(None, help="Seed of the initialisation and the data order [0].")
_DEVICE = C.device_option(None, help=C.DEVICE_HELP + " [auto]")
#: the options every training command takes, after its own: what seeds and places the run, where its settings come
#: from, and how it resumes
_RUN = {"seed": (Optional[int], _SEED), "device": (Optional[str], _DEVICE), "config": (Optional[str], _CONFIG),
        "set_": (Optional[List[str]], _SET), "cache_dir": (Optional[str], _CACHE), "fresh": (bool, _FRESH),
        "quiet": (bool, _QUIET)}


def _config(stage: str, run: dict, options: dict):
    """The stage's configuration: package defaults ← ``--config`` ← the options (with ``--seed``, ``--device``) ←
    ``--set``; its device is checked here, before any image is read."""
    from cxrdistill.models.device import resolve_device
    from cxrdistill.training.run_config import load_config

    cfg = load_config(stage, run["config"], {**options, "train.seed": run["seed"], "train.device": run["device"]},
                      run["set_"])
    resolve_device(cfg.train.device)
    return cfg


def _resume(run: dict) -> dict:
    """The keywords of the run functions that say where images are cached and whether to resume."""
    return {k: run[k] for k in ("cache_dir", "fresh", "quiet")}


def _print_summary(command: str, out: str, summary: dict) -> None:
    C.summary(command, out, **{k: v for k, v in summary.items() if k not in ("command", "status", "out")})


@C.with_options(_RUN)
def distill(
    cohort: str = typer.Option(..., "--cohort", help="cohort table with a split column (train, val; rows of split "
                               "pool: unlabelled images, distilled on like train rows)"),
    images_root: str = _IMAGES,
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
    fair: Optional[str] = typer.Option(None, "--fair", help="fairness-aware distillation: balanced | adversarial | "
                                       "fairdi | mmd (needs --attribute; used in training only)"),
    **run,
) -> None:
    """Distil the teacher's stored embeddings into a student that sees the images (writes OUT/student.safetensors)."""
    from cxrdistill.training.runs import run_distill

    attribute = C.single_attribute(attribute, "distill")
    if fair:
        from cxrdistill.errors import InputError

        if method:
            raise InputError("give either --fair or --method, not both")
        if not attribute:
            raise InputError(f"--fair {fair} needs --attribute (the sensitive attribute, e.g. sex or race)")
        method = f"fairkd_{fair}"
    cfg = _config("distill", run, {"student.name": student, "student.weights": weights, "loss": loss, "size": size,
                                   "train.epochs": epochs, "train.batch_size": batch_size, "train.lr": lr,
                                   "method": method})
    _print_summary("distill", out, run_distill(cfg, cohort, images_root, embeddings, out, attribute=attribute,
                                               **_resume(run)))


@C.with_options(_RUN)
def probe(
    cohort: str = _LABELLED,
    out: str = C.out_option(help="Run directory."),
    embeddings: Optional[str] = typer.Option(None, "--embeddings", help="frozen embeddings (store, .npy+ids, table)"),
    model: Optional[str] = typer.Option(None, "--model", help="or a cxrdistill model computing them (e.g. a student)"),
    images_root: Optional[str] = _MODEL_IMAGES,
    head: Optional[str] = typer.Option(None, "--head", help="linear | mlp3 | mlp5 [linear]"),
    tasks: Optional[List[str]] = _TASKS,
    label_policy: Optional[str] = typer.Option(None, "--label-policy", help=_POLICY_HELP),
    loss: Optional[str] = typer.Option(None, "--loss", help="bce | aucm [bce]"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="training epochs [20]"),
    aggregate: Optional[str] = typer.Option(None, "--aggregate", help="image | study (max over views)"),
    n_boot: Optional[int] = _N_BOOT,
    **run,
) -> None:
    """Fit a head on frozen embeddings (teacher's or a student's); predict and score the test split with CIs."""
    from cxrdistill.training.runs import run_probe

    cfg = _config("probe", run, {"head": head, "tasks": C.csv_list(tasks) or None, "label_policy": label_policy,
                                 "loss": loss, "train.epochs": epochs, "eval.aggregate": aggregate,
                                 "eval.n_boot": n_boot})
    _print_summary("probe", out, run_probe(cfg, cohort, out, embeddings=embeddings, model=model,
                                           images_root=images_root, **_resume(run)))


@C.with_options(_RUN)
def finetune(
    cohort: str = _LABELLED,
    images_root: str = _IMAGES,
    out: str = C.out_option(help="Run directory."),
    init: Optional[str] = typer.Option(None, "--init", help="CHECKPOINT | random | imagenet:FILE [random]"),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="timm backbone for random/imagenet init"),
    size: Optional[int] = typer.Option(None, "--size", min=8, help="image side in px [64]"),
    tasks: Optional[List[str]] = _TASKS,
    label_policy: Optional[str] = typer.Option(None, "--label-policy", help=_POLICY_HELP),
    loss: Optional[str] = typer.Option(None, "--loss", help="bce | aucm"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="training epochs [10]"),
    lr: Optional[float] = typer.Option(None, "--lr", help="learning rate [3e-4]"),
    aggregate: Optional[str] = typer.Option(None, "--aggregate", help="image | study"),
    n_boot: Optional[int] = _N_BOOT,
    **run,
) -> None:
    """Fine-tune a whole network with a classification head (writes OUT/model.safetensors, predictions, metrics)."""
    from cxrdistill.training.runs import run_finetune

    cfg = _config("finetune", run, {"init": init, "backbone": backbone, "size": size,
                                    "tasks": C.csv_list(tasks) or None, "label_policy": label_policy, "loss": loss,
                                    "train.epochs": epochs, "train.lr": lr, "eval.aggregate": aggregate,
                                    "eval.n_boot": n_boot})
    _print_summary("finetune", out, run_finetune(cfg, cohort, images_root, out, **_resume(run)))


def evaluate(
    cohort: str = typer.Option(..., "--cohort", help="cohort table with labels (and a split column)"),
    out: str = C.out_option(help="Predictions table to write (.parquet or .csv)."),
    model: Optional[str] = typer.Option(None, "--model", help="a classifier (finetune) or an embedding model"),
    head: Optional[str] = typer.Option(None, "--head", help="a head from `probe` (on --model or --embeddings)"),
    embeddings: Optional[str] = typer.Option(None, "--embeddings", help="frozen embeddings for --head"),
    images_root: Optional[str] = _MODEL_IMAGES,
    split: str = typer.Option("test", "--split", help="split to predict; 'all' for every row"),
    size: Optional[int] = typer.Option(None, "--size", min=8, help="image size (default: the model's)"),
    label_policy: str = typer.Option("u-ignore", "--label-policy", help=_POLICY_HELP),
    aggregate: str = typer.Option("image", "--aggregate", help="image | study (max over a study's views)"),
    n_boot: int = C.n_boot_option(),
    target_fpr: float = typer.Option(0.2, "--target-fpr", help="FPR of the operating point for TPR@FPR"),
    seed: int = C.seed_option(help="Seed of the bootstrap."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="metrics table path [OUT-stem.metrics.csv]"),
    cache_dir: Optional[str] = _CACHE,
    device: str = C.device_option(help=C.DEVICE_HELP + " Runs --model (a head on stored embeddings runs on the CPU)."),
) -> None:
    """Write the predictions table of a split and its tidy metrics (AUC, AUC-PR, Youden, TPR@FPR) with CIs."""
    from cxrdistill.training.runs import run_evaluate

    res = run_evaluate(cohort, out, split=None if split == "all" else split, model=model, head=head,
                       embeddings=embeddings, images_root=images_root, size=size, label_policy=label_policy,
                       aggregate=aggregate, n_boot=n_boot, target_fpr=target_fpr, seed=seed, cache_dir=cache_dir,
                       metrics_out=metrics, device=device)
    _print_summary("evaluate", out, res)


def export_onnx(
    checkpoint: str = typer.Argument(..., help="a cxrdistill model (student.safetensors, model.safetensors)"),
    out: str = C.out_option(help="ONNX file to write."),
    size: Optional[int] = typer.Option(None, "--size", min=8, help="input size (default: the model's)"),
    opset: int = typer.Option(17, "--opset", help="ONNX opset version"),
    check: bool = typer.Option(True, "--check/--no-check", help="compare onnxruntime with torch"),
    atol: float = typer.Option(1e-4, "--atol", help="largest absolute difference accepted by the check"),
    device: str = C.device_option("cpu", help="Where torch runs the model to trace it and to check it: cpu, auto (a "
                                  "GPU when there is one), cuda or cuda:N; onnxruntime runs on the CPU."),
) -> None:
    """Export a model to ONNX (dynamic batch) and check onnxruntime against torch within tolerance."""
    from cxrdistill.export import export_onnx as run

    _print_summary("export-onnx", out, run(checkpoint, out, size=size, opset=opset, check=check, atol=atol,
                                                device=device))


def register(app: typer.Typer) -> None:
    app.command("distill")(distill)
    app.command("probe")(probe)
    app.command("finetune")(finetune)
    app.command("evaluate")(evaluate)
    app.command("export-onnx")(export_onnx)
