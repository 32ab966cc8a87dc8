"""OUT/curves.png: loss and accuracy per epoch, from metrics.jsonl (for the homework write-up)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], label="train", marker=".")
    ax_loss.plot(epochs, [r.get("val_loss") for r in rows], label="val", marker=".")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(epochs, [r["train_top1"] for r in rows], label="train top-1", marker=".")
    ax_acc.plot(epochs, [r.get("val_top1") for r in rows], label="val top-1", marker=".")
    ax_acc.plot(epochs, [r.get("val_top5") for r in rows], label="val top-5", marker=".", alpha=0.6)
    if any(r.get("val_top1_flip") is not None for r in rows):
        ax_acc.plot(epochs, [r.get("val_top1_flip") for r in rows], label="val top-1, flip TTA", marker=".",
                    linestyle="--")
    best = max((r.get("val_top1") or 0 for r in rows), default=0)
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title=f"accuracy (best val top-1 {best:.2f}%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
