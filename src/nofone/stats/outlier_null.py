"""A null calibrated on normals the model never trained on: most genes follow the model's NB,
a small share `pi` are "outliers" whose mean is off by a log-normal factor of sd `tau`.

Why: on the normal atlas, the plain test's p-values in never-trained normals are right in the
bulk (4.3% below 0.05, for 5% expected) but far too small in the tail: 34 times too many genes
reach |z| > 4 and 10^5 times too many |z| > 6. Individual genes of healthy people sit far from
any prediction (genotype, infiltration, sampling site), and the NB, whose variance is fitted to
the bulk, calls them. Fitting (pi, tau) by maximum likelihood on the held-out normals that also
calibrate the dispersion, and testing against the mixture, asks a different question: does this
gene deviate more than genes of normal individuals do? A sample then needs a larger deviation
for a call, which is the price of specificity; where the model fits its normals (simulated
data) the fit gives pi near 0 and the test is the plain one.

The mixture's tails are the mixture of the tails, so the equal-tail mid-p is
2 min(S, 1 - S) with S = (1 - pi) S0 + pi Sw the small side's mid-p (upper where x >= m): S0 the
NB's, Sw the log-normal part's (`nofone.stats.lognormal_nb`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from numpy.polynomial.hermite import hermgauss
from scipy import special

from nofone.errors import InputError
from nofone.stats.lognormal_nb import midp_tails
from nofone.stats.nb_tests import equal_tail_midp
from nofone.stats.optimise import lbfgs

#: Values (genes x samples) used for the fit, drawn at random when there are more.
FIT_VALUES = 200_000
#: Adaptive Gauss-Hermite nodes for the likelihood's log-normal part. Its integrand over Z is
#: log-concave and, for well-expressed genes, far narrower than N(0, 1): fixed nodes (48 were used
#: before) missed it by up to 50% on the atlas's held-out normals; nodes at its mode, scaled by
#: its curvature, are within 1e-6 (log scale) with 12.
FIT_NODES = 12
#: Newton steps to that mode at most (it converges in about 6; the integrand's log has a
#: curvature of at least 1).
_MODE_STEPS, _MODE_TOL = 50, 1e-9
#: The mixture is kept only when it raises the log-likelihood of the held-out values by more than
#: half the chi-square(2) 0.999 quantile (a likelihood-ratio test, pi = 0 against pi > 0).
_MIN_GAIN = 0.5 * 13.8155
#: Starting values of tau; the best of the fits is kept (pi and tau trade off against each other).
_TAU_STARTS = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class OutlierNull:
    """Share `pi` of genes whose mean is off by exp(N(0, tau^2)); the rest follow the NB."""

    pi: float
    tau: float
    n_samples: int = 0
    n_values: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def stored_in(cls, info: dict) -> OutlierNull | None:
        """The null fitted at training, None for models without one."""
        stored = (info.get("training") or {}).get("outlier_null")
        if not stored:
            return None
        return cls(**{k: stored[k] for k in ("pi", "tau", "n_samples", "n_values") if k in stored})

    @classmethod
    def from_model_info(cls, info: dict, where: str) -> OutlierNull:
        """The null stored at training, or a clear error for models without one."""
        stored = cls.stored_in(info)
        if stored is None:
            raise InputError(
                f"{where}: the model has no calibrated outlier null (it was imported, trained without held-out "
                "normals (training.test_fraction 0), or trained by an older nofone); train it again to use "
                "--null outlier, or test against the model's NB with --null nb")
        return stored


def fit_outlier_null(x: np.ndarray, mean: np.ndarray, r: np.ndarray, measured: np.ndarray | None = None,
                     seed: int = 0) -> OutlierNull:
    """Maximum-likelihood (pi, tau) from counts [N, G] of normals with their model means and
    dispersions ([N, G] or [G])."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    mean = np.atleast_2d(np.asarray(mean, dtype=np.float64))
    r = np.broadcast_to(np.asarray(r, dtype=np.float64), x.shape)
    use = np.isfinite(mean) & (mean > 0) & np.isfinite(r)
    if measured is not None:
        use &= np.atleast_2d(measured)
    idx = np.flatnonzero(use)
    if idx.size > FIT_VALUES:
        idx = np.sort(np.random.default_rng(seed).choice(idx, FIT_VALUES, replace=False))
    values = FitValues(*(torch.as_tensor(a.ravel()[idx]) for a in (x, mean, r)))
    plain = values.log_pmf(values.log_m)

    def nll(params: torch.Tensor) -> torch.Tensor:  # params: logit pi, log tau
        wide = values.log_lognormal_pmf(torch.exp(params[1]))
        logsig = torch.nn.functional.logsigmoid
        return -torch.logaddexp(logsig(-params[0]) + plain, logsig(params[0]) + wide).mean()

    best: tuple[float, float, float] | None = None
    for tau in _TAU_STARTS:
        loss, pi, tau_hat = _minimise(nll, tau)
        if np.isfinite(loss) and (best is None or loss < best[0]):
            best = (loss, pi, tau_hat)
    plain_loss = float(-plain.mean())
    if best is None or (plain_loss - best[0]) * idx.size <= _MIN_GAIN or best[2] < 1e-3:
        return OutlierNull(0.0, 0.0, x.shape[0], int(idx.size))  # no outliers to speak of: the plain NB
    return OutlierNull(best[1], best[2], x.shape[0], int(idx.size))


