"""Every initialisation loads: random, a timm-named ImageNet file, the real efficientnet_lite0 weights, a checkpoint."""
from __future__ import annotations

import pytest
import torch

from cxrdistill.errors import CxrError, InputError
from cxrdistill.pretraining.inits import build_init, parse_init

from pretraining_helpers import BACKBONE


def test_parse_init(tmp_path):
    assert parse_init("random") == ("random", None)
    assert parse_init("imagenet") == ("imagenet", None)
    assert parse_init("imagenet:w.safetensors") == ("imagenet", "w.safetensors")
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"x")
    assert parse_init(str(f)) == ("checkpoint", str(f))
    with pytest.raises(CxrError, match="unknown initialisation"):
        parse_init("imagenett")


def test_random_and_imagenet_file(timm_file):
    path, sd = timm_file
    torch.manual_seed(0)
    rnd, info = build_init("random", BACKBONE, 3)
    assert info["init_kind"] == "random" and rnd.head.out_features == 3
    net, info = build_init(f"imagenet:{path}", BACKBONE, 3)
    own = net.backbone.state_dict()
    # the RGB stem is summed to one channel (timm's adapt_input_conv), deeper layers are copied as they are
    assert torch.allclose(own["conv_stem.weight"], sd["conv_stem.weight"].sum(1, keepdim=True))
    assert torch.equal(own["blocks.1.0.conv_pw.weight"], sd["blocks.1.0.conv_pw.weight"])
    assert not torch.equal(rnd.backbone.state_dict()["blocks.1.0.conv_pw.weight"], sd["blocks.1.0.conv_pw.weight"])
    assert net.head.out_features == 3 and info["weights"] == str(path)
    with pytest.raises(InputError, match="tensors match"):
        build_init(f"imagenet:{path}", "resnet10t", 3)  # another architecture's file
    with pytest.raises(InputError, match="not found"):
        build_init("imagenet:/nonexistent.safetensors", BACKBONE, 3)


def test_real_imagenet_lite0_loads():
    from cxrdistill.models.imagenet import imagenet_lite0
    from cxrdistill.storage.checkpoint import load_weights

    net, info = build_init("imagenet", "efficientnet_lite0", 2)
    ref, _ = load_weights(imagenet_lite0())
    own = net.backbone.state_dict()
    assert torch.equal(own["blocks.6.0.conv_pw.weight"], ref["blocks.6.0.conv_pw.weight"])
    assert torch.allclose(own["conv_stem.weight"], ref["conv_stem.weight"].sum(1, keepdim=True))
    with pytest.raises(CxrError, match="efficientnet_lite0 only"):
        build_init("imagenet", BACKBONE, 2)


def test_checkpoint_init(pretrained_ckpt):
    from cxrdistill.models.network import load_model

    saved, meta = load_model(pretrained_ckpt)
    assert meta["pretrain"]["method"] == "supervised" and saved.head is None  # saved without the meta head
    for spec in (f"checkpoint:{pretrained_ckpt}", str(pretrained_ckpt)):
        net, info = build_init(spec, BACKBONE, 5)
        assert info["init_kind"] == "checkpoint" and info["source"] == "pretrain"
        assert net.head.out_features == 5
        for k, v in saved.backbone.state_dict().items():
            assert torch.equal(net.backbone.state_dict()[k], v), k
    with pytest.raises(InputError, match="not found"):
        build_init("checkpoint:/nonexistent.safetensors", BACKBONE, 2)
