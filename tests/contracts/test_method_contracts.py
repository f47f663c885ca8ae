"""One contract for every registered training method (as scikit-learn's ``parametrize_with_checks``): every name in
``METHODS`` — which holds the fairness methods (``fair_*``) and the fair-distillation objectives (``fairkd_*``) too —
gets the same checks through the one trainer:

* a finite scalar loss on a tiny batch;
* gradients reach the model (its input-most layer), and every gradient is finite;
* a run killed after an epoch's checkpoint and resumed ends with the same weights and history as an uninterrupted one;
* the method's state survives the checkpoint file (save, then load with ``weights_only=True``) unchanged.
* validation reports the metric the method monitors (early stopping and the best checkpoint follow it), and
  sampling weights, when a method has them, cover the training set.

KD losses have their own contract (tests/distill/test_distill_kd_contract.py); here every one of them is also run
once through the ``distill`` method. A method that cannot meet a check is listed in ``EXCEPTIONS`` with the reason.
"""
from __future__ import annotations

import json

import pytest
import torch
from contract_cases import CASES, build, data, distill_model, first_layer

from cxrdistill.fairkd.base import FAIR_KD
from cxrdistill.fairness import FAIR_METHODS
from cxrdistill.losses.kd import KD_LOSSES
from cxrdistill.pretraining.methods import PRETRAINERS
from cxrdistill.storage.checkpoint import load_state, save_state
from cxrdistill.training.method import METHODS
from cxrdistill.training.trainer import TrainConfig, Trainer

NAMES = METHODS.names()

#: (check, method) → why the method is exempt from that check. Keep it short and keep it true.
EXCEPTIONS: dict[tuple[str, str], str] = {}

CHECKS = ("finite_loss", "gradients", "resume", "state_roundtrip", "monitor")


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 8, "lr": 1e-2, "progress": False, "seed": 0, **kw})


def skip_if_excepted(check: str, name: str) -> None:
    if (check, name) in EXCEPTIONS:
        pytest.skip(EXCEPTIONS[(check, name)])


def trainer_for(name: str, run_dir=None, log=None, seed: int = 0) -> Trainer:
    model, method, train, val = build(name, seed)
    return Trainer(model, method, train, val, config=cfg(), run_dir=run_dir, log=log)


# ---------------------------------------------------------------------------------------------- the registries
def test_every_registered_method_has_a_case():
    missing = sorted(set(NAMES) - set(CASES))
    assert not missing, f"add a case for {missing} in tests/contracts/contract_cases.py"
    assert not sorted(set(CASES) - set(NAMES)), "a case names a method that is no longer registered"


def test_family_registries_are_covered_through_methods():
    assert {f"fair_{n}" for n in FAIR_METHODS.names()} <= set(NAMES)
    assert {f"fairkd_{n}" for n in FAIR_KD.names()} <= set(NAMES)
    for n in FAIR_METHODS.names():
        assert METHODS.get(f"fair_{n}") is FAIR_METHODS.get(n)
    for n in FAIR_KD.names():
        assert METHODS.get(f"fairkd_{n}") is FAIR_KD.get(n)


def test_pretraining_recipes_train_registered_methods():
    """Every pretraining recipe hands the trainer a method of METHODS, so the contract covers it."""
    from cxrdistill.pretraining.methods.barlow import BarlowTwins
    from cxrdistill.pretraining.methods.supervised_meta import SupervisedMeta

    trains = {"supervised": SupervisedMeta, "supervised_meta": SupervisedMeta, "barlow": BarlowTwins}
    assert set(PRETRAINERS.names()) == set(trains), "a new pretraining recipe: say which method it trains"
    registered = {METHODS.get(n) for n in NAMES}
    assert all(cls in registered for cls in trains.values())


def test_exceptions_name_real_methods_and_checks():
    for (check, name), reason in EXCEPTIONS.items():
        assert check in CHECKS, check
        assert name in NAMES, f"{name!r} is not a registered method"
        assert len(reason) > 20, "say why"


# ---------------------------------------------------------------------------------------------- the checks
def _one_step(name: str):
    """A trainer set up for ``name`` (the method's setup has run) and its loss on the first 8 training items."""
    tr = trainer_for(name)
    batch = tr._to_device(tr.train_data.get_batch(torch.arange(8)))
    return tr, *tr.method.training_step(tr.train_model, batch)


