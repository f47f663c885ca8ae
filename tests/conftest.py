"""Fixtures shared by every test directory."""
import pytest


@pytest.fixture
def die_once_at_epoch_1(monkeypatch):
    """``arm(cls)``: the training method ``cls`` raises once at the start of epoch 1, after epoch 0's checkpoint,
    like a job killed there. ``arm`` returns the epochs started, in order (a resumed run starts at epoch 1 again, a
    run started over at 0)."""

    def arm(cls):
        start = cls.on_epoch_start
        started: list[int] = []

        def die(self, epoch, trainer):
            started.append(epoch)
            if started == [0, 1]:
                raise RuntimeError("killed")
            start(self, epoch, trainer)

        monkeypatch.setattr(cls, "on_epoch_start", die)
        return started

    return arm
