"""Knowledge-distillation losses between student and teacher embeddings, by name (``KD_LOSSES``).

Every loss takes ``(s, t, sample_weight=None)`` with ``s`` and ``t`` of shape (N, D) or (N, T, D) and passes the same
contract tests (tests/distill/test_distill_kd_contract.py). A new loss is one small file here plus one import line.
"""
from cxrdistill.errors import CxrError
from cxrdistill.losses.kd.base import KD_LOSSES, KDLoss  # noqa: F401
from cxrdistill.losses.kd import (  # noqa: F401  (registers every loss)
    contrastive, cosine, huber, logit_kd, mae, mse, mse_cosine, mse_cosine_learned, rkd)
from cxrdistill.losses.kd.mix import MixedKD


def parse_loss_spec(spec) -> dict[str, float]:
    """``"mse"`` → {mse: 1}; ``"mse=1,rkd=0.5"`` or ``{"mse": 1, "rkd": 0.5}`` → a weighted mix."""
    if isinstance(spec, dict):
        out = {str(k): float(v) for k, v in spec.items()}
    else:
        out = {}
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            name, _, w = part.partition("=")
            try:
                out[name.strip()] = float(w) if w else 1.0
            except ValueError:
                raise CxrError(f"bad KD loss weight in {spec!r}: write e.g. 'mse=1,rkd=0.5'") from None
    if not out:
        raise CxrError("no KD loss given; choose one of: " + ", ".join(KD_LOSSES.names()))
    for name in out:
        KD_LOSSES.get(name)  # unknown names fail here with the list of choices
    return out


def build_kd_loss(spec, dim: int | None = None, options: dict[str, dict] | None = None) -> KDLoss:
    """One loss by name, or a :class:`MixedKD` for several; ``options[name]`` are that loss's keyword arguments."""
    weights = parse_loss_spec(spec)
    options = options or {}
    parts = {name: KD_LOSSES.create(name, dim=dim, **options.get(name, {})) for name in weights}
    if len(parts) == 1 and next(iter(weights.values())) == 1.0:
        return next(iter(parts.values()))
    return MixedKD(parts, weights, dim=dim)
