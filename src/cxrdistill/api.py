"""The functions below, one per step of a study, are also reachable as ``cxrdistill.<name>``."""
# Each function wraps the code the matching CLI command runs, with the same validation and the same files written.
# Imports happen inside the functions on purpose: ``import cxrdistill`` and ``cxrdistill.audit`` must not load torch
# (about 2 s) for the steps that do not need it.
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for the signatures only
    import numpy as np
    import pandas as pd

    from cxrdistill.evaluation.audit import AuditResult
    from cxrdistill.evaluation.compare import CompareResult
    from cxrdistill.teachers.client import EmbedResult

PathLike = str | os.PathLike

__all__ = ["synthesize", "synthetic_cohort", "synthetic_images", "import_cohort", "split_cohort", "embed", "distill",
           "probe", "evaluate", "audit", "compare", "run_study"]


def synthesize(out: PathLike, n: int = 1000, size: int = 128, seed: int = 0, scenario: str | PathLike = "none", *,
               workers: int = 1, overwrite: bool = False) -> Path:
    """Write a synthetic chest X-ray dataset with planted bias, in CheXpert's layout.

    Parameters
    ----------
    out
        Output directory; must be new or empty unless ``overwrite``. It is written into a temporary sibling and
        moved into place, so it is never left half-written.
    n
        Number of images (patients have 1–6 studies, one frontal image each).
    size
        Image side in pixels (16–1024).
    seed
        The same seed gives byte-identical files.
    scenario
        A named bias scenario (``none``, ``underdiagnosis``, ``shortcut``, ``acquisition``, ``manifestation``,
        ``mixed``, …) or a scenario YAML file.
    workers
        Rendering processes; the output does not depend on it.
    overwrite
        Replace a non-empty ``out``.

    Returns
    -------
    Path
        ``out/train.csv``: CheXpert columns plus ``Race``, ground truth ``true_*`` and planted mechanisms
        ``synth_*``; next to it ``split.csv``, ``scenario.json`` and the PNG images.

    Raises
    ------
    cxrdistill.errors.InputError
        On a bad argument, an unknown scenario or a non-empty ``out``.

    Examples
    --------
    >>> import cxrdistill
    >>> csv = cxrdistill.synthesize("data/synth", n=40, size=32, scenario="underdiagnosis")
    >>> csv.as_posix()
    'data/synth/train.csv'
    """
    from cxrdistill.synth import generate

    generate(out, n, size=size, seed=seed, scenario=scenario, workers=workers, overwrite=overwrite)
    return Path(out) / "train.csv"


def synthetic_cohort(n: int, seed: int = 0, scenario: str | PathLike = "none") -> pd.DataFrame:
    """Sample a synthetic cohort table with planted bias, without rendering images (fast: no pixels).

    Parameters
    ----------
    n, seed, scenario
        As in :func:`synthesize`; the rows are those :func:`synthesize` and :func:`synthetic_images` produce.

    Returns
    -------
    pandas.DataFrame
        One row per image in the cohort-table layout: ``image_id``, ``patient_id``, ``sex``, ``age``, ``race``,
        the observed labels (1, 0, -1 uncertain, NaN not mentioned), the ground truth ``true_*`` and the planted
        mechanisms ``synth_*`` (e.g. ``synth_underdiagnosed_<finding>``).

    Raises
    ------
    cxrdistill.errors.InputError
        On an unknown scenario.

    Examples
    --------
    >>> import cxrdistill
    >>> cohort = cxrdistill.synthetic_cohort(4000, scenario="underdiagnosis")
    >>> rates = cohort.groupby("sex")[["pleural_effusion", "true_pleural_effusion"]].mean()
    >>> bool(rates.loc["F", "pleural_effusion"] < rates.loc["M", "pleural_effusion"])  # labels miss women's effusions
    True
    """
    from cxrdistill.synth import cohort_table, load_scenario, sample_cohort

    return cohort_table(sample_cohort(n, seed, load_scenario(scenario)))


