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
