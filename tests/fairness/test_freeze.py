"""``freeze``: the frozen set of real timm models is the one the former prefix-per-name rule gave, in linear time."""
import time

import pytest
import timm
import torch

from cxrdistill.fairness.freeze import classifier_prefix, freeze


def _prefix_rule(model: torch.nn.Module) -> list[str]:
    """The former definition of ``backbone``: every backbone parameter name became a prefix, and a parameter was
    frozen when its name started with any of them (quadratic in the number of parameters)."""
    keep = classifier_prefix(model)
    prefixes = [n for n, _ in model.named_parameters() if not n.startswith(keep)]
    return [n for n, _ in model.named_parameters() if any(n == pre or n.startswith(pre) for pre in prefixes)]


@pytest.mark.parametrize("arch", ["resnet18", "mobilenetv3_small_050"])
def test_backbone_freezes_the_same_names_as_the_prefix_rule(arch):
    model = timm.create_model(arch, pretrained=False, num_classes=3)
    expected = _prefix_rule(model)
    names = freeze(model, "backbone")
    assert names == expected
    assert [n for n, p in model.named_parameters() if not p.requires_grad] == expected
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith(classifier_prefix(model)) for n in trainable)
    assert len(names) + len(trainable) == len(list(model.named_parameters()))


def test_prefix_list_and_all_on_a_timm_model():
    model = timm.create_model("resnet18", pretrained=False, num_classes=3)
    names = freeze(model, "conv1., bn1.")
    assert names == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert model.bn1.momentum == 0.0 and model.layer1[0].bn1.momentum != 0.0
    other = timm.create_model("resnet18", pretrained=False, num_classes=3)
    assert freeze(other, "all") == [n for n, _ in other.named_parameters()]
    assert not any(p.requires_grad for p in other.parameters())


def test_backbone_is_linear_in_the_number_of_parameters():
    """20 000 parameters: the former rule made 4·10⁸ prefix checks (minutes); the name set takes well under 1 s."""
    model = torch.nn.Sequential(torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(1)) for _ in range(20_000)]),
                                torch.nn.Linear(2, 1))
    t0 = time.perf_counter()
    names = freeze(model, "backbone")
    assert time.perf_counter() - t0 < 2.0
    assert len(names) == 20_000 and names[0] == "0.0" and model[1].weight.requires_grad
