"""What to simulate: the options of `nofone simulate`, checked before anything is written."""

from __future__ import annotations

from dataclasses import dataclass

from nofone.errors import NofoneError


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate (see `nofone simulate --help` for the meaning of each option)."""

    tissues: int = 4
    samples_per_tissue: int = 40
    genes: int = 2000
    cases: int = 8
    heldout_per_tissue: int = 2
    seed: int = 0
    de_fraction: float = 0.05
    lfc_min: float = 1.0
    lfc_max: float = 3.0
    latent_dim: int = 8
    batches: int = 2

    def validate(self) -> None:
        """Refuse options that cannot give a sensible data set, before anything is written."""
        for name in ("tissues", "samples_per_tissue", "genes", "latent_dim", "batches"):
            if getattr(self, name) < 1:
                raise NofoneError(
                    f"--{_flag(name)} must be a positive integer, got {getattr(self, name)}"
                )
        for name in ("cases", "heldout_per_tissue", "seed"):
            if getattr(self, name) < 0:
                raise NofoneError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.de_fraction < 1.0:
            raise NofoneError(
                f"--de-fraction must lie strictly between 0 and 1, got {self.de_fraction}"
            )
        if not self.lfc_min > 0:
            raise NofoneError(
                f"--lfc-min must be > 0 (a log2 fold-change magnitude), got {self.lfc_min}"
            )
        if self.lfc_min > self.lfc_max:
            raise NofoneError(
                f"--lfc-min ({self.lfc_min}) is larger than --lfc-max ({self.lfc_max})"
            )
        if self.lfc_max > 20:
            raise NofoneError(f"--lfc-max must be <= 20 (a 2^20-fold change), got {self.lfc_max}")


def _flag(name: str) -> str:
    return name.replace("_", "-")