def synthetic_images(n: int, size: int = 64, seed: int = 0, scenario: str | PathLike = "none"
                     ) -> tuple[np.ndarray, pd.DataFrame]:
    """Render a synthetic cohort in memory: the same images :func:`synthesize` writes, without files.

    Parameters
    ----------
    n, size, seed, scenario
        As in :func:`synthesize`.

    Returns
    -------
    images : numpy.ndarray
        ``(n, size, size)`` uint8 grayscale radiographs.
    cohort : pandas.DataFrame
        One row per image in the cohort-table layout (``image_id``, ``patient_id``, ``sex``, ``age``, ``race``,
        label columns, ``true_*``, ``synth_*``).

    Raises
    ------
    cxrdistill.errors.InputError
        On a bad argument or an unknown scenario.

    Examples
    --------
    >>> import cxrdistill
    >>> images, cohort = cxrdistill.synthetic_images(8, size=32, scenario="shortcut")
    >>> images.shape, len(cohort)
    ((8, 32, 32), 8)
    """
    from cxrdistill.synth import render_batch

    return render_batch(n, size=size, seed=seed, scenario=scenario)


def import_cohort(reader: str, out: PathLike | None = None, *, images_root: PathLike | None = None,
                  missing: str = "error", **reader_args: Any) -> pd.DataFrame:
    """Read a dataset's metadata into the harmonized cohort table (one row per image) and check its images.

    Parameters
    ----------
    reader
        ``chexpert``, ``mimic``, ``nih`` or ``padchest`` (a synthetic dataset imports as ``chexpert``).
    out
        Where to write the table (Parquet, atomically); ``None`` writes nothing.
    images_root
        Directory the images' paths are relative to (default: next to the metadata file).
    missing
        ``error`` (stop when an image is missing or unreadable) or ``drop`` (leave those rows out).
    **reader_args
        The reader's own arguments, e.g. ``csv=…`` and ``demographics=…`` for CheXpert; see the Cohorts page.

    Returns
    -------
    pandas.DataFrame
        The validated cohort table.

    Raises
    ------
    cxrdistill.errors.InputError
        When a file, column or value is wrong (the message names it) or images are missing.

    Examples
    --------
    >>> import cxrdistill
    >>> csv = cxrdistill.synthesize("data/chexpert_like", n=40, size=32)   # a dataset in CheXpert's layout
    >>> cohort = cxrdistill.import_cohort("chexpert", csv=csv, images_root=csv.parent, out="data/cohort.parquet")
    >>> len(cohort), sorted({"image_id", "patient_id", "sex", "race"} - set(cohort.columns))
    (40, [])
    """
    from cxrdistill.cohorts.importer import import_cohort as _import

    df, _report = _import(reader, out, images_root=images_root, missing=missing, **reader_args)
    return df


def split_cohort(cohort: pd.DataFrame | PathLike, fractions: Sequence[float] = (0.7, 0.1, 0.2),
                 stratify: Sequence[str] = (), seed: int = 0, *, out: PathLike | None = None) -> pd.DataFrame:
    """Assign ``split`` (``train``/``val``/``test``) by patient, stratified, deterministic in ``seed``.

    Parameters
    ----------
    cohort
        A cohort table, or the path of one.
    fractions
        Train, validation and test fractions (they must sum to 1).
    stratify
        Columns whose distribution each split should keep (e.g. ``["sex", "race", "pleural_effusion"]``).
    seed
        Seed of the assignment; the result does not depend on the row order.
    out
        Where to write the split table (Parquet, atomically); ``None`` writes nothing.

    Returns
    -------
    pandas.DataFrame
        A copy of the cohort with the ``split`` column; no patient is in two splits.

    Raises
    ------
    cxrdistill.errors.InputError
        On bad fractions, an unknown stratification column or an empty cohort.

    Examples
    --------
    >>> import cxrdistill
    >>> cohort = cxrdistill.synthetic_cohort(300)
    >>> split = cxrdistill.split_cohort(cohort, fractions=(0.6, 0.2, 0.2), stratify=["sex"])
    >>> sorted(split["split"].unique())
    ['test', 'train', 'val']
    """
    from cxrdistill.cohorts.splits import assign_splits
    from cxrdistill.cohorts.validate import load_cohort, save_cohort

    df = load_cohort(cohort) if isinstance(cohort, (str, os.PathLike)) else cohort
    df = assign_splits(df, fractions, stratify=stratify, seed=seed)
    return save_cohort(df, out) if out is not None else df


