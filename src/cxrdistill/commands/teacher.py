"""``cxrdistill teacher serve|pretrain|info``: run a teacher as an HTTP API, train the default one, describe one."""
from __future__ import annotations

from typing import Optional

import typer

from cxrdistill.commands import _common as C

_SIZE = typer.Option(None, "--size", min=8, help="image side in pixels (default: the model's input size)")
_LOCAL_DEVICE = C.device_option(help=C.DEVICE_HELP + " Only for a model run in this process (torch:, timm:).")

teacher_app = typer.Typer(help="The black-box teacher: serve it as an API, pretrain the default one, show its info.",
                          no_args_is_help=True)


@teacher_app.command("serve")
def serve(
    model: str = typer.Argument(..., help="torch:CHECKPOINT, timm:NAME[:WEIGHTS] or a checkpoint path"),
    host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on (0.0.0.0 exposes it to the network)"),
    port: Optional[int] = typer.Option(None, "--port", min=0, max=65535,
                                       help="TCP port (0: any free port, printed; default: $AIP_HTTP_PORT or 8000)"),
    token_env: Optional[str] = typer.Option(None, "--token-env", help="require this env variable's bearer token"),
    max_batch: int = typer.Option(64, "--max-batch", min=1, help="most images per request"),
    max_request_mb: float = typer.Option(32.0, "--max-request-mb", min=0.001, help="largest request body (MiB)"),
    max_pixels: int = typer.Option(4096 * 4096, "--max-pixels", min=1, help="largest image accepted (pixels)"),
    size: Optional[int] = _SIZE,
    image_size: Optional[int] = C.hidden("--image-size"),
    faults: Optional[str] = typer.Option(None, "--faults",
                                         help='inject failures, e.g. "5xx=0.1,delay=0.05:0.3,drop=0.05,seed=1"'),
    log_requests: Optional[str] = typer.Option(None, "--log-requests",
                                               help="keep every received request (headers, raw body) in this dir"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch threads for inference"),
    device: str = C.device_option(),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level"),
) -> None:
    """Serve a teacher: POST /v1/embed (PNG images in, embeddings out), GET /v1/info, GET /healthz; CXR Foundation's
    Vertex AI signature (POST /predict, GET /health); the Open Inference Protocol (/v2/...)."""
    import os
    import signal

    import torch

    from cxrdistill.teachers.faults import FaultSpec
    from cxrdistill.teachers.local import resolve_teacher, token_from_env
    from cxrdistill.teachers.server import create_app
    from cxrdistill.teachers.server import serve as run_server

    if threads:
        torch.set_num_threads(threads)
    token = token_from_env(token_env)
    spec = FaultSpec.parse(faults)
    t = resolve_teacher(model, image_size=size or image_size, device=device)
    app = create_app(t, token=token, max_batch=max_batch, max_request_bytes=int(max_request_mb * 2**20),
                     max_pixels=max_pixels, faults=spec, log_dir=log_requests)

    served = {"url": None}

    def ready(url: str) -> None:
        served["url"] = url
        i = t.info
        typer.echo(f"teacher {i.name} (version {i.version}, embedding {list(i.embedding_shape)}, "
                   f"{i.image_size} px, on {t.device}) serving at {url}{' with bearer-token auth' if token else ''}"
                   f"{' and fault injection' if spec else ''}", err=True)

    if port is None:
        aip = os.environ.get("AIP_HTTP_PORT")  # set by Vertex AI when it starts a custom container
        port = int(aip) if aip and aip.isdigit() else 8000

    def stop(signum, frame):
        raise KeyboardInterrupt

    # Ctrl-C or SIGTERM (how a container is stopped): uvicorn shuts down cleanly and then raises the signal again;
    # for a server that is a normal end, so it ends with its summary like every command
    old = signal.signal(signal.SIGTERM, stop)
    try:
        run_server(app, host, port, log_level=log_level, on_ready=ready)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
    C.summary("teacher serve", None, teacher=t.info.name, url=served["url"], device=str(t.device))


@teacher_app.command("info")
def info(
    model: str = typer.Argument(..., help="http://HOST:PORT, vertex:URL, kserve:URL, torch:CHECKPOINT or "
                                          "timm:NAME[:WEIGHTS]"),
    token_env: Optional[str] = typer.Option(None, "--token-env", help="environment variable holding the API token"),
    token_command: Optional[str] = typer.Option(None, "--token-command", help="command printing the API token"),
    size: Optional[int] = _SIZE,
    image_size: Optional[int] = C.hidden("--image-size"),
    device: str = _LOCAL_DEVICE,
) -> None:
    """Print a teacher's info as JSON (name, version, embedding shape, dtype, image size)."""
    import asyncio

    from cxrdistill.teachers.client import open_api
    from cxrdistill.teachers.local import device_for, is_remote, resolve_teacher, token_from_env

    device = device_for(model, device)
    if is_remote(model):
        async def get():
            async with open_api(model, token_from_env(token_env), token_command=token_command) as c:
                i = await c.info()
                return {**i.to_dict(), "api": c.describe(), **({"limits": c.limits} if hasattr(c, "limits") else {})}

        d = asyncio.run(get())
    else:
        from cxrdistill.models.network import count_params

        t = resolve_teacher(model, image_size=size or image_size, device=device)
        d = {**t.info.to_dict(), "params": count_params(t.model), "device": str(t.device)}
    C.summary("teacher info", None, **d)


@teacher_app.command("pretrain")
def pretrain(
    out: str = C.out_option(help="Teacher checkpoint to write (.safetensors)."),
    n: int = typer.Option(3000, "--n", min=16, help="images in the synthetic pretraining cohort"),
    size: int = typer.Option(64, "--size", min=16, help="image side in pixels"),
    backbone: str = typer.Option("resnet18", "--backbone", help="any timm model name"),
    embed_dim: Optional[int] = typer.Option(None, "--embed-dim", min=1,
                                            help="add a projector to this width (default: the backbone's features)"),
    epochs: int = typer.Option(3, "--epochs", min=1, help="training epochs"),
    batch_size: int = typer.Option(64, "--batch-size", min=2, help="training batch size"),
    lr: float = typer.Option(2e-3, "--lr", min=0, help="learning rate"),
    contrastive: float = typer.Option(0.1, "--contrastive", min=0, help="weight of the contrastive term (0: off)"),
    contrastive_kind: str = typer.Option("supcon", "--contrastive-kind",
                                         help="supcon (label-aware, one view) or simclr (two augmented views)"),
    scenario: str = typer.Option("pretrain", "--scenario", help="synthetic scenario (name or YAML file)"),
    seed: int = C.seed_option(1234),
    workers: int = typer.Option(2, "--workers", min=1, help="processes rendering the synthetic cohort"),
    device: str = C.device_option(),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                          help="torch CPU threads (1 is fastest on a machine shared with other jobs)"),
    run_dir: Optional[str] = typer.Option(None, "--run-dir", help="checkpoints for resume (default: OUT.run/)"),
    progress: bool = C.progress_option(),
    quiet: bool = C.quiet_option(),
) -> None:
    """Train the default "foundation model" on a synthetic pretraining cohort (its own planted bias)."""
    from cxrdistill.teachers.pretrain import TeacherPretrainConfig, pretrain_teacher

    if threads:
        import torch

        torch.set_num_threads(threads)
    cfg = TeacherPretrainConfig(n=n, size=size, backbone=backbone, embed_dim=embed_dim, epochs=epochs,
                                batch_size=batch_size, lr=lr, contrastive=contrastive,
                                contrastive_kind=contrastive_kind, scenario=scenario, seed=seed, workers=workers,
                                device=device)
    res = pretrain_teacher(out, cfg, run_dir=run_dir or f"{out}.run", progress=progress and not quiet,
                           log=(lambda s: None) if quiet else (lambda s: typer.echo(s, err=True)))
    C.summary("teacher pretrain", out, **{k: v for k, v in res.items() if k not in ("command", "status", "out")})


def register(app: typer.Typer) -> None:
    app.add_typer(teacher_app, name="teacher")
