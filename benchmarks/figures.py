"""Where a benchmark's figure goes: a PNG for docs/ and the same figure in a TensorBoard folder."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, png: Path, tb_dir: Path, tag: str) -> None:
    """Write ``fig`` to ``png`` and as ``tag`` to ``tb_dir`` (replacing that folder's earlier event files, so it
    holds the last run's figure only), then close it."""
    import matplotlib.pyplot as plt
    from torch.utils.tensorboard import SummaryWriter

    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    for old in tb_dir.glob("events.out.tfevents.*"):
        old.unlink()
    writer = SummaryWriter(str(tb_dir))
    writer.add_figure(tag, fig, global_step=0)
    writer.close()
    plt.close(fig)
