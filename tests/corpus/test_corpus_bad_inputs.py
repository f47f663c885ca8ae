"""The bad-input corpus: the whole tool, seen from the command line, fed one broken (or unusual) input at a time.

Each case builds its inputs with ``corpus_files`` in ``tmp/in``, runs the real CLI in-process (``cxrdistill.cli.main``)
with outputs under ``tmp/out`` — or, for the teacher API, sends a raw HTTP request to a real server on 127.0.0.1 — and
checks what the user gets: exit code 2 and one line naming the file / column / row and what to do (or the documented
handling, checked on the output), no traceback, no output file and no temp file left behind. The table of cases is
documented in docs/reliability.md (a test below keeps the two in sync).
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import corpus_files as cf  # noqa: E402

from cxrdistill.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reliability.md"


@dataclass
class Run:
    """What one case runs and what it must produce."""

    argv: list[str] | None = None          # a CLI command (in-process)
    call: Callable[[], tuple[int, str]] | None = None  # or an HTTP request returning (status, body)
    out: Path | None = None                # the output that must not exist after a failure
    code: int = 2                          # expected exit code (HTTP status for API cases)
    expect: tuple[str, ...] = ()           # substrings the message must contain
    check: Callable[[], None] | None = None  # extra check of the documented handling
    leftovers: tuple[str, ...] = ()        # names allowed in tmp/out afterwards (documented resume state)


CASES: dict[str, tuple[str, Callable]] = {}
KNOWN_BUGS: dict[str, str] = {}  # case → the bug it exposes (strict xfail: the test fails as soon as it is fixed)


def case(kind: str, bug: str | None = None):
    def deco(fn):
        name = fn.__name__.removeprefix("case_")
        CASES[name] = (kind, fn)
        if bug:
            KNOWN_BUGS[name] = bug
        return fn
    return deco


class Ctx:
    """Per-case directories and lazily started shared resources (the teacher server)."""

    def __init__(self, tmp: Path, shared, monkeypatch):
        self.tmp, self.inp, self.out = tmp, tmp / "in", tmp / "out"
        self.monkeypatch = monkeypatch
        self.inp.mkdir()
        self.out.mkdir()
        self.shared = shared

    @property
    def server(self):
        return self.shared.server()


# ================================================================================================ images
def _cache(ctx: Ctx, files: dict[str, Callable[[Path], Path]]) -> tuple[list[str], Path]:
    """``images cache`` over a cohort of the given image files (name → writer) plus one good PNG."""
    names = {"good.png": cf.png, **files}
    for name, write in names.items():
        write(ctx.inp / "images" / name)
    pd.DataFrame({"image_id": [Path(n).stem for n in names], "path": list(names)}).to_parquet(ctx.inp / "c.parquet")
    out = ctx.out / "cache"
    return ["images", "cache", "--cohort", str(ctx.inp / "c.parquet"), "--images-root", str(ctx.inp / "images"),
            "--out", str(out), "--size", str(cf.SIZE), "--workers", "1", "--no-progress"], out


def _cache_pixels(out: Path, image_id: str) -> np.ndarray:
    from cxrdistill.images.cache import ImageCache

    c = ImageCache.open(out)
    return np.asarray(c.array[c.index_of([image_id])[0]])


@case("image")
def case_truncated_png(ctx):
    argv, out = _cache(ctx, {"truncated.png": cf.truncated_png})
    return Run(argv, out=out, expect=("truncated.png", "truncated or corrupt", "re-copy", "--on-error skip"),
               leftovers=("cache.partial",))


@case("image")
def case_truncated_jpeg(ctx):
    argv, out = _cache(ctx, {"truncated.jpg": cf.truncated_jpeg})
    return Run(argv, out=out, expect=("truncated.jpg", "cannot be opened as an image", "corrupt", "re-copy"),
               leftovers=("cache.partial",))


@case("image")
def case_zero_byte_image(ctx):
    argv, out = _cache(ctx, {"zero.png": cf.zero_byte})
    return Run(argv, out=out, expect=("zero.png", "empty (0 bytes)", "drop it"), leftovers=("cache.partial",))


@case("image")
def case_text_file_named_png(ctx):
    argv, out = _cache(ctx, {"not_an_image.png": cf.text_as_png})
    return Run(argv, out=out, expect=("not_an_image.png", "not a readable image", "convert it"),
               leftovers=("cache.partial",))


@case("image")
def case_decompression_bomb(ctx):
    argv, out = _cache(ctx, {"bomb.png": lambda p: cf.bomb_png(p)})
    return Run(argv, out=out, expect=("bomb.png", "100,000,000 pixels", "decompression bomb", "CXRDISTILL_MAX_PIXELS"),
               leftovers=("cache.partial",))


@case("image")
def case_png_16bit(ctx):
    argv, out = _cache(ctx, {"sixteen.png": cf.png16})

    def check():
        np.testing.assert_array_equal(_cache_pixels(out, "sixteen"), cf.png16_expected())
    return Run(argv, out=out, code=0, check=check)


@case("image")
def case_png_rgba(ctx):
    argv, out = _cache(ctx, {"rgba.png": cf.rgba_png})

    def check():  # alpha ignored: the grey colour channels come through unchanged
        np.testing.assert_array_equal(_cache_pixels(out, "rgba"), cf.gradient())
    return Run(argv, out=out, code=0, check=check)


@case("image")
def case_jpeg_cmyk(ctx):
    argv, out = _cache(ctx, {"cmyk.jpg": cf.cmyk_jpeg})

    def check():  # converted to RGB then luma: the K channel's image, within JPEG error
        got = _cache_pixels(out, "cmyk").astype(int)
        assert np.abs(got - cf.gradient().astype(int)).mean() < 6, np.abs(got - cf.gradient()).mean()
    return Run(argv, out=out, code=0, check=check)


@case("image")
def case_dicom_monochrome1(ctx):
    argv, out = _cache(ctx, {"mono1.dcm": lambda p: cf.dicom(p, photometric="MONOCHROME1"),
                             "mono2.dcm": lambda p: cf.dicom(p, photometric="MONOCHROME2")})

    def check():  # same stored values: MONOCHROME1 (0 = white) is inverted so that bone is bright in both
        m1, m2 = _cache_pixels(out, "mono1").astype(int), _cache_pixels(out, "mono2").astype(int)
        assert np.corrcoef(m2.ravel(), cf.gradient().ravel())[0, 1] > 0.99
        assert np.abs(m1 - (255 - m2)).max() <= 1
    return Run(argv, out=out, code=0, check=check)


@case("image")
def case_dicom_truncated(ctx):
    argv, out = _cache(ctx, {"cut.dcm": cf.truncated_dicom})
    return Run(argv, out=out, expect=("cut.dcm", "truncated or corrupt"), leftovers=("cache.partial",))


@case("image")
def case_dicom_without_pixels(ctx):
    argv, out = _cache(ctx, {"report.dcm": cf.dicom_without_pixels})
    return Run(argv, out=out, expect=("report.dcm", "no pixel data", "drop it"), leftovers=("cache.partial",))


@case("image")
def case_embed_truncated_image(ctx):
    cf.png(ctx.inp / "images" / "good.png")
    cf.truncated_png(ctx.inp / "images" / "bad.png")
    pd.DataFrame({"image_id": ["good", "bad"], "path": ["good.png", "bad.png"]}).to_parquet(ctx.inp / "c.parquet")
    out = ctx.out / "store"

    def check():  # documented: the store is valid and holds only whole batches (here none); rerun resumes
        from cxrdistill.storage.store import EmbeddingStore

        st = EmbeddingStore.open(out)
        assert len(st) == 0 and st.verify()["ok"]
    return Run(["embed", "--teacher", "timm:resnet10t", "--size", str(cf.SIZE), "--cohort", str(ctx.inp / "c.parquet"),
                "--images-root", str(ctx.inp / "images"), "--out", str(out), "--no-progress"], out=None,
               expect=("bad.png", "truncated or corrupt", "re-copy"), check=check, leftovers=("store",))


@case("image")
def case_image_missing_at_import(ctx):
    csv = cf.chexpert_csv(ctx.inp / "train.csv", n=2)
    root = ctx.inp / "root"
    cf.png(root / "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg")  # a PNG named .jpg: fine
    out = ctx.out / "cohort.parquet"
    return Run(["cohort", "import", "chexpert", "--csv", str(csv), "--images-root", str(root), "--out", str(out)],
               out=out, expect=("1 of 2 image files", "missing", "patient00002", "--on-error skip"))


# ================================================================================================ tables
def _import(ctx, csv: Path) -> tuple[list[str], Path]:
    out = ctx.out / "cohort.parquet"
    return ["cohort", "import", "chexpert", "--csv", str(csv), "--no-image-check", "--out", str(out)], out


@case("table")
def case_csv_missing_column(ctx):
    header = [h for h in cf.CHEXPERT_HEADER if h != "Sex"]
    argv, out = _import(ctx, cf.chexpert_csv(ctx.inp / "train.csv", header=header))
    return Run(argv, out=out, expect=("train.csv", "column 'Sex'", "missing column"))


@case("table")
def case_csv_misspelled_column(ctx):
    header = ["Frontal/Lateal" if h == "Frontal/Lateral" else h for h in cf.CHEXPERT_HEADER]
    argv, out = _import(ctx, cf.chexpert_csv(ctx.inp / "train.csv", header=header))
    return Run(argv, out=out, expect=("train.csv", "column 'Frontal/Lateral'", "missing column"))


@case("table")
def case_csv_unknown_sex(ctx):
    argv, out = _import(ctx, cf.chexpert_csv(ctx.inp / "train.csv", changes={(3, "Sex"): "X"}))
    return Run(argv, out=out, expect=("train.csv", "row 3", "column 'Sex'", "unknown sex 'X'", "expected one of"))


@case("table")
def case_csv_duplicate_image(ctx):
    p = "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    argv, out = _import(ctx, cf.chexpert_csv(ctx.inp / "train.csv", changes={(4, "Path"): p}))
    return Run(argv, out=out, expect=("train.csv", "row 2", "duplicate image path", "also in row 4"))


@case("table")
def case_csv_not_utf8(ctx):
    argv, out = _import(ctx, cf.chexpert_csv(ctx.inp / "train.csv", encoding="latin-1",
                                             changes={(2, "Sex"): "Fémale"}))
    return Run(argv, out=out, expect=("train.csv", "not UTF-8", "re-save the file as UTF-8"))


@case("table")
def case_csv_empty_cohort(ctx):
    argv, out = _import(ctx, cf.chexpert_csv(ctx.inp / "train.csv", n=0))
    return Run(argv, out=out, expect=("train.csv", "cohort is empty"))


@case("table")
def case_split_patient_leakage(ctx):
    cohort = cf.cohort_table(ctx.inp / "cohort.parquet", n=4, patient_id=["p0", "p0", "p1", "p2"])
    split = cf.write_csv(ctx.inp / "split.csv", ["image_id", "split"],
                         [["img0", "train"], ["img1", "test"], ["img2", "train"], ["img3", "val"]])
    out = ctx.out / "split.parquet"
    return Run(["cohort", "split", str(cohort), "--out", str(out), "--from-file", str(split)], out=out,
               expect=("split.csv", "patient 'p0' has images in splits test and train"))


@case("table")
def case_cohort_duplicate_image_id(ctx):
    cohort = cf.cohort_table(ctx.inp / "cohort.parquet", n=4, image_id=["a", "b", "a", "c"])
    out = ctx.out / "cache"
    return Run(["images", "cache", "--cohort", str(cohort), "--images-root", str(ctx.inp), "--out", str(out),
                "--size", "32", "--workers", "1", "--no-progress"], out=out,
               expect=("duplicate image_id", "'a'", "column 'image_id'", "must be unique", "cohort.parquet"))


# ================================================================================================ predictions
def _audit(ctx, pred: Path, *extra) -> tuple[list[str], Path]:
    out = ctx.out / "audit"
    return ["audit", str(pred), "--attribute", "sex", "--n-boot", "0", "--min-n", "5", "--out", str(out), *extra], out


@case("predictions")
def case_pred_one_class_subgroup(ctx):
    n = 60
    y = (np.arange(n) % 3 == 0).astype(int)
    race = np.array((["White", "Black"] * n)[:n], dtype=object)
    race[y == 1] = "White"  # every positive is White: the Black group holds negatives only
    pred = cf.predictions_csv(ctx.inp / "pred.csv", n=n, race=race)
    argv, out = _audit(ctx, pred)
    argv[argv.index("sex")] = "race"

    def check():
        doc = json.loads((out / "audit.json").read_text())
        g = doc["tasks"]["effusion"]["attributes"]["race"]["groups"]
        assert g["Black"]["auc"] is None and g["Black"]["n_pos"] == 0 and "one class" in g["Black"]["reason"]
        assert g["White"]["auc"] is not None and g["White"]["reason"] is None
    return Run(argv, out=out, code=0, check=check)


@case("predictions")
def case_pred_nan_scores(ctx):
    p = np.full(60, 0.5)
    p[7] = np.nan
    argv, out = _audit(ctx, cf.predictions_csv(ctx.inp / "pred.csv", p_effusion=p))
    return Run(argv, out=out, expect=("pred.csv", "row 9", "column 'p_effusion'", "no score (NaN)",
                                      "--on-error skip"))


@case("predictions")
def case_pred_non_binary_labels(ctx):
    y = np.array([0, 1] * 30)
    y[4] = -1  # CheXpert's "uncertain" left in
    argv, out = _audit(ctx, cf.predictions_csv(ctx.inp / "pred.csv", y_effusion=y))
    return Run(argv, out=out, expect=("pred.csv", "row 6", "column 'y_effusion'", "label '-1' is not 0, 1 or blank",
                                      "label policy"))


@case("predictions")
def case_pred_infinite_score(ctx):
    p = np.full(60, 0.5)
    p[20] = np.inf
    argv, out = _audit(ctx, cf.predictions_csv(ctx.inp / "pred.csv", p_effusion=p))
    return Run(argv, out=out, expect=("pred.csv", "row 22", "column 'p_effusion'", "infinite", "finite"))


@case("predictions")
def case_pred_missing_attribute(ctx):
    argv, out = _audit(ctx, cf.predictions_csv(ctx.inp / "pred.csv"))
    argv[argv.index("sex")] = "gender"
    return Run(argv, out=out, expect=("pred.csv", "column 'gender'", "not found", "sex"))


@case("predictions")
def case_pred_duplicate_ids(ctx):
    ids = [f"img{k}" for k in range(60)]
    ids[10] = "img3"
    argv, out = _audit(ctx, cf.predictions_csv(ctx.inp / "pred.csv", image_id=ids))
    return Run(argv, out=out, expect=("pred.csv", "row 12", "duplicate image_id 'img3'", "one prediction per image"))


# ================================================================================================ embeddings
def _import_emb(ctx, src: Path, fmt: str, *extra) -> tuple[list[str], Path]:
    out = ctx.out / "store"
    return ["embeddings", "import", str(src), "--format", fmt, "--out", str(out), "--no-progress", *extra], out


@case("embeddings")
def case_npy_pickle_refused(ctx):
    marker = ctx.tmp / "MARKER"
    src = cf.pickled_npy(ctx.inp / "emb.npy", marker)
    (ctx.inp / "emb.ids.txt").write_text("a\nb\n")
    argv, out = _import_emb(ctx, src, "npy", "--ids", str(ctx.inp / "emb.ids.txt"))

    def check():
        assert not marker.exists(), "unpickling ran the payload"
    return Run(argv, out=out, expect=("emb.npy", "cannot be read as .npy", "object arrays are refused"), check=check)


@case("embeddings")
def case_npz_pickle_refused(ctx):
    marker = ctx.tmp / "MARKER"
    obj = np.empty(1, dtype=object)
    obj[0] = cf._Marker(marker)
    cf.npz(ctx.inp / "files" / "img0.npz", embedding=obj)
    argv, out = _import_emb(ctx, ctx.inp / "files", "cxr-foundation-npz")

    def check():
        assert not marker.exists(), "unpickling ran the payload"
    return Run(argv, out=out, expect=("img0.npz", "pickled objects", "refused"), check=check)


@case("embeddings")
def case_npz_without_embedding_key(ctx):
    for k in range(2):
        cf.npz(ctx.inp / "files" / f"img{k}.npz", features=np.zeros(16, np.float32))
    argv, out = _import_emb(ctx, ctx.inp / "files", "cxr-foundation-npz")
    return Run(argv, out=out, expect=("img0.npz", "no array 'embedding'", "features"))


@case("embeddings")
def case_npz_wrong_shape(ctx):
    cf.npz(ctx.inp / "files" / "img0.npz", embedding=np.zeros(16, np.float32))
    cf.npz(ctx.inp / "files" / "img1.npz", embedding=np.zeros(12, np.float32))
    argv, out = _import_emb(ctx, ctx.inp / "files", "cxr-foundation-npz")

    def check():  # documented: the store exists and holds only whole batches appended before the bad file (none)
        from cxrdistill.storage.store import EmbeddingStore

        st = EmbeddingStore.open(out)
        assert len(st) == 0 and st.verify()["ok"]
    return Run(argv, out=None, expect=("img1.npz", "shape (12,)", "the first file has (16,)", "one model output"),
               check=check, leftovers=("store",))


@case("embeddings")
def case_npy_rows_ids_mismatch(ctx):
    np.save(ctx.inp / "emb.npy", np.zeros((3, 8), np.float32))
    (ctx.inp / "ids.txt").write_text("a\nb\n")
    argv, out = _import_emb(ctx, ctx.inp / "emb.npy", "npy", "--ids", str(ctx.inp / "ids.txt"))
    return Run(argv, out=out, expect=("ids.txt", "2 ids", "3 rows"))


@case("embeddings")
def case_embedding_ids_not_in_cohort(ctx):
    for k in (0, 1, 7, 8):
        cf.npz(ctx.inp / "files" / f"img{k}.npz", embedding=np.zeros(16, np.float32))
    cohort = cf.cohort_table(ctx.inp / "cohort.parquet", n=4)
    argv, out = _import_emb(ctx, ctx.inp / "files", "cxr-foundation-npz", "--cohort", str(cohort), "--id-from",
                            "stem", "--strict")
    return Run(argv, out=out, expect=("files", "2 id(s) in the files are not in the cohort", "img7",
                                      "2 cohort image(s) have no embedding", "img2"))


def _store(path: Path, ids: list[str], dim: int = 8) -> Path:
    from cxrdistill.storage.store import EmbeddingStore

    st = EmbeddingStore.create(path, (dim,), "float32", {"name": "corpus", "version": "1"})
    st.append(ids, np.random.default_rng(0).standard_normal((len(ids), dim)).astype(np.float32))
    return path


@case("embeddings")
def case_store_missing_cohort_ids(ctx):
    cohort = cf.cohort_table(ctx.inp / "cohort.parquet", n=8)
    store = _store(ctx.inp / "store", [f"img{k}" for k in range(5)])
    out = ctx.out / "fair"
    return Run(["fair", "--cohort", str(cohort), "--embeddings", str(store), "--tasks", "pleural_effusion",
                "--attribute", "sex", "--method", "erm", "--seeds", "0", "--out", str(out)], out=out,
               expect=("store", "3", "no embedding", "img5"))


# ================================================================================================ configs
def _study(ctx, text: str | None) -> tuple[list[str], Path]:
    """``cxrdistill study CONFIG --out OUT`` (``text=None``: the config file does not exist)."""
    cfg = ctx.inp / "study.yaml" if text is None else cf.yaml_text(ctx.inp / "study.yaml", text)
    out = ctx.out / "study"
    return ["study", str(cfg), "--out", str(out)], out


@case("config")
def case_study_config_misspelled_key(ctx):
    argv, out = _study(ctx, "name: demo\ncohort:\n  sourse: synth\n")
    return Run(argv, out=out, expect=("study.yaml", "cohort.sourse", "unknown key",
                                      "Study configuration"))


@case("config")
def case_study_config_wrong_type(ctx):
    argv, out = _study(ctx, "name: demo\nsize: large\n")
    return Run(argv, out=out, expect=("study.yaml", "invalid config: size:", "valid integer"))


@case("config")
def case_study_config_missing_file(ctx):
    argv, out = _study(ctx, None)
    return Run(argv, out=out, expect=("study.yaml", "config file not found"))


@case("config")
def case_study_config_malformed_yaml(ctx):
    argv, out = _study(ctx, "teacher:\n  kind: [api\n")
    return Run(argv, out=out, expect=("study.yaml", "not valid YAML"))


@case("config")
def case_study_config_missing_table(ctx):
    argv, out = _study(ctx, f"name: demo\ncohort:\n  source: table\n  table: {ctx.inp / 'nope.parquet'}\n")

    def check():  # documented: the stage is named, earlier stages are kept for the re-run, nothing is published
        assert not (out / "results.json").exists() and not (out / "report.html").exists()
    return Run(argv, out=None, expect=("stage 'cohort' failed", "nope.parquet", "file not found",
                                       "earlier stages' results are kept"), check=check, leftovers=("study",))


def _distill(ctx, *extra) -> tuple[list[str], Path]:
    cohort = cf.cohort_table(ctx.inp / "cohort.parquet", n=8)
    store = _store(ctx.inp / "store", [f"img{k}" for k in range(8)])
    for k in range(8):
        cf.png(ctx.inp / "images" / f"img{k}.png")
    out = ctx.out / "run"
    return ["distill", "--cohort", str(cohort), "--images-root", str(ctx.inp / "images"), "--embeddings", str(store),
            "--out", str(out), "--size", "32", "--epochs", "1", "--quiet", "--cache-dir", str(ctx.tmp / "cache"),
            *extra], out


@case("config")
def case_distill_config_malformed_yaml(ctx):
    argv, out = _distill(ctx, "--config", str(cf.yaml_text(ctx.inp / "kd.yaml", "train:\n  lr: [1e-3\n")))
    return Run(argv, out=out, expect=("kd.yaml", "not valid YAML"))


@case("config")
def case_distill_config_misspelled_key(ctx):
    argv, out = _distill(ctx, "--config", str(cf.yaml_text(ctx.inp / "kd.yaml", "train:\n  lerning_rate: 0.1\n")))
    return Run(argv, out=out, expect=("kd.yaml", "train.lerning_rate", "unknown key"))


@case("config")
def case_unknown_kd_loss(ctx):
    argv, out = _distill(ctx, "--loss", "mse_cosin")
    return Run(argv, out=out, expect=("unknown kd loss 'mse_cosin'", "mse_cosine"))


@case("config")
def case_unknown_timm_backbone(ctx):
    argv, out = _distill(ctx, "--student", "resnet_nonexistent")
    return Run(argv, out=out, expect=("resnet_nonexistent", "timm"))


# ================================================================================================ API
def _post(ctx, body: bytes, token: str | None = "corpus-token", chunked: bool = False):
    def call():
        import httpx

        from cxrdistill.teachers import wire

        h = {"Content-Type": wire.PNG_BATCH}
        if token:
            h["Authorization"] = f"Bearer {token}"
        # chunked: no Content-Length header, so the server must count the bytes as they arrive
        content = (body[k:k + 4096] for k in range(0, len(body), 4096)) if chunked else body
        r = httpx.post(ctx.server.url + "/v1/embed", content=content, headers=h, timeout=30)
        return r.status_code, r.text
    return call


def _png_bytes(arr=None) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(cf.gradient() if arr is None else arr).save(buf, format="PNG")
    return buf.getvalue()


def _pack(images):
    from cxrdistill.teachers import wire

    return wire.pack_images(images)


@case("api")
def case_api_non_image(ctx):
    return Run(call=_post(ctx, _pack([_png_bytes(), b"%PDF-1.4 not an image"])), code=400,
               expect=("image 1", "not a readable image", "PNG or JPEG"))


@case("api")
def case_api_too_many_images(ctx):
    return Run(call=_post(ctx, _pack([_png_bytes()] * (SharedServer.MAX_BATCH + 1))), code=413,
               expect=("too many images", f"at most {SharedServer.MAX_BATCH}"))


@case("api")
def case_api_body_too_large(ctx):
    big = _png_bytes(np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8))  # ~40 KB of noise
    return Run(call=_post(ctx, _pack([big])), code=413,
               expect=("exceeds the server limit", f"{SharedServer.MAX_BYTES:,} bytes", "fewer or smaller"))


@case("api")
def case_api_body_too_large_chunked(ctx):
    big = _png_bytes(np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8))
    return Run(call=_post(ctx, _pack([big]), chunked=True), code=413,
               expect=("request exceeds the server limit", f"{SharedServer.MAX_BYTES:,} bytes"))


@case("api")
def case_api_wrong_token(ctx):
    return Run(call=_post(ctx, _pack([_png_bytes()]), token="not-the-token"), code=401,
               expect=("missing or invalid bearer token",))


@case("api")
def case_api_image_too_many_pixels(ctx):
    # a small PNG declaring 5000×5000 (zeros compress to nothing): refused before decoding
    return Run(call=_post(ctx, _pack([_png_bytes(np.zeros((1200, 1200), np.uint8))])), code=400,
               expect=("image 0", "pixels", "limit"))


@case("api")
def case_embed_wrong_token(ctx):
    cf.png(ctx.inp / "images" / "a.png")
    pd.DataFrame({"image_id": ["a"], "path": ["a.png"]}).to_parquet(ctx.inp / "c.parquet")
    ctx.monkeypatch.setenv("CORPUS_WRONG_TOKEN", "wrong-token-value")
    out = ctx.out / "store"
    return Run(["embed", "--teacher", ctx.server.url, "--token-env", "CORPUS_WRONG_TOKEN", "--cohort",
                str(ctx.inp / "c.parquet"), "--images-root", str(ctx.inp / "images"), "--out", str(out),
                "--no-progress"], out=out,
               expect=("refused", "HTTP 401", "missing or invalid bearer token", "--token-env"))


# ================================================================================================ runner
class SharedServer:
    """One real teacher server (uvicorn on 127.0.0.1, in a thread) for the API cases, started on first use."""

    MAX_BATCH = 4
    MAX_BYTES = 20_000
    MAX_PIXELS = 1000 * 1000

    def __init__(self):
        self._srv = None

    def server(self):
        if self._srv is None:
            from cxrdistill.teachers.local import resolve_teacher
            from cxrdistill.teachers.server import BackgroundServer, create_app

            app = create_app(resolve_teacher("timm:resnet10t", image_size=cf.SIZE), token="corpus-token",
                             max_batch=self.MAX_BATCH, max_request_bytes=self.MAX_BYTES, max_pixels=self.MAX_PIXELS)
            self._srv = BackgroundServer(app).start()
        return self._srv

    def stop(self):
        if self._srv is not None:
            self._srv.stop()


@pytest.fixture(scope="module")
def shared():
    s = SharedServer()
    yield s
    s.stop()


def _run_cli(argv, capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def _stray(d: Path) -> list[str]:
    """Temp files of atomic writes (``.name.XXXX.tmp``) and half-created stores anywhere under ``d``."""
    return [str(p) for p in d.rglob("*") if p.name.endswith(".tmp") or ".creating-" in p.name]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[n]))
                                  if n in KNOWN_BUGS else n for n in CASES], ids=list(CASES))
def test_corpus_case(name, tmp_path, capsys, monkeypatch, shared):
    _kind, build = CASES[name]
    ctx = Ctx(tmp_path, shared, monkeypatch)
    run = build(ctx)
    if run.argv is not None:
        code, stdout, stderr = _run_cli(run.argv, capsys)
        text = stderr.strip()
    else:
        code, text = run.call()
        stdout = ""
    if os.environ.get("CXRDISTILL_CORPUS_LOG"):  # collect what the user sees, e.g. to review the messages
        with open(os.environ["CXRDISTILL_CORPUS_LOG"], "a", encoding="utf-8") as fh:
            fh.write(f"{name}\t{code}\t{text.replace(str(tmp_path) + '/', '')}\n")
    assert code == run.code, (code, text, stdout)
    assert "Traceback" not in text + stdout
    if run.code != 0:
        if run.argv is not None:
            assert text.startswith("error: ") and "\n" not in text, text
        shown = text.replace(str(tmp_path), "<tmp>")  # so that an expected word cannot match the test's own path
        for s in run.expect:
            assert s in shown, (s, shown)
        if run.out is not None:
            assert not run.out.exists(), f"{run.out} left behind by a failed command"
        assert sorted(p.name for p in ctx.out.iterdir()) == sorted(run.leftovers), "unexpected files in the output dir"
    if run.check is not None:
        run.check()
    assert _stray(ctx.tmp) == []


def test_every_case_is_documented():
    """docs/reliability.md has a row for every case (and no row for a case that does not exist)."""
    doc = DOC.read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([a-z0-9_]+)` \|", doc, flags=re.M))
    assert rows == set(CASES), (set(CASES) - rows, rows - set(CASES))
    assert len(CASES) >= 30
