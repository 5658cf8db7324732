"""Diffusion-model configuration: network, schedule, bridge and training, with named presets.

- `cpu`: sized for 2 CPU cores and an atlas of a few hundred normals x ~17,000 genes: the genes
  are projected to a hidden width of 256 (GEMDiff's 8 x genes would be 136,000 wide: a 17,000 x
  136,000 input layer alone is 2.3e9 weights), 4 residual blocks, batch 32, Adam 1e-3 with a
  gradient clip of 1, EMA 0.999. docs/diffusion.md has the measured training time and the width
  trade-off.
- `gpu`: width 1024, 6 blocks, batch 64, more epochs.
- `paper`: GEMDiff's own settings for its 16-gene models (width 8 x genes, 4 blocks, Adam 3e-5,
  batch 32, EMA 0.9999, a normal/tumour label), for the parity bench on its example data; the
  hidden width follows the gene count (`hidden=0` means 8 x genes).

A JSON file is a partial config laid over its `preset` (default `cpu`); unknown keys are errors.
`labels` is filled by training (the tissues it saw, whether tumours were given): it sizes the
label embeddings, so it travels with the architecture in config.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from nofone.errors import InputError
from nofone.models import config_io
from nofone.models.size_factors import METHODS as SIZE_FACTOR_METHODS

ROUTES = ("sdedit", "invert")
ESTIMATES = ("tweedie", "ddim")


@dataclass(frozen=True)
class NetworkConfig:
    hidden: int = 256  # width after the input projection; 0: 8 x genes (GEMDiff)
    blocks: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0
    # eps_hat += E[eps | y_t] under a factor model of the training normals (rank factors plus a
    # variance per gene; `gaussian.py`). Without it a network narrower than the gene count cannot
    # predict the noise outside its output's span (see docs/diffusion.md). gaussian_rank -1:
    # chosen on the held-out normals at training (stored here afterwards).
    gaussian_skip: bool = True
    gaussian_rank: int = -1


@dataclass(frozen=True)
class LabelConfig:
    """Conditioning. `tissues` and `tumour` are set by training from the data it is given."""

    condition_on_tissue: bool = True  # when the training data has a tissue column
    tissues: tuple[str, ...] = ()
    tumour: bool = False  # a normal/tumour label (labelled tumours were given)
    # probability that a label is replaced by the null label in a training step (classifier-free
    # guidance); the tissue and the normal/tumour labels are dropped independently
    label_dropout: float = 0.15


@dataclass(frozen=True)
class BridgeConfig:
    """How a sample is carried to its closest normal (`nofone.models.diffusion.bridge`)."""

    route: str = "sdedit"  # sdedit: noise to t* and denoise; invert: GEMDiff's (needs `tumour`)
    # sdedit's estimate from the noised point: "tweedie", the denoiser's posterior mean
    # E[y_0 | y_t*] (one network call per draw), or "ddim", the end of the deterministic DDIM path
    # from t* (a sample-like point; `steps` calls per draw). docs/diffusion.md compares them.
    estimate: str = "tweedie"
    t_star: int = 0  # 0: chosen on the held-out normals at training (stored here afterwards)
    t_star_grid: tuple[int, ...] = (50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 950)
    steps: int = 50  # deterministic DDIM steps from t* down to 0 (ddim estimate, invert route)
    draws: int = 8  # seeded noise draws averaged (sdedit)
    seed: int = 0
    guidance: float = 1.0  # classifier-free guidance weight on the normal label (1: none)
    # calibrate (t*, dispersions, outlier null) with the held-out normals' tissue labels; then
    # `closest_normal` must be given each sample's tissue (BridgeOptions.tissues). Off: the bridge
    # is calibrated as the model interface calls it, without labels (the pooled Gaussian part).
    use_tissue: bool = False
    # the planted change that chooses t*: `plant_fraction` of the expressed genes of each
    # held-out normal changed `plant_fold`-fold (up or down at random)
    plant_fraction: float = 0.05
    plant_fold: float = 4.0


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    test_fraction: float = 0.1
    seed: int = 0
    checkpoint_every: int = 100
    # held-out score: the EMA network's denoising MSE on the held-out normals at `eval_draws`
    # fixed (timestep, noise) pairs per sample, every `eval_every` epochs; stop after `patience`
    # evaluations without improvement and restore the best epoch
    early_stopping: bool = True
    eval_every: int = 25
    eval_draws: int = 16
    patience: int = 8
    # calibrate the bridge on the held-out normals: t*, per-gene NB, outlier null (the shared
    # loop's name for its calibration hook)
    calibrate_dispersion: bool = True


@dataclass(frozen=True)
class DiffusionConfig:
    timesteps: int = 1000
    schedule: str = "cosine"
    size_factors: str = "auto"  # median-of-ratios (nofone.models.size_factors)
    # per-gene standardisation: scale = max(sd, min_scale) in natural-log units, inputs clamped
    # to +-clamp standard deviations (a gene 10^4-fold off normal must not blow up the network)
    min_scale: float = 0.1
    clamp: float = 8.0
    network: NetworkConfig = field(default_factory=NetworkConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> DiffusionConfig:
        """Build from a (possibly partial) dict; unknown keys are an error naming them."""
        data = dict(data)
        parts = {}
        for name, kind in (("network", NetworkConfig), ("labels", LabelConfig), ("bridge", BridgeConfig),
                           ("training", TrainingConfig)):
            parts[name] = config_io.build(kind, data.pop(name, {}) or {}, f"{where}.{name}")
        top = config_io.build(cls, data, where, skip=set(parts))
        labels = replace(parts["labels"], tissues=tuple(str(t) for t in parts["labels"].tissues))
        bridge = replace(parts["bridge"], t_star_grid=tuple(int(t) for t in parts["bridge"].t_star_grid))
        training = replace(parts["training"], betas=tuple(parts["training"].betas))
        return replace(top, network=parts["network"], labels=labels, bridge=bridge, training=training)

    def hidden_width(self, n_genes: int) -> int:
        return self.network.hidden or 8 * n_genes


PRESETS: dict[str, DiffusionConfig] = {
    "cpu": DiffusionConfig(),
    "gpu": DiffusionConfig(
        network=NetworkConfig(hidden=1024, blocks=6),
        training=TrainingConfig(epochs=4000, batch_size=64, lr=5e-4, ema_decay=0.9995, eval_every=50),
    ),
    "paper": DiffusionConfig(
        min_scale=1e-3,
        network=NetworkConfig(hidden=0, blocks=4, gaussian_skip=False),
        labels=LabelConfig(condition_on_tissue=False, label_dropout=0.0),
        bridge=BridgeConfig(route="invert", steps=1000, draws=1),
        training=TrainingConfig(epochs=10001, batch_size=32, lr=3e-5, ema_decay=0.9999, grad_clip=1.0,
                                early_stopping=False, eval_every=500, checkpoint_every=1000),
    ),
}


def load_config(spec: str | None = None, overrides: dict | None = None) -> DiffusionConfig:
    """A preset name or a JSON file (a partial config on top of its `preset`, default `cpu`),
    plus overrides with dotted keys ({"training.epochs": 50}; None values are ignored)."""
    config = config_io.load(spec or "cpu", PRESETS, lambda d, w: DiffusionConfig.from_dict(d, where=w),
                            DiffusionConfig.to_dict, overrides, "diffusion", "cpu")
    check(config)
    return config


def settings(preset_or_json: str | None = None, overrides: dict | None = None) -> DiffusionConfig:
    """The model interface's name for `load_config`."""
    return load_config(preset_or_json, overrides)