class FitValues:
    """The values the fit sees (counts, model means, sizes; float64 tensors) and their NB log-pmf
    at any mean: log NB(x; mu, r) = const(x, r) + x log mu - (x + r) log(r + mu), whose log-gammas
    do not depend on (pi, tau) and are computed once."""

    def __init__(self, x: torch.Tensor, mean: torch.Tensor, r: torch.Tensor) -> None:
        self.x, self.r = x, r
        self.log_m, self.log_r = torch.log(mean), torch.log(r)
        self.const = torch.lgamma(x + r) - torch.lgamma(r) - torch.lgamma(x + 1) + r * self.log_r

    def log_pmf(self, log_mu: torch.Tensor) -> torch.Tensor:
        return self.const + self.x * log_mu - (self.x + self.r) * torch.logaddexp(self.log_r, log_mu)

    def log_lognormal_pmf(self, tau: torch.Tensor) -> torch.Tensor:
        """ln E[NB(x; m e^(tau Z), r)], Z ~ N(0, 1), by adaptive Gauss-Hermite over Z.

        The integrand's log, ln NB(x; m e^(tau z), r) - z^2 / 2, is concave in z; Newton finds its
        mode and curvature for the current tau without a graph, and the nodes placed there are
        constants to autograd, so the gradient in tau is the quadrature of the integrand's gradient.
        """
        xs, rs, log_m, log_r = self.x, self.r, self.log_m, self.log_r
        t, w = (torch.as_tensor(a).unsqueeze(-1) for a in hermgauss(FIT_NODES))  # of g(t) e^(-t^2)
        with torch.no_grad():
            tau_c = tau.detach()
            z = torch.zeros_like(xs)
            for _ in range(_MODE_STEPS):
                p = torch.sigmoid(log_m + tau_c * z - log_r)  # mu / (r + mu)
                grad = tau_c * (xs - (xs + rs) * p) - z
                hess = -(tau_c**2) * (xs + rs) * p * (1 - p) - 1
                z = z - torch.clamp(grad / hess, -3.0, 3.0)
                if float((grad.abs() / torch.sqrt(-hess)).max()) < _MODE_TOL:
                    break
            p = torch.sigmoid(log_m + tau_c * z - log_r)
            scale = math.sqrt(2.0) / torch.sqrt(tau_c**2 * (xs + rs) * p * (1 - p) + 1)
            zk = z + scale * t  # [nodes, values]
            log_weight = torch.log(w) + t**2 + torch.log(scale) - 0.5 * zk**2 - 0.5 * math.log(2 * math.pi)
        return torch.logsumexp(log_weight + self.log_pmf(log_m + tau * zk), dim=0)


def _minimise(nll, tau: float) -> tuple[float, float, float]:
    """L-BFGS from pi = 1%, tau as given; returns (loss, pi, tau), pi at most one half (an
    "outlier" share above that is not one)."""
    params = torch.tensor([np.log(0.01 / 0.99), np.log(tau)], dtype=torch.float64, requires_grad=True)
    lbfgs(nll, params, max_iter=50)
    with torch.no_grad():
        params[0].clamp_(max=0.0)
        return float(nll(params)), float(torch.sigmoid(params[0])), float(torch.exp(params[1]))


def equal_tail_midp_outlier(x: np.ndarray, mean: np.ndarray, r: np.ndarray, null: OutlierNull) -> np.ndarray:
    """Equal-tail mid-p of counts against the outlier mixture (any broadcastable shapes)."""
    if null.pi <= 0 or null.tau <= 0:
        return equal_tail_midp(x, mean, r)
    return equal_tail_midp_mixture(x, mean, r, null.pi, null.tau)


def equal_tail_midp_mixture(x: np.ndarray, mean: np.ndarray, r: np.ndarray, pi: np.ndarray | float,
                            tau: np.ndarray | float) -> np.ndarray:
    """Equal-tail mid-p against (1 - pi) NB + pi NB x lognormal(tau), pi and tau broadcastable
    to the counts (one share for everybody, one per sample, or one per sample and gene)."""
    plain_lower, plain_upper = midp_tails(x, mean, r, 0.0)
    wide_lower, wide_upper = midp_tails(x, mean, r, tau)
    lower = (1 - pi) * plain_lower + pi * wide_lower
    upper = (1 - pi) * plain_upper + pi * wide_upper
    return np.minimum(1.0, 2.0 * np.minimum(lower, upper))


def min_callable_fold(null: OutlierNull, share_called: float, q: float) -> float:
    """About the smallest fold change, up or down, with which a gene can reach q-value `q` under
    the null when `share_called` of the sample's genes are called (1 where the null sets no limit).

    Why: the mixture calls only changes larger than healthy individuals' outliers, and a report
    should say how large. BH calls the k-th smallest of G p-values when p <= q k / G, and the
    mixture's p-value is never below 2 pi Phi(-|ln fold| / tau): a well-expressed gene (a narrow
    NB) comes close to it, a wider NB needs a larger change.
    """
    tail = q * share_called / (2.0 * null.pi) if null.pi > 0 and null.tau > 0 else np.inf
    if not tail < 0.5:
        return 1.0
    return float(np.exp(-null.tau * special.ndtri(tail)))


def min_pvalue_down_outlier(mean: np.ndarray, r: np.ndarray, null: OutlierNull) -> np.ndarray:
    """The smallest p-value a down call could reach (that of a count of 0)."""
    return equal_tail_midp_outlier(np.zeros(np.shape(mean)), mean, r, null)