def embed(teacher: str, cohort: PathLike, images_root: PathLike, out: PathLike, *, size: int | None = None,
          batch_size: int = 32, concurrency: int = 4, token: str | None = None,
          splits: Sequence[str] | None = None, progress: bool = False) -> EmbedResult:
    """Embed a cohort's images with a teacher into a crash-safe embedding store (resumes when rerun).

    Parameters
    ----------
    teacher
        ``http://HOST:PORT`` (an embedding API), ``torch:CHECKPOINT`` or ``timm:NAME[:WEIGHTS]`` (in-process).
    cohort
        The cohort table (``image_id`` and ``path`` columns).
    images_root
        Directory the cohort's paths are relative to.
    out
        The embedding store directory; created, or continued when it exists.
    size
        Image side sent to the teacher (default: the teacher's own).
    batch_size, concurrency
        Images per request and requests in flight.
    token
        The API's bearer token (for ``http://`` teachers that require one).
    splits
        Embed only the rows of these splits (default: every row).
    progress
        Show a progress bar.

    Returns
    -------
    cxrdistill.teachers.client.EmbedResult
        Counts of embedded and skipped images; ``to_dict()`` gives them as JSON.

    Raises
    ------
    cxrdistill.errors.CxrError
        When an image is unreadable or the teacher fails; every batch finished before is kept.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from cxrdistill.teachers.client import embed_cohort

    def run() -> EmbedResult:
        return embed_cohort(teacher, cohort, images_root, out, size=size, batch_size=batch_size,
                            concurrency=concurrency, token=token, splits=splits, progress=progress)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run()
    # inside a running event loop (a Jupyter kernel): the client's own loop runs in a worker thread
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def _options(options: Mapping[str, Any] | None, **named: Any) -> dict[str, Any]:
    """Dotted config keys: the named shortcuts first, then ``options`` (which wins)."""
    return {**{k: v for k, v in named.items() if v is not None}, **dict(options or {})}


def distill(cohort: PathLike, embeddings: PathLike, out: PathLike, *, images_root: PathLike | None = None,
            student: str | None = None, epochs: int | None = None, size: int | None = None, seed: int | None = None,
            device: str | None = None, config: PathLike | None = None,
            options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Distil a teacher's stored embeddings into a student network that sees the images.

    The student is trained on the cohort's ``train`` split to reproduce the teacher's embedding of each image, and
    validated on ``val``. Rerunning the same call resumes an interrupted run.

    Parameters
    ----------
    cohort
        The cohort table, with a ``split`` column.
    embeddings
        The teacher's embedding store (see :func:`embed`).
    out
        Run directory; receives ``student.safetensors`` and ``distill.json``.
    images_root
        Directory of the images (default: the one recorded in the cohort table).
    student
        Any timm backbone name or a preset (default ``mobilenetv3_small_050``).
    epochs, size
        Training epochs and image side in pixels.
    seed, device
        Seed of the initialisation and the data order (default 0); ``cpu``, ``cuda`` or ``auto`` (the default).
    config
        A ``distill.yaml`` with any of the documented keys.
    options
        More keys, dotted (``{"loss": "rkd", "train.lr": 3e-4}``); they override ``config`` and the shortcuts.

    Returns
    -------
    dict
        The run's summary (what ``distill.json`` holds).

    Raises
    ------
    cxrdistill.errors.InputError
        On an unknown key, loss or backbone, or a cohort without a ``train`` split.
    """
    from cxrdistill.training.run_config import load_config
    from cxrdistill.training.runs import run_distill

    cfg = load_config("distill", config, _options(options, **{"student.name": student, "train.epochs": epochs,
                                                              "size": size, "train.seed": seed,
                                                              "train.device": device}))
    return run_distill(cfg, cohort, images_root, embeddings, out, quiet=True)


