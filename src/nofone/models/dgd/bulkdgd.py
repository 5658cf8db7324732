"""Reading bulkDGD model files (v1 and 2.x) into a nofone DGD config and state dict.

The caller loads the files with `torch.load(weights_only=True)`; this module only checks and
maps their tensors. Layouts (G genes, H last hidden width, K components, D latent dims):

Decoder (a torch state dict, v1 and 2.x alike): `main.{0,2,4,...}.weight/bias` hidden Linear
layers, each followed by its activation; `nb._layer_means.weight` [G, H] and `.bias` [G],
relative mean = softplus of that. The dispersion, by output module:
- v1 and 2.x 'nb_feature_dispersion': `nb._log_r` [1, G], r = exp(log_r) per gene;
- 2.x 'nb_full_dispersion': `nb._layer_r_values.weight` [G, H] and `.bias` [G],
  log r = that Linear of the last hidden layer, per sample and gene;
- 2.x 'poisson' (no dispersion at all): refused.
The activations are not in the file: bulkDGD also allows 'elu' hidden and 'sigmoid' output
activations, which no file reveals; its shipped configs all use ReLU and softplus, which is what
nofone's decoder computes (the artifact's provenance records this assumption).

GMM:
- v1 and 2.x 'lgmm': `_weights` [K] (logits), `_means` [K, D], `_log_var` [K, D] (or [K, 1]
  for 2.x's 'isotropic'/'fixed', one variance per component);
  log p(z) = logsumexp_k [log_softmax(w)_k + log N(z; mean_k, diag(exp(log_var_k)))].
- 2.x 'tgmm' (a `tgmm.GaussianMixture` state dict): `weights_` [K] (probabilities), `means_`
  [K, D], `covariances_` (shape by `covariance_type`), plus scalar settings;
  log p(z) = logsumexp_k [log(w_k + 1e-20) + log N(z; mean_k, cov_k + 1e-20)].
  'diag' [K, D], 'spherical' [K], 'tied_diag' [D] and 'tied_spherical' [] are diagonal and
  map exactly onto nofone's mixture; 'full' and 'tied_full' ('tied') are refused.

In both versions a sample's NB mean is the relative mean times the sample's mean count over the
model genes (nofone's "mean" scaling).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch

from nofone.errors import InputError
from nofone.models.dgd.config import DGDConfig
from nofone.models.gmm import GMMConfig

FORMATS = ("auto", "v1", "v2")
LEGACY_GMM = ("_weights", "_means", "_log_var")
TGMM = ("weights_", "means_", "covariances_", "covariance_type")
#: tgmm covariance type -> (shape of `covariances_` in K, D; the shape it broadcasts from to [K, D])
DIAGONAL_COVARIANCES = {
    "diag": (lambda k, d: (k, d), lambda k, d: (k, d)),
    "spherical": (lambda k, d: (k,), lambda k, d: (k, 1)),
    "tied_diag": (lambda k, d: (d,), lambda k, d: (1, d)),
    "tied_spherical": (lambda k, d: (), lambda k, d: (1, 1)),
}
COVARIANCE_ALIASES = {"tied": "tied_full", "isotropic": "spherical"}
ASSUMED = "ReLU hidden layers and softplus means (bulkDGD's configs; not recorded in its files)"


@dataclass(frozen=True)
class Labels:
    """How errors name the three inputs (normally with their paths)."""

    decoder: str = "decoder"
    gmm: str = "GMM"
    genes: str = "gene list"


class DecoderParts(NamedTuple):
    state: dict[str, torch.Tensor]  # our decoder.* (and log_r) tensors
    latent_dim: int
    hidden: tuple[int, ...]
    n_genes: int
    output: str  # bulkDGD output module


@dataclass
class Imported:
    """What an import produces: the format read, our config and state dict, and what was found."""

    format: str
    config: DGDConfig
    state: dict[str, torch.Tensor]
    details: dict = field(default_factory=dict)


def detect_format(decoder: Mapping, gmm: Mapping, labels: Labels = Labels()) -> str:
    """'v2' when either file has a layout only bulkDGD 2.x writes, else 'v1'.

    2.x files with the 'nb_feature_dispersion' output and the 'lgmm' latent have exactly the v1
    layout and meaning, so reading them as v1 is correct.
    """
    v2_decoder = _dispersion_keys(decoder) in ("latent", "none")
    return "v2" if v2_decoder or _gmm_layout(gmm, labels.gmm) == "tgmm" else "v1"


def read_bulkdgd(decoder: Mapping, gmm: Mapping, n_gene_ids: int, fmt: str = "auto",
                 labels: Labels = Labels()) -> Imported:
    """Check both files against `fmt` (auto, v1, v2) and map them onto a nofone DGD."""
    if fmt not in FORMATS:
        raise InputError(f"bulkDGD format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "v1":
        _refuse_v2_keys(decoder, gmm, labels)
    fmt = detect_format(decoder, gmm, labels) if fmt == "auto" else fmt
    dec_state, latent_dim, hidden, n_genes, output = _decoder(decoder, labels.decoder, fmt)
    if n_gene_ids != n_genes:
        raise InputError(f"{labels.genes} has {n_gene_ids} genes but {labels.decoder} outputs {n_genes} "
                         f"(nb._layer_means.weight has {n_genes} rows)")
    read_gmm = _legacy_gmm if _gmm_layout(gmm, labels.gmm) == "legacy" else _tgmm
    gmm_state, gmm_details = read_gmm(gmm, latent_dim, labels.gmm)
    config = replace(DGDConfig(), latent_dim=latent_dim, hidden=hidden, scaling="mean",
                     dispersion="latent" if output == "nb_full_dispersion" else "gene",
                     gmm=replace(GMMConfig(), n_components=gmm_state["gmm.means"].shape[0]))
    details = {"output_module": output, **gmm_details, "assumed": ASSUMED}
    return Imported(fmt, config, {**dec_state, **gmm_state}, details)


def _refuse_v2_keys(decoder: Mapping, gmm: Mapping, labels: Labels) -> None:
    """--format v1 on a file with keys only bulkDGD 2.x writes."""
    if _gmm_layout(gmm, labels.gmm) == "tgmm":
        raise InputError(f"{labels.gmm} has the bulkDGD 2.x keys {list(TGMM)}, not the v1 layout "
                         "(use --format v2 or auto)")
    if _dispersion_keys(decoder) == "latent":
        raise InputError(f"{labels.decoder} has the bulkDGD 2.x key nb._layer_r_values, not the v1 layout "
                         "(use --format v2 or auto)")


# -- decoder -----------------------------------------------------------------------------------
def _dispersion_keys(decoder: Mapping) -> str:
    """Which dispersion the decoder file holds: 'gene' (nb._log_r), 'latent' (nb._layer_r_values),
    'none' or 'both'."""
    has_log_r = "nb._log_r" in decoder
    has_layer = any(k.startswith("nb._layer_r_values.") for k in decoder)
    kinds = {(True, False): "gene", (False, True): "latent", (False, False): "none"}
    return kinds.get((has_log_r, has_layer), "both")


def _output_module(decoder: Mapping, label: str, fmt: str) -> str:
    """The bulkDGD output module: 'nb_feature_dispersion' or 'nb_full_dispersion'; others refused."""
    kind = _dispersion_keys(decoder)
    if kind == "both":
        raise InputError(f"{label} has both nb._log_r and nb._layer_r_values: not a bulkDGD decoder")
    if kind == "none" and fmt == "v2" and "nb._layer_means.weight" in decoder:
        raise InputError(f"{label} has no dispersion (neither nb._log_r nor nb._layer_r_values): a bulkDGD "
                         "2.x 'poisson' output module, which nofone (negative binomial only) cannot import")
    if kind == "none":
        _require(decoder, label, ["nb._layer_means.weight", "nb._log_r"])
    return "nb_full_dispersion" if kind == "latent" else "nb_feature_dispersion"


def _decoder(decoder: Mapping, label: str, fmt: str) -> DecoderParts:
    """Our decoder state, latent size, hidden sizes, gene count and output module."""
    output = _output_module(decoder, label, fmt)
    full = output == "nb_full_dispersion"
    head = ["nb._layer_r_values.weight", "nb._layer_r_values.bias"] if full else ["nb._log_r"]
    _require(decoder, label, ["main.0.weight", "main.0.bias", "nb._layer_means.weight", "nb._layer_means.bias",
                              *head])
    state, latent_dim, hidden = _hidden_layers(decoder, label)
    width = hidden[-1]
    means_w = _tensor(decoder, "nb._layer_means.weight", (None, width), label)
    n_genes = means_w.shape[0]
    state["decoder.output.weight"] = means_w
    state["decoder.output.bias"] = _tensor(decoder, "nb._layer_means.bias", (n_genes,), label)
    if not full:
        shape = (n_genes,) if getattr(decoder["nb._log_r"], "ndim", 2) == 1 else (1, n_genes)
        state["log_r"] = _tensor(decoder, "nb._log_r", shape, label).reshape(-1)
    else:
        state["decoder.log_r.weight"] = _tensor(decoder, "nb._layer_r_values.weight", (n_genes, width), label)
        state["decoder.log_r.bias"] = _tensor(decoder, "nb._layer_r_values.bias", (n_genes,), label)
    known = {*head, "nb._layer_means.weight", "nb._layer_means.bias"}
    unknown = sorted(k for k in decoder if k not in known and not re.fullmatch(r"main\.\d+\.(weight|bias)", k))
    if unknown:
        raise InputError(f"{label} has unexpected key(s) {unknown[:12]}: not a bulkDGD decoder layout nofone knows")
    return DecoderParts(state, latent_dim, hidden, n_genes, output)


def _hidden_layers(decoder: Mapping, label: str) -> tuple[dict[str, torch.Tensor], int, tuple[int, ...]]:
    """`main.{0,2,...}` Linear layers -> our `decoder.hidden.{0,2,...}`, with the chain of sizes checked."""
    indices = sorted({int(k.split(".")[1]) for k in decoder if re.fullmatch(r"main\.\d+\.(weight|bias)", k)})
    if indices != list(range(0, 2 * len(indices), 2)):
        raise InputError(f"{label}: hidden layers at main.{indices}; expected main.0, main.2, ... "
                         "(a Linear layer before each activation)")
    first = decoder["main.0.weight"]
    if not torch.is_tensor(first) or first.dim() != 2:
        raise InputError(f"{label}: main.0.weight must be a 2-d tensor [hidden, latent]")
    state, width, hidden = {}, first.shape[1], []
    for i in indices:
        _require(decoder, label, [f"main.{i}.weight", f"main.{i}.bias"])
        weight = _tensor(decoder, f"main.{i}.weight", (None, width), label)
        width = weight.shape[0]
        state[f"decoder.hidden.{i}.weight"] = weight
        state[f"decoder.hidden.{i}.bias"] = _tensor(decoder, f"main.{i}.bias", (width,), label)
        hidden.append(width)
    return state, first.shape[1], tuple(hidden)


# -- GMM ---------------------------------------------------------------------------------------
def _gmm_layout(gmm: Mapping, label: str) -> str:
    """'legacy' (v1 / 2.x lgmm) or 'tgmm' (2.x), from the keys."""
    if "_means" in gmm and "means_" not in gmm:
        return "legacy"
    if "means_" in gmm and "_means" not in gmm:
        return "tgmm"
    raise InputError(f"{label} has neither the bulkDGD v1 GMM keys {list(LEGACY_GMM)} nor the 2.x keys "
                     f"{list(TGMM)}; found {sorted(gmm)[:12]}")


def _legacy_gmm(gmm: Mapping, latent_dim: int, label: str) -> tuple[dict[str, torch.Tensor], dict]:
    """`_weights` (logits), `_means`, `_log_var` ([K, D], or [K, 1] shared over dimensions)."""
    _require(gmm, label, list(LEGACY_GMM))
    means = _tensor(gmm, "_means", (None, latent_dim), label, hint=f"the decoder takes a {latent_dim}-d latent")
    k = means.shape[0]
    shared = torch.is_tensor(gmm["_log_var"]) and tuple(gmm["_log_var"].shape) == (k, 1)
    log_var = _tensor(gmm, "_log_var", (k, 1) if shared else (k, latent_dim), label)
    state = {"gmm.means": means, "gmm.log_var": log_var.expand(k, latent_dim).contiguous(),
             "gmm.logits": _tensor(gmm, "_weights", (k,), label)}
    return state, {"latent_type": "lgmm", "covariance_type": "isotropic/fixed" if shared else "diagonal"}


def _tgmm(gmm: Mapping, latent_dim: int, label: str) -> tuple[dict[str, torch.Tensor], dict]:
    """A fitted `tgmm.GaussianMixture` state dict with a diagonal covariance type."""
    _require(gmm, label, list(TGMM))
    if gmm.get("fitted_") is False:
        raise InputError(f"{label}: the mixture was never fitted (fitted_ is False)")
    means = _tensor(gmm, "means_", (None, latent_dim), label, hint=f"the decoder takes a {latent_dim}-d latent")
    k = means.shape[0]
    for key, value in (("n_components", k), ("n_features", latent_dim)):
        if isinstance(gmm.get(key), int) and gmm[key] != value:
            raise InputError(f"{label}: {key} is {gmm[key]} but means_ has shape {tuple(means.shape)}")
    weights = _tensor(gmm, "weights_", (k,), label)
    if (weights < 0).any() or abs(float(weights.double().sum()) - 1.0) > 1e-3:
        raise InputError(f"{label}: weights_ must be mixture probabilities (>= 0, sum 1); "
                         f"they sum to {float(weights.double().sum()):.6g}")
    ctype = _covariance_type(gmm["covariance_type"], label)
    stored, broadcast = (f(k, latent_dim) for f in DIAGONAL_COVARIANCES[ctype])
    cov = _tensor(gmm, "covariances_", stored, label, hint=f"covariance_type {ctype!r}")
    if (cov <= 0).any():
        raise InputError(f"{label}: covariances_ must be positive")
    log_var = torch.log(cov + 1e-20).reshape(broadcast).expand(k, latent_dim).contiguous()
    state = {"gmm.means": means, "gmm.log_var": log_var, "gmm.logits": torch.log(weights + 1e-20)}
    return state, {"latent_type": "tgmm", "covariance_type": ctype}


def _covariance_type(value: object, label: str) -> str:
    """The tgmm covariance type, if it is one of the diagonal ones nofone represents exactly."""
    if not isinstance(value, str):
        raise InputError(f"{label}: covariance_type is a {type(value).__name__}, not a string")
    ctype = COVARIANCE_ALIASES.get(value, value)
    if ctype not in DIAGONAL_COVARIANCES:
        raise InputError(f"{label}: covariance_type {value!r} is not supported: nofone's mixture has diagonal "
                         f"covariances and represents exactly only {', '.join(DIAGONAL_COVARIANCES)}")
    return ctype


# -- checks ------------------------------------------------------------------------------------
def _require(state: Mapping, label: str, keys: list[str]) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise InputError(f"bulkDGD {label} lacks key(s) {missing}; found {sorted(state)[:12]}")


def _tensor(state: Mapping, key: str, shape: tuple[int | None, ...], label: str, hint: str = "") -> torch.Tensor:
    """state[key] as float32, checked: a tensor of `shape` (None: any size), finite."""
    value = state[key]
    if not torch.is_tensor(value):
        raise InputError(f"{label}: {key} is a {type(value).__name__}, not a tensor")
    found = tuple(value.shape)
    if len(found) != len(shape) or any(e is not None and f != e for f, e in zip(found, shape)):
        expected = "(" + ", ".join("*" if e is None else str(e) for e in shape) + ("," if len(shape) == 1 else "") + ")"
        raise InputError(f"{label}: {key} has shape {found}; expected {expected}" + (f" ({hint})" if hint else ""))
    if not value.is_floating_point() or not torch.isfinite(value).all():
        raise InputError(f"{label}: {key} must hold finite floating-point values")
    return value.detach().to(torch.float32)

