"""Float options of the KD losses declared as ``hparams``: defaults, overrides by keyword, and unknown names refused."""
import pytest
import torch

from cxrdistill.losses.kd import KD_LOSSES, build_kd_loss


def test_declared_options_have_defaults_and_overrides():
    assert KD_LOSSES.create("huber").delta == 1.0
    rkd = build_kd_loss("rkd", dim=4, options={"rkd": {"angle_weight": 0}})
    assert (rkd.distance_weight, rkd.angle_weight) == (1.0, 0.0)
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    # delta large enough that every residual is in the quadratic zone: Huber = MSE / 2
    assert torch.allclose(KD_LOSSES.create("huber", delta=1e6)(s, t), ((s - t) ** 2).mean() / 2)
    w0 = KD_LOSSES.create("mse_cosine", weight=0.0)(s, t)
    assert torch.allclose(w0, ((s - t) ** 2).mean())


def test_an_unknown_option_names_the_known_ones():
    with pytest.raises(TypeError, match="unexpected keyword argument 'delt'; its options: delta"):
        KD_LOSSES.create("huber", delt=2.0)
    with pytest.raises(TypeError, match="its options: none"):
        KD_LOSSES.create("mse", weight=2.0)
