"""Teacher benchmarks, side by side in one run: HTTP client end-to-end vs the same model in-process, Vertex AI JSON vs
our protocol, wire formats, teacher vs student forward speed, and (full mode) the default teacher's pretraining time
and linear-probe AUC."""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cxrdistill.bench.rounds import cpu_seconds, paired_rounds

TEACHER_BACKBONE = "resnet18"  # the default of `cxrdistill teacher pretrain`
STUDENT_BACKBONE = "mobilenetv3_small_050"


def _row(name, value, unit, goal="", note=""):
    return {"name": name, "value": value, "unit": unit, "goal": goal, "note": note}


def _write_cohort(root: Path, images: np.ndarray) -> Path:
    import pandas as pd
    from PIL import Image

    rows = []
    (root / "img").mkdir(parents=True)
    for k, a in enumerate(images):
        rel = f"img/{k:06d}.png"
        Image.fromarray(a).save(root / rel, compress_level=1)
        rows.append({"image_id": f"i{k:06d}", "path": rel})
    path = root / "cohort.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def _start_server(ckpt: Path, env: dict) -> tuple[subprocess.Popen, str]:
    exe = str(Path(sys.executable).with_name("cxrdistill"))
    p = subprocess.Popen([exe, "teacher", "serve", f"torch:{ckpt}", "--port", "0", "--log-level", "warning"],
                         env=env, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        line = p.stderr.readline()
        m = re.search(r"serving at (http://\S+)", line or "")
        if m:
            return p, m.group(1)
        if p.poll() is not None:
            break
    p.kill()
    raise RuntimeError("teacher server did not start")


def _model_throughput(teacher, images: np.ndarray, batch: int, repeats: int = 1) -> float:
    teacher.embed(images[:batch])  # warm-up
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in range(0, len(images), batch):
            teacher.embed(images[s:s + batch])
        best = max(best, len(images) / (time.perf_counter() - t0))
    return best


def _wire_rows(n_img: int = 64, dim: int = 512, size: int = 64) -> list[dict]:
    """Request parsing (framed vs multipart) and response encoding (raw vs JSON base64), server + client side."""
    from starlette.datastructures import Headers
    from starlette.formparsers import MultiPartParser

    from cxrdistill.images.decode import encode_png
    from cxrdistill.teachers import wire

    rng = np.random.default_rng(0)
    pngs = [encode_png((rng.random((size, size)) * 255).astype(np.uint8)) for _ in range(n_img)]
    framed = wire.pack_images(pngs)
    boundary = "cxrdistillboundary"
    parts = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"x.png\"\r\n"
                     f"Content-Type: image/png\r\n\r\n".encode() + p + b"\r\n" for p in pngs)
    mp = parts + f"--{boundary}--\r\n".encode()
    headers = Headers({"content-type": f"multipart/form-data; boundary={boundary}", "content-length": str(len(mp))})

    async def parse_mp():
        async def stream():
            yield mp
            yield b""

        form = await MultiPartParser(headers, stream(), max_part_size=2**25).parse()
        out = [await f.read() for _, f in form.multi_items()]
        await form.close()
        return out

    def timeit(fn, reps=20):
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps * 1e3

    t_framed = timeit(lambda: wire.unpack_images(framed))
    t_mp = timeit(lambda: asyncio.run(parse_mp()))
    emb = rng.normal(size=(n_img, dim)).astype(np.float32)

    def raw():
        data, h = wire.encode_embeddings(emb)
        return wire.decode_embeddings(data, h["X-Embedding-Shape"], h["X-Embedding-Dtype"])

    def js():
        import json

        return wire.embeddings_from_json(json.loads(json.dumps(wire.embeddings_json(emb))))

    t_raw, t_json = timeit(raw), timeit(js)
    raw_bytes = emb.nbytes
    json_bytes = len(__import__("json").dumps(wire.embeddings_json(emb)))
    return [
        _row("request parse, framed PNG batch (64 images)", round(t_framed, 3), "ms", "",
             f"multipart/form-data: {t_mp:.3f} ms ({t_mp / max(t_framed, 1e-9):.0f}× slower); the client sends framed"),
        _row("response encode+decode, raw float32 (64×512)", round(t_raw, 3), "ms", "",
             f"JSON+base64: {t_json:.3f} ms, {json_bytes / raw_bytes:.2f}× the bytes; raw is the default"),
    ]