def check(config: DiffusionConfig) -> None:
    """Refuse settings that cannot train or bridge, naming every problem."""
    n, b, t, lab = config.network, config.bridge, config.training, config.labels
    problems = []
    if config.timesteps < 10:
        problems.append("timesteps must be at least 10")
    if config.schedule != "cosine":
        problems.append("schedule must be 'cosine'")
    if config.size_factors not in SIZE_FACTOR_METHODS:
        problems.append(f"size_factors must be one of {', '.join(SIZE_FACTOR_METHODS)}")
    if not (config.min_scale > 0 and config.clamp > 0):
        problems.append("min_scale and clamp must be positive")
    if n.gaussian_rank < -1:
        problems.append("network.gaussian_rank must be -1 (choose) or a rank >= 0")
    if n.hidden < 0 or n.blocks < 0 or n.mlp_ratio < 1 or not 0 <= n.dropout < 1:
        problems.append("network.hidden >= 0 (0: 8 x genes), blocks >= 0, mlp_ratio >= 1, dropout in [0, 1)")
    if not 0 <= lab.label_dropout < 1:
        problems.append("labels.label_dropout must be in [0, 1)")
    if b.route not in ROUTES:
        problems.append(f"bridge.route must be one of {', '.join(ROUTES)}")
    if b.estimate not in ESTIMATES:
        problems.append(f"bridge.estimate must be one of {', '.join(ESTIMATES)}")
    if not 0 <= b.t_star <= config.timesteps:
        problems.append("bridge.t_star must be in [0, timesteps] (0: choose on held-out normals)")
    if not b.t_star_grid or any(not 0 < v <= config.timesteps for v in b.t_star_grid):
        problems.append("bridge.t_star_grid must be steps in (0, timesteps]")
    if b.steps < 1 or b.draws < 1 or b.guidance < 0:
        problems.append("bridge.steps and draws must be positive, guidance >= 0")
    if not (0 < b.plant_fraction < 1 and b.plant_fold > 1):
        problems.append("bridge.plant_fraction must be in (0, 1) and plant_fold above 1")
    if t.epochs < 1 or t.batch_size < 1 or t.checkpoint_every < 1:
        problems.append("training.epochs, batch_size and checkpoint_every must be positive")
    if not (t.lr > 0 and t.grad_clip >= 0 and 0 <= t.ema_decay < 1 and t.weight_decay >= 0):
        problems.append("training.lr > 0, grad_clip >= 0 (0: none), ema_decay in [0, 1), weight_decay >= 0")
    if len(t.betas) != 2 or not all(0 <= v < 1 for v in t.betas):
        problems.append("training.betas must be two numbers in [0, 1)")
    if not 0 <= t.test_fraction < 1:
        problems.append("training.test_fraction must be in [0, 1)")
    if t.eval_every < 1 or t.patience < 1 or t.eval_draws < 1:
        problems.append("training.eval_every, patience and eval_draws must be positive")
    if problems:
        raise InputError("invalid diffusion config: " + "; ".join(problems))
