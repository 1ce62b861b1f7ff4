"""Training diffusion priors with Lightning (LightningModule, LightningDataModule over MONAI transforms).

``train(config) -> Path`` runs one training and exports the EMA prior; ``load_config(path, overrides)`` reads a
config. Command line: ``python -m invdiff.training --config examples/train_brain_prior.yaml steps=2000``.

Importing this package is light: Lightning and MONAI are imported by ``train`` and the submodules
``invdiff.training.module`` / ``invdiff.training.data``.
"""

from .config import TrainConfig, load_config, parse_overrides
from .train import train, write_model_card

__all__ = ["TrainConfig", "load_config", "parse_overrides", "train", "write_model_card"]