@pytest.mark.parametrize("name", NAMES)
def test_finite_loss_on_a_tiny_batch(name):
    skip_if_excepted("finite_loss", name)
    tr, loss, logs = _one_step(name)
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0, name
    assert torch.isfinite(loss), f"{name}: loss {float(loss)}"
    assert all(isinstance(float(v), float) for v in logs.values()), logs


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_the_model(name):
    skip_if_excepted("gradients", name)
    tr, loss, _ = _one_step(name)
    loss.backward()
    p = first_layer(tr.model)
    assert p.grad is not None, f"{name}: no gradient reaches the model's first layer"
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    for n, q in tr.model.named_parameters():
        assert q.grad is None or torch.isfinite(q.grad).all(), f"{name}: non-finite gradient in {n}"


class Killed(Exception):
    pass


def _kill_after(epoch: int):
    """A log callback that stops the run right after epoch ``epoch``'s checkpoint is on disk (the trainer logs each
    epoch's row after saving it), as a SIGKILL between epochs would."""
    def log(msg: str) -> None:
        if msg.startswith(f"epoch={epoch} "):
            raise Killed
    return log


def _final(tr: Trainer) -> dict:
    return {k: v.detach().clone() for k, v in tr.model.state_dict().items()}


@pytest.mark.parametrize("name", NAMES)
def test_resume_after_a_kill_equals_an_uninterrupted_run(name, tmp_path):
    skip_if_excepted("resume", name)
    whole = trainer_for(name, tmp_path / "whole")
    whole.fit()
    with pytest.raises(Killed):
        trainer_for(name, tmp_path / "killed", log=_kill_after(1)).fit()
    assert (tmp_path / "killed" / "checkpoints" / "last.pt").exists()
    resumed = trainer_for(name, tmp_path / "killed")
    resumed.fit()
    assert resumed.epoch == whole.epoch == 3
    a, b = _final(whole), _final(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{name}: {k} differs after resume"
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in whole.history]
    again = [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.history]
    assert json.dumps(strip) == json.dumps(again)
    assert json.dumps(whole.method.state_dict(), default=str) == json.dumps(resumed.method.state_dict(), default=str)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)  # NaN == NaN here


@pytest.mark.parametrize("name", NAMES)
def test_state_survives_save_and_load(name, tmp_path):
    skip_if_excepted("state_roundtrip", name)
    tr = trainer_for(name)
    tr.cfg.epochs = 1
    tr.fit()  # state after real training (GroupDRO's weights, SWAD's window, the candidates …)
    state = tr.method.state_dict()
    save_state({"method": state, "model": tr.model.state_dict()}, tmp_path / "s.pt")
    back = load_state(tmp_path / "s.pt")  # weights_only=True: tensors and plain values only
    assert _same(state, back["method"]), name
    assert _same(tr.model.state_dict(), back["model"]), name
    fresh = build(name, seed=5)[1]
    fresh.load_state_dict(back["method"])
    assert _same(fresh.state_dict(), state), f"{name}: load_state_dict(state_dict()) does not restore the state"


@pytest.mark.parametrize("loss", KD_LOSSES.names())
def test_every_kd_loss_trains_through_distill(loss):
    """The KD-loss contract tests each loss alone; here each one also trains a student for a step in the trainer."""
    torch.manual_seed(0)
    train, val = data(("x", "t"))
    tr = Trainer(distill_model(loss), METHODS.create("distill"), train, val, config=cfg(epochs=1))
    hist = tr.fit()
    assert all(torch.isfinite(torch.tensor(hist[-1][k])) for k in ("train_loss", "val_kd_loss")), hist


@pytest.mark.parametrize("name", NAMES)
def test_validation_reports_the_monitored_metric(name):
    """Early stopping and the best checkpoint follow ``method.monitor``: validation must report it, as a number."""
    skip_if_excepted("monitor", name)
    tr = trainer_for(name)
    logs = tr.validate()
    assert tr.method.monitor in logs, f"{name}: monitors {tr.method.monitor!r}, validation gives {sorted(logs)}"
    assert isinstance(logs[tr.method.monitor], float)
    assert tr.method.monitor_mode in ("min", "max")


@pytest.mark.parametrize("name", NAMES)
def test_sample_weights_cover_the_training_set(name):
    tr = trainer_for(name)
    w = tr.method.sample_weights(tr.train_data)
    if w is not None:
        w = torch.as_tensor(w, dtype=torch.double)
        assert w.shape == (len(tr.train_data),) and bool((w >= 0).all()) and float(w.sum()) > 0, name