def api_compare(teacher, ckpt: Path, cohort: Path, tmp: Path, *, size: int, batch: int, conc: int, rounds: int,
                env: dict) -> dict:
    """The same model through the same extraction loop (files → decode → model → store): in-process (the loaded
    model is passed in, so neither side counts model loading), and over HTTP to a server process serving the same
    checkpoint — our protocol, and CXR Foundation's Vertex AI JSON signature at /predict. Many short rounds
    interleave the two sides (:func:`~cxrdistill.bench.rounds.paired_rounds`); the CPU time per image counts this
    process and the server's."""
    import itertools

    from cxrdistill.storage.store import EmbeddingStore
    from cxrdistill.teachers.client import embed_cohort

    proc, url = _start_server(ckpt, env)
    specs = {"local": (teacher, 2), "http": (url, conc), "vertex": (f"vertex:{url}/predict", conc)}
    counters = {k: itertools.count() for k in specs}

    def side(kind: str):
        spec, c = specs[kind]

        def go() -> int:
            out = tmp / f"store_{kind}{next(counters[kind])}"
            return embed_cohort(spec, cohort, tmp, out, batch_size=batch, size=size, concurrency=c,
                                progress=False).embedded
        return go

    server_cpu = lambda: cpu_seconds(proc.pid)  # noqa: E731
    try:
        for kind in specs:  # warm-up: connections, allocator, the server's first requests
            side(kind)()
        main = paired_rounds(side("http"), side("local"), rounds, extra_cpu=server_cpu)
        vertex = paired_rounds(side("vertex"), side("http"), max(1, rounds // 3), extra_cpu=server_cpu)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    stores = {k: EmbeddingStore.open(tmp / f"store_{k}0") for k in specs}
    ids = stores["local"].ids
    ref = stores["local"].get(ids)
    return {"main": main, "vertex": vertex,
            "max_diff": {k: float(np.abs(stores[k].get(ids) - ref).max()) for k in ("http", "vertex")}}


def run(quick: bool = False) -> list[dict]:
    """Rows measured in one run: :func:`api_rows`, the wire formats and (full mode) the default teacher's pretraining
    and probe."""
    rows = api_rows(quick)
    rows += _wire_rows()
    if not quick:
        rows += pretrain_rows()
    return rows


def api_rows(quick: bool = False) -> list[dict]:
    """HTTP client vs in-process, Vertex JSON vs our protocol, and teacher vs student forward speed. quick: 192
    images per round; full: 512."""
    import torch

    from cxrdistill import synth
    from cxrdistill.models.network import CxrNet, count_params, save_model
    from cxrdistill.teachers.local import resolve_teacher

    n, size, batch, conc, rounds = (192, 64, 32, 2, 2) if quick else (512, 64, 32, 3, 9)
    rows: list[dict] = []
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))}
    with tempfile.TemporaryDirectory(prefix="cxrdistill-bench-teacher-") as tmp:
        tmp = Path(tmp)
        images, _ = synth.render_batch(n, size, seed=5, scenario="none", workers=2)
        cohort = _write_cohort(tmp, images)
        torch.manual_seed(0)
        net = CxrNet(TEACHER_BACKBONE, in_chans=1, num_classes=14)
        ckpt = tmp / "teacher.safetensors"
        save_model(net, ckpt, teacher={"name": "bench-teacher", "image_size": size})
        teacher = resolve_teacher(f"torch:{ckpt}")

        # the model alone, on pixels already in memory
        model_rate = _model_throughput(teacher, images, batch)
        m = api_compare(teacher, ckpt, cohort, tmp, size=size, batch=batch, conc=conc, rounds=rounds, env=env)
        main, vx = m["main"], m["vertex"]
        med, q25, q75 = main.summary("wall")
        http_rate, local_rate = main.rate("a"), main.rate("b")
        cpu_ms = {"http": 1e3 / main.rate("a", "cpu"), "local": 1e3 / main.rate("b", "cpu"),
                  "vertex": 1e3 / vx.rate("a", "cpu")}
        rows += [
            _row("HTTP client end-to-end / in-process end-to-end", round(med, 3), "ratio", "≥ 0.9",
                 f"median of {rounds} interleaved rounds (IQR {q25:.3f}–{q75:.3f}); CPU time per image (this process "
                 f"+ the server's): {main.describe('cpu')}, {cpu_ms['http']:.2f} vs {cpu_ms['local']:.2f} ms; "
                 f"{http_rate:.0f} vs {local_rate:.0f} img/s; same loop, files → store; {n} images {size} px, "
                 f"batch {batch}, concurrency {conc}; max |Δ| between the stores {m['max_diff']['http']:.1e}; "
                 f"load average {os.getloadavg()[0]:.1f}"),
            _row("Vertex AI JSON (/predict) / our protocol, end-to-end on loopback", round(vx.summary("wall")[0], 3),
                 "ratio", "", f"median of {len(vx.wall['a'])} interleaved rounds; {vx.rate('a'):.0f} vs "
                              f"{vx.rate('b'):.0f} img/s; base64 PNG instances in JSON, embeddings as JSON lists "
                              f"back; same server, cohort and batch; CPU per image {cpu_ms['vertex']:.2f} ms "
                              f"(CPU ratio {vx.describe('cpu')}); max |Δ| {m['max_diff']['vertex']:.1e}"),
            _row("HTTP client end-to-end / model alone on in-memory pixels", round(http_rate / model_rate, 3), "ratio",
                 "", f"model alone {model_rate:.0f} img/s ({TEACHER_BACKBONE}, {count_params(net) / 1e6:.1f} M)"),
            _row("HTTP client end-to-end throughput", round(http_rate, 1), "img/s", "",
                 "server in its own process; pixels re-encoded as PNG on the client (stored, on loopback), decoded on "
                 "the server"),
        ]
        # teacher vs a mobile student, same harness and resolution
        torch.manual_seed(0)
        stu = CxrNet(STUDENT_BACKBONE, in_chans=1, num_classes=14)
        sckpt = tmp / "student.safetensors"
        save_model(stu, sckpt, teacher={"name": "bench-student", "image_size": size})
        stu_rate = _model_throughput(resolve_teacher(f"torch:{sckpt}"), images, batch)
        rows.append(_row("student forward speed / teacher forward speed", round(stu_rate / model_rate, 2), "ratio", "",
                         f"teacher {TEACHER_BACKBONE} {model_rate:.0f} img/s ({count_params(net) / 1e6:.1f} M), "
                         f"student {STUDENT_BACKBONE} {stu_rate:.0f} img/s ({count_params(stu) / 1e6:.2f} M), "
                         f"{size} px"))
    return rows


