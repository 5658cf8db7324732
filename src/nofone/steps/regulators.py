"""The regulators step of `nofone run`: after DE, which regulators explain each tested sample.

With a trained regulator model (`--regulators M`) the samples are explained against it; with
regulator tables (`--regulator-features F`) a model is first trained on the run's own normals
(DEcode's tissue-DE task: each tissue against the median over tissues) into RUN/regulators.
Either way `nofone explain` writes RUN/explain, which `nofone report --run RUN` shows.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from nofone.errors import InputError
from nofone.regulators.explain import ExplainOptions

log = logging.getLogger(__name__)

REGULATOR_MODEL_DIR = "regulators"
EXPLAIN_DIR = "explain"


@dataclass
class RegulatorOptions:
    model: Path | None = None              # a model of `nofone regulators train`
    features: list[Path] = field(default_factory=list)   # or tables to train one on the run's normals
    structure: list[Path] = field(default_factory=list)
    annotation: Path | None = None         # gives the chromosomes of the split; default: the run's first
    seeds: int = 10
    explain: ExplainOptions = field(default_factory=ExplainOptions)

    def check(self, run_annotation: Path | None) -> None:
        """Fail before the run's long steps, not after them."""
        if self.model is not None and self.features:
            raise InputError("--regulators (a trained regulator model) and --regulator-features (train one on "
                             "this run's normals) exclude each other: give one")
        if self.model is None and not self.features:
            raise InputError("--regulator-structure needs --regulator-features (the regulator tables)")
        if self.model is not None:
            from nofone.regulators.model import RegulatorModel

            if not (Path(self.model) / "config.json").is_file():
                raise InputError(f"--regulators {self.model} is not a regulator model (no config.json; make one with "
                                 "`nofone regulators train`)")
            RegulatorModel.load(self.model)  # any other problem of the model: its error now, not after the run
        for path in [*self.features, *self.structure]:
            if not Path(path).is_file():
                raise InputError(f"regulator table {path} does not exist")
        if self.features and (self.annotation or run_annotation) is None:
            raise InputError("--regulator-features needs an annotation with each gene's chromosome "
                             "(--annotation or --regulator-annotation): chromosome 1 is the test set")


def regulators_step(options: RegulatorOptions, outdir: Path, de_dir: Path, normals_dir: Path,
                    run_annotation: Path | None, normals: tuple[str, str]) -> dict:
    """Train a regulator model if asked, explain every sample of `de_dir` into outdir/explain;
    returns what the run summary records."""
    from nofone.regulators.explain_step import explain

    model = options.model
    if model is None:
        from nofone.regulators.network import NetworkConfig
        from nofone.regulators.train import TrainOptions, train_regulators

        model = outdir / REGULATOR_MODEL_DIR
        log.info("training a regulator model on the tissue DE of %s", normals_dir)
        train_regulators(model, TrainOptions(
            features=list(options.features), targets="tissue-de", structure=list(options.structure),
            input=normals_dir, annotation=options.annotation or run_annotation,
            network=NetworkConfig(seeds=options.seeds), normals=normals))
    report = explain(Path(model), de_dir, outdir / EXPLAIN_DIR, options.explain)
    return {"model": str(model), "trained_here": options.model is None, "explain": str(outdir / EXPLAIN_DIR),
            "n_samples": report["n_samples"],
            "median_heldout_spearman": statistics.median(s["heldout_spearman"] for s in report["samples"]),
            "median_n_significant": statistics.median(s["n_significant"] for s in report["samples"])}
