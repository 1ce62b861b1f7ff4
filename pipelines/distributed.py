"""Slices spread over several GPUs (or nodes) with Lightning ``Trainer.predict``.

Each batch of slices is one prediction step of a ``LightningModule`` that wraps the same
``BatchReconstructor`` the single-process loop calls, so the results do not depend on the number
of devices. Lightning's DDP strategy gives every process its share of the batches; a
``BasePredictionWriter`` saves each process's results to a shared temporary folder, and the
calling process collects them (``Trainer.predict`` only returns the results of its own rank).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["predict_batches"]


def predict_batches(reconstructor: Any, batches: list[tuple[int, torch.Tensor]], *, devices: int, accelerator: str = "cpu",
                    num_nodes: int = 1) -> list[Any]:
    """Run ``reconstructor(index, y, device)`` on every batch with ``Trainer.predict`` over ``devices``."""
    import lightning as L
    from lightning.pytorch.callbacks import BasePredictionWriter

    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")

    class SliceReconstruction(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.reconstructor = reconstructor

        def predict_step(self, batch: tuple[int, torch.Tensor], batch_idx: int) -> Any:
            index, y = batch
            return self.reconstructor(int(index), y, self.device)

    class Writer(BasePredictionWriter):
        def __init__(self, folder: Path) -> None:
            super().__init__(write_interval="batch")
            self.folder = folder

        def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
            torch.save(prediction, self.folder / f"batch_{prediction.index:06d}.pt")

    with tempfile.TemporaryDirectory(prefix="invdiff-predict-") as tmp:
        folder = Path(tmp)
        loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
        trainer = L.Trainer(
            accelerator="gpu" if accelerator == "cuda" else accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy="ddp" if devices * num_nodes > 1 else "auto",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[Writer(folder)],
        )
        trainer.predict(SliceReconstruction(), loader, return_predictions=False)
        return [torch.load(path, weights_only=False) for path in sorted(folder.glob("batch_*.pt"))]