def probe_auc(checkpoint: str | Path, n: int = 1500, size: int = 64, seed: int = 7,
              scenario: str = "mixed") -> dict:
    """Linear probe (logistic regression per task) on the teacher's embeddings of a downstream synthetic cohort
    (half train, half test); AUCs against the observed labels and against the ground truth."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    from cxrdistill import synth
    from cxrdistill.cohorts.policies import build_targets
    from cxrdistill.teachers.local import resolve_teacher

    images, meta = synth.render_batch(n, size, seed=seed, scenario=scenario, workers=2)
    t = resolve_teacher(f"torch:{checkpoint}")
    emb = t.embed(images).reshape(n, -1)
    tasks = t.info.extra.get("tasks") or []
    y = build_targets(meta, tasks, "u-ignore")
    yt = meta[[f"true_{k}" for k in tasks]].to_numpy(float)
    h = n // 2
    x = StandardScaler().fit(emb[:h]).transform(emb)
    obs, true = {}, {}
    for k, task in enumerate(tasks):
        ok = ~np.isnan(y[:h, k])
        if len(np.unique(y[:h][ok, k])) < 2 or len(np.unique(yt[h:, k])) < 2:
            continue
        s = LogisticRegression(C=0.1, max_iter=2000).fit(x[:h][ok], y[:h][ok, k]).decision_function(x[h:])
        okt = ~np.isnan(y[h:, k])
        if len(np.unique(y[h:][okt, k])) == 2:
            obs[task] = float(roc_auc_score(y[h:][okt, k], s[okt]))
        true[task] = float(roc_auc_score(yt[h:, k], s))
    main = [k for k in ("atelectasis", "cardiomegaly", "consolidation", "edema", "pleural_effusion") if k in true]
    return {"auc_observed": obs, "auc_true": true, "mean_observed": float(np.mean(list(obs.values()))),
            "mean_true": float(np.mean(list(true.values()))),
            "main5_observed": float(np.mean([obs[k] for k in main if k in obs])),
            "main5_true": float(np.mean([true[k] for k in main]))}


def pretrain_rows() -> list[dict]:
    """The default teacher as the demo makes it: wall time of `teacher pretrain` at its defaults, and probe AUCs."""
    from cxrdistill.teachers.pretrain import TeacherPretrainConfig, pretrain_teacher

    with tempfile.TemporaryDirectory(prefix="cxrdistill-bench-pretrain-") as tmp:
        ckpt = Path(tmp) / "teacher.safetensors"
        t0 = time.perf_counter()
        s = pretrain_teacher(ckpt, TeacherPretrainConfig(), progress=False)
        wall = time.perf_counter() - t0
        p = probe_auc(ckpt)
    return [
        _row("teacher pretrain wall time (defaults)", round(wall, 1), "s", "≲ 120",
             f"render {s['render_seconds']:.0f} s + train {s['train_seconds']:.0f} s; {s['backbone']} "
             f"{s['params'] / 1e6:.1f} M, {s['embedding_dim']}-d, {s['image_size']} px, n={s['n_train'] + s['n_val']}"),
        _row("linear probe on teacher embeddings, mean AUC (5 main findings, ground truth)",
             round(p["main5_true"], 3), "AUC", "≥ 0.8",
             f"observed labels {p['main5_observed']:.3f}; all 14 tasks: true {p['mean_true']:.3f}, observed "
             f"{p['mean_observed']:.3f}; downstream cohort 'mixed', 1500 images, half train / half test"),
    ]


SECTIONS = {"api": api_rows}

if __name__ == "__main__":  # python -m cxrdistill.bench.teacher [--quick] [api]: the whole area or one section
    import json

    fn = next((SECTIONS[a] for a in sys.argv[1:] if a in SECTIONS), run)
    print(json.dumps(fn(quick="--quick" in sys.argv), indent=1))
