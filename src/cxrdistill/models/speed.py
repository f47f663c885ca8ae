"""Inference throughput of a model at a given resolution (images/s), measured the same way for teacher and student."""
from __future__ import annotations

import time

from cxrdistill.models.network import count_params


def inference_throughput(model, size: int, batch_size: int = 64, threads: int | None = 2, min_time: float = 1.0,
                         warmup: int = 2, max_batches: int = 1000, channels_last: bool = False,
                         repeats: int = 1) -> float:
    """Images per second of ``model`` on random (batch, 1, size, size) inputs, eval mode, no grad, ``threads``
    intra-op threads (restored afterwards); each repeat times ≥ ``min_time`` seconds of batches after ``warmup``;
    the best repeat is returned (the least disturbed by other processes on a shared machine).
    ``channels_last``: NHWC memory format (faster for depthwise convolutions on CPU)."""
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    best = 0.0
    try:
        model = model.eval()
        x = torch.randn(batch_size, 1, size, size)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            for _ in range(max(1, repeats)):
                n, t0 = 0, time.perf_counter()
                while n < max_batches:
                    model(x)
                    n += 1
                    if time.perf_counter() - t0 >= min_time:
                        break
                best = max(best, n * batch_size / (time.perf_counter() - t0))
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        torch.set_num_threads(old)
    return best


def best_layout_throughput(model, size: int, **kw) -> tuple[float, str]:
    """Throughput in the faster of the two memory layouts (a deployment choice each model gets), and which."""
    plain = inference_throughput(model, size, channels_last=False, **kw)
    nhwc = inference_throughput(model, size, channels_last=True, **kw)
    return (nhwc, "channels_last") if nhwc > plain else (plain, "contiguous")


def compare_speed(teacher, student, size: int, batch_size: int = 64, threads: int = 1, min_time: float = 0.5,
                  repeats: int = 7, layout_time: float = 0.3) -> dict:
    """Teacher vs student inference at the same resolution, batch size and thread count, in this process.

    Each model first gets its faster memory layout (a short timing of both); then ``repeats`` rounds each time the
    teacher and then the student (interleaved, so load from other processes hits both alike). The speed-up is the
    median of the rounds' ratios, so that one disturbed round cannot move it; each throughput is the median of its
    rounds. Returns ``{teacher: {params, throughput_img_s, layout, rounds}, student: {...}, speedup,
    speedup_rounds, image_size, batch_size, threads, repeats}``."""
    import statistics

    models = (("teacher", teacher), ("student", student))
    kw = dict(batch_size=batch_size, threads=threads, warmup=1)
    layout = {name: best_layout_throughput(m, size, min_time=layout_time, **kw)[1] for name, m in models}
    rounds: dict[str, list[float]] = {"teacher": [], "student": []}
    for _ in range(max(1, repeats)):
        for name, m in models:
            rounds[name].append(inference_throughput(m, size, min_time=min_time,
                                                     channels_last=layout[name] == "channels_last", **kw))
    ratios = [s / t for s, t in zip(rounds["student"], rounds["teacher"])]
    out = {name: {"params": count_params(m), "throughput_img_s": statistics.median(rounds[name]),
                  "layout": layout[name], "rounds": [round(r, 1) for r in rounds[name]]} for name, m in models}
    out["speedup"] = statistics.median(ratios)
    out["speedup_rounds"] = [round(r, 3) for r in ratios]
    out.update(image_size=int(size), batch_size=int(batch_size), threads=int(threads), repeats=len(ratios))
    return out
