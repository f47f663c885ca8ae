"""CLI command modules. Each defines ``register(app)`` and imports only typer and the standard library at top level,
so that ``cxrdistill --help`` starts fast; heavy imports (torch, pandas) happen inside the commands."""

MODULES = [
    "cohort",
    "synth",
    "teacher",
    "embed",
    "embeddings",
    "images",
    "distill",
    "audit",
    "audit_features",
    "fair",
    "pretrain",
    "study",
    "fairkd",
]
