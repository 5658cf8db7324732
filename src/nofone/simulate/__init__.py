"""`nofone simulate`: realistic simulated bulk RNA-seq with known truth, for tests, the demo and benchmarks.

The generative model mirrors what the downstream models assume, so that their failures are
theirs and not the simulator's:

- latent: one Gaussian component per tissue (means spread on a sphere, within-tissue sd 0.5);
- per-gene negative binomial mean `size_factor * exp(b_g + f_g(z))`, where `b_g` is the gene's
  baseline log mean (drawn from the per-gene means of a real atlas) and `f_g` a smooth random
  one-hidden-layer tanh map plus, for a few genes, a switch that turns the gene off outside
  one tissue;
- per-gene dispersion on the mean trend measured in real within-tissue data, with scatter;
- case samples: fresh normals with planted up/down fold changes drawn so that the counts stay
  exactly negative binomial (thinning for down, adding an independent NB for up).

Everything a test needs to check recovery is written beside the counts: the planted DE
(`truth.tsv`), the true latent (`latent.tsv`), the true gene parameters (`gene_params.tsv`).
The normal matrix is generated and written in blocks of genes, each with its own random
stream, so memory stays bounded and the output does not depend on the number of threads.

config.py holds the options (`SimulationConfig`), atlas.py the gene model and the normals,
cases.py the cases and their planted DE, write.py the files and `simulate()` itself.
"""

from nofone.simulate.config import SimulationConfig
from nofone.simulate.write import simulate

__all__ = ["SimulationConfig", "simulate"]
