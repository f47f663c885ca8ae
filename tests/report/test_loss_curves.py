"""Loss curves show every run, a one-epoch run included (as points), on whole-number epochs."""
from cxrdistill.report.plots import loss_curves, plt


def test_one_epoch_runs_are_visible_points_and_epochs_are_integers():
    fig = loss_curves({"random": [{"epoch": 1, "train_loss": 0.5, "val_loss": 0.45}],
                       "imagenet": [{"epoch": 1, "train_loss": 0.4, "val_loss": 0.38},
                                    {"epoch": 2, "train_loss": 0.3, "val_loss": 0.36}]})
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 4 and all(ln.get_marker() not in (None, "None", "") for ln in lines)
    assert [list(ln.get_ydata()) for ln in lines[:2]] == [[0.5], [0.45]]
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    plt.close(fig)


def test_one_epoch_grid_is_points_on_the_whole_epoch_axis_not_stacked():
    """The demo's grid: four initialisations fine-tuned for one epoch each (8 points)."""
    runs = {name: [{"epoch": 1, "train_loss": 0.9 + k / 10, "val_loss": 0.95 + k / 10}]
            for k, name in enumerate(["random", "imagenet", "supervised", "barlow"])}
    fig = loss_curves(runs)
    ax = fig.axes[0]
    fig.canvas.draw()
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks == [1.0]  # one whole-number tick, not 0.945 … 1.050
    assert [t.get_text() for t in ax.get_xticklabels() if t.get_text()] == ["1"]
    xs = sorted({round(float(ln.get_xdata()[0]), 6) for ln in ax.get_lines()})
    assert len(xs) == 4 and xs[0] >= lo and xs[-1] <= hi and xs[-1] - xs[0] < 0.5  # side by side around epoch 1
    plt.close(fig)