def probe(cohort: PathLike, out: PathLike, *, embeddings: PathLike | None = None, model: PathLike | None = None,
          images_root: PathLike | None = None, head: str | None = None, epochs: int | None = None,
          seed: int | None = None, device: str | None = None, config: PathLike | None = None,
          options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fit a classification head on frozen embeddings; predict and score the test split with bootstrap CIs.

    Give either ``embeddings`` (a store, e.g. the teacher's) or ``model`` (e.g. a distilled student, whose
    embeddings are computed over the images): the same head on the same data makes the two comparable.

    Parameters
    ----------
    cohort
        The cohort table, with ``split`` and label columns.
    out
        Run directory; receives ``head.safetensors``, ``predictions/test.parquet`` (a predictions table) and
        ``metrics/test.csv``.
    embeddings
        An embedding store.
    model
        A model file (``student.safetensors``); needs ``images_root`` unless the cohort records it.
    images_root
        Directory of the images.
    head
        ``linear`` (default), ``mlp3`` or ``mlp5``.
    epochs
        Training epochs of the head.
    seed, device
        As in :func:`distill`.
    config, options
        A ``probe.yaml`` and dotted keys, as in :func:`distill`.

    Returns
    -------
    dict
        The run's summary, with the test metrics.

    Raises
    ------
    cxrdistill.errors.InputError
        When neither or both of ``embeddings`` and ``model`` are given, or an input is wrong.
    """
    from cxrdistill.training.run_config import load_config
    from cxrdistill.training.runs import run_probe

    cfg = load_config("probe", config, _options(options, head=head, **{"train.epochs": epochs, "train.seed": seed,
                                                                       "train.device": device}))
    return run_probe(cfg, cohort, out, embeddings=embeddings, model=model, images_root=images_root, quiet=True)


def evaluate(cohort: PathLike, out: PathLike, *, model: PathLike | None = None, head: PathLike | None = None,
             embeddings: PathLike | None = None, images_root: PathLike | None = None, split: str | None = "test",
             n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Write the predictions table of one split and its metrics (AUC, AUC-PR, Youden, TPR at a target FPR, CIs).

    Parameters
    ----------
    cohort
        The cohort table to predict (any cohort: this is also the direct-transfer evaluation).
    out
        The predictions table to write (``.parquet`` or ``.csv``); the metrics go to ``<out>.metrics.csv``.
    model, head, embeddings
        A classifier (``model``), a head on a model's embeddings (``model`` and ``head``), or a head on stored
        embeddings (``embeddings`` and ``head``).
    images_root
        Directory of the images, when a model computes embeddings.
    split
        The split to predict; ``None`` predicts every row.
    n_boot, seed
        Bootstrap replicates for the CIs, and their seed.

    Returns
    -------
    dict
        The summary: rows predicted and the metrics per task.

    Raises
    ------
    cxrdistill.errors.InputError
        On an invalid combination of inputs or a bad file.
    """
    from cxrdistill.training.runs import run_evaluate

    return run_evaluate(cohort, out, split=split, model=model, head=head, embeddings=embeddings,
                        images_root=images_root, n_boot=n_boot, seed=seed)


def audit(predictions: pd.DataFrame | PathLike, attributes: Sequence[str], *, tasks: Sequence[str] | None = None,
          n_boot: int = 2000, target_fpr: float = 0.2, alpha: float = 0.05, labels: str = "observed",
          age_bins: Sequence[float] | None = None, min_n: int = 20, seed: int = 0,
          out: PathLike | None = None) -> AuditResult:
    """Audit subgroup performance of a predictions table (Glocker et al. 2023).

    For every task and attribute: AUC per group with bootstrap CIs, TPR and FPR at one global threshold (chosen
    for ``target_fpr`` overall), gaps between groups, DeLong tests of AUC and KS tests of the score
    distributions, with a multiple-testing correction over the whole audit.

    Parameters
    ----------
    predictions
        A predictions table (DataFrame, CSV or Parquet): ``image_id``, attribute columns, and per task ``T`` the
        label ``y_T`` (0/1, blank unknown) and the score ``p_T``.
    attributes
        Attribute columns to audit, e.g. ``["sex", "race"]``.
    tasks
        Tasks to audit (default: every ``T`` with both ``y_T`` and ``p_T``).
    n_boot
        Bootstrap replicates for the CIs (0: no CIs).
    target_fpr
        Overall false-positive rate of the one global threshold.
    alpha
        CI level ``1 - alpha`` and significance level.
    labels
        ``observed`` (``y_T``), ``true`` (``ytrue_T``, synthetic cohorts) or ``both``.
    age_bins
        Edges that turn ``age`` into groups, e.g. ``[0, 40, 60, 80, 120]``.
    min_n
        Groups with fewer labelled rows get null metrics and a reason.
    seed
        Seed of the bootstrap.
    out
        When given, a directory that receives ``audit.json``, the tidy tables and ``report.html``.

    Returns
    -------
    cxrdistill.evaluation.audit.AuditResult
        ``by_group`` (tidy DataFrame: task, attribute, group, metric, value, CI, n), ``comparisons`` (one row
        per pair of groups, with the tests) and ``to_json()`` (the ``audit.json`` document).

    Raises
    ------
    cxrdistill.errors.InputError
        When a column is missing, a label is not binary, a score is NaN or infinite, or ids repeat (the message
        names the file, row and column).

    Examples
    --------
    >>> import numpy as np, cxrdistill
    >>> cohort = cxrdistill.synthetic_cohort(2000, scenario="underdiagnosis")
    >>> truth = cohort["true_pleural_effusion"]
    >>> predictions = cohort[["image_id", "sex"]].assign(                # a model that sees the true disease
    ...     y_effusion=cohort["pleural_effusion"].fillna(0).clip(lower=0),
    ...     p_effusion=truth + np.random.default_rng(0).normal(0, 0.8, len(cohort)))
    >>> res = cxrdistill.audit(predictions, ["sex"], n_boot=100)
    >>> auc = res.by_group.query("metric == 'auc' and attribute == 'sex'").set_index("group")["value"]
    >>> bool(auc["F"] < auc["M"])    # against the biased labels the model looks worse for women
    True
    """
    import pandas as pd

    from cxrdistill.evaluation.audit import run_audit
    from cxrdistill.evaluation.predictions import check_ids, read_predictions

    if isinstance(predictions, pd.DataFrame):
        df, path = predictions, None
        check_ids(df)
    else:
        df, path = read_predictions(predictions), predictions
    res = run_audit(df, attributes, tasks=tasks, target_fpr=target_fpr, n_boot=n_boot, alpha=alpha, seed=seed,
                    min_n=min_n, labels=labels, age_bins=age_bins, path=path)
    if out is not None:
        from cxrdistill.report.audit_html import write_audit

        write_audit(res, out, title="Performance audit" + (f" — {Path(path).name}" if path else ""))
    return res


def compare(audit_dirs: Sequence[PathLike], names: Sequence[str] | None = None, *, alpha: float = 0.05,
            correction: str = "by") -> CompareResult:
    """Bias propagation: compare every gap of the first model (the reference, e.g. the teacher) with the others'.

    Parameters
    ----------
    audit_dirs
        Audit directories (from :func:`audit` with ``out``, or the CLI's ``audit``, ``audit-features`` and
        ``probe-attributes``), the reference first.
    names
        A name per directory (default: the directory names).
    alpha, correction
        Significance level and multiple-testing correction (``by``, ``bh``, ``bonferroni``, ``none``).

    Returns
    -------
    cxrdistill.evaluation.compare.CompareResult
        ``tidy`` (one row per bias quantity and model, with a verdict where the change can be tested:
        *reduced*, *amplified*, *inherited* or *inconclusive*) and ``summary`` (the ``compare.json`` document).

    Raises
    ------
    cxrdistill.errors.InputError
        With fewer than two directories, or a directory holding no audit.
    """
    from cxrdistill.evaluation.compare import compare_dirs

    return compare_dirs(list(audit_dirs), list(names) if names is not None else None, alpha=alpha,
                        correction=correction)


def run_study(config: PathLike | None, out: PathLike, *, overrides: Mapping[str, Any] | None = None,
              jobs: int | None = None) -> dict[str, Any]:
    """Run (or resume) a whole study from one YAML config: cohort to report, each stage cached.

    Parameters
    ----------
    config
        The study YAML; ``None`` runs the embedded demo config.
    out
        Run directory; receives ``results.json``, ``report.html`` and every stage's outputs.
    overrides
        Dotted keys that override the config, e.g. ``{"distill.train.epochs": 20, "size": 128}``.
    jobs
        Stages run at once (default: the config's ``jobs``).

    Returns
    -------
    dict
        The content of ``results.json``.

    Raises
    ------
    cxrdistill.errors.InputError
        On an invalid config (the message names the key).
    cxrdistill.errors.CxrError
        When a stage fails (named in the message; finished stages stay cached).
    """
    from cxrdistill.study.run import run_study as _run

    return _run(config, out, overrides=dict(overrides) if overrides else None, jobs=jobs, log=lambda _msg: None)
