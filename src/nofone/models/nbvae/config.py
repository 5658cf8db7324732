"""NB-VAE configuration: architecture and training settings, one preset plus JSON files.

`default` is sized for cohorts of a dozen to a few thousand samples on a CPU: encoder
genes -> 256 -> 64 -> latent 10 (mean and log-variance), decoder mirrored, learned gene-wise
dispersion, Adam at 1e-3 (dispersions 1e-2), the KL term warmed up linearly over the first 100
epochs, early stopping on the held-out negative ELBO. A JSON file is a partial config on top of
`default` (`{"latent_dim": 2, "training": {"epochs": 2000}}`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from nofone.errors import InputError
from nofone.models import config_io
from nofone.models.size_factors import METHODS as SIZE_FACTOR_METHODS


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 600
    batch_size: int = 32
    lr: float = 1e-3  # encoder and decoder
    lr_dispersion: float = 1e-2
    weight_decay: float = 0.0  # decoupled (AdamW) decay of the encoder and decoder weights
    betas: tuple[float, float] = (0.9, 0.999)
    # The KL weight rises linearly from 1/kl_warmup_epochs (first epoch) to 1 and stays there;
    # 0 means no warm-up. The early-stopping criterion always has the KL at full weight.
    kl_warmup_epochs: int = 50
    test_fraction: float = 0.1
    seed: int = 0
    checkpoint_every: int = 25
    # Early stopping on the held-out samples: every `eval_every` epochs, their negative ELBO per
    # gene (KL at full weight, `eval_draws` posterior draws from a fixed-seed generator so that
    # evaluations are comparable); stop after `patience` evaluations without improvement and
    # restore the best state.
    early_stopping: bool = True
    eval_every: int = 5
    eval_draws: int = 4
    patience: int = 8
    # After training, log r <- a + b log r maximising the held-out samples' likelihood at their
    # closest normal (encoder mean refined `eval_steps` Adam steps under the prior, scale as
    # `nofone represent` computes it), as for the DGD.
    calibrate_dispersion: bool = True
    eval_steps: int = 60
    lr_representation: float = 1e-2


@dataclass(frozen=True)
class NBVAEConfig:
    latent_dim: int = 10
    hidden: tuple[int, ...] = (256, 64)  # encoder layers; the decoder mirrors them
    dropout: float = 0.1  # on the encoder's hidden layers, in training only
    dispersion_init: float = 2.0  # initial r of every gene (variance = m + m^2 / r)
    size_factors: str = "auto"  # auto, ratio or poscounts (see nofone.models.size_factors)
    # The decoder's log relative mean is clamped to [log_mean_min, log_mean_max] (natural log of a
    # normalised count): keeps exp() finite early in training; far beyond any real gene.
    log_mean_min: float = -20.0
    log_mean_max: float = 20.0
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> NBVAEConfig:
        """Build from a (possibly partial) dict; unknown keys are an error naming them."""
        data = dict(data)
        training = config_io.build(TrainingConfig, data.pop("training", {}) or {}, f"{where}.training")
        training = replace(training, betas=tuple(training.betas))
        top = config_io.build(cls, data, where, skip={"training"})
        return replace(top, training=training, hidden=tuple(top.hidden))


PRESETS: dict[str, NBVAEConfig] = {"default": NBVAEConfig()}


def load_config(spec: str | None = None, overrides: dict | None = None) -> NBVAEConfig:
    """A preset name (`default`) or a JSON file (a partial config on top of `default`), plus
    overrides with dotted keys ({"training.epochs": 50}; None values are ignored)."""
    config = config_io.load(spec or "default", PRESETS, lambda d, w: NBVAEConfig.from_dict(d, where=w),
                            NBVAEConfig.to_dict, overrides, "NB-VAE", "default", article="an")
    check(config)
    return config


def check(config: NBVAEConfig) -> None:
    """Refuse settings that cannot train, naming every problem."""
    t = config.training
    problems = []
    if config.latent_dim < 1 or any(h < 1 for h in config.hidden):
        problems.append("latent_dim and hidden sizes must be positive")
    if not 0 <= config.dropout < 1:
        problems.append("dropout must be in [0, 1)")
    if not config.dispersion_init > 0:
        problems.append("dispersion_init must be positive")
    if config.size_factors not in SIZE_FACTOR_METHODS:
        problems.append(f"size_factors must be one of {', '.join(SIZE_FACTOR_METHODS)}")
    if not config.log_mean_min < config.log_mean_max:
        problems.append("log_mean_min must be below log_mean_max")
    if t.epochs < 1 or t.batch_size < 1 or t.checkpoint_every < 1:
        problems.append("training.epochs, batch_size and checkpoint_every must be positive")
    if not (t.lr > 0 and t.lr_dispersion >= 0 and t.lr_representation > 0):
        problems.append("training learning rates must be positive (lr_dispersion may be 0: fixed dispersions)")
    if t.kl_warmup_epochs < 0:
        problems.append("training.kl_warmup_epochs must be >= 0")
    if not 0 <= t.test_fraction < 1:
        problems.append("training.test_fraction must be in [0, 1)")
    if t.eval_every < 1 or t.patience < 1 or t.eval_steps < 0 or t.eval_draws < 1:
        problems.append("training.eval_every, patience and eval_draws must be positive, eval_steps >= 0")
    if len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas):
        problems.append("training.betas must be two numbers in [0, 1)")
    if problems:
        raise InputError("invalid NB-VAE config: " + "; ".join(problems))
