"""The report's sections, in the order they appear: one module each, which only formats what
`nofone.evaluate` and `nofone.stats` compute from the loaded outputs.

A section is shown when the report has inputs of its source: "run" (the outputs of `nofone run`
or its steps), "explain" (a `nofone explain` folder: RUN/explain or --explain), "cohort" (a
`nofone cohort-de` folder, given with --cohort-de) or "pathways" (a `nofone pathways` folder:
--pathways, or RUN/pathways). A section whose inputs are missing shows one "not available: ..."
line instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nofone.report.context import ReportContext
from nofone.report.html import Section
from nofone.report.sections import (
    association,
    cohort,
    degs,
    evaluation,
    latent,
    nll,
    pathways,
    regulators,
    summary,
    training,
    volcano,
)

RUN, EXPLAIN, COHORT, PATHWAYS = "run", "explain", "cohort", "pathways"


@dataclass(frozen=True)
class SectionSpec:
    id: str
    title: str
    build: Callable[[ReportContext, Section], None]
    source: str = RUN


SECTIONS = (
    SectionSpec("summary", "Run summary", summary.build),
    SectionSpec("training", "Training", training.build),
    SectionSpec("latent", "Latent space", latent.build),
    SectionSpec("association", "Tissues and mixture components", association.build),
    SectionSpec("nll", "Out-of-distribution score (NLL per gene)", nll.build),
    SectionSpec("degs", "DE genes per sample", degs.build),
    SectionSpec("volcano", "Volcano plots", volcano.build),
    SectionSpec("pathways", "Gene sets per sample", pathways.build, source=PATHWAYS),
    SectionSpec("evaluation", "Evaluation", evaluation.build),
    SectionSpec("regulators", "Regulators behind the profiles (DEcode)", regulators.build, source=EXPLAIN),
    SectionSpec("cohort", "Cohort differential expression (NB-VAE)", cohort.build, source=COHORT),
)


def sections_for(sources: set[str]) -> list[SectionSpec]:
    """The sections to show, in order, for the sources the report has inputs of."""
    return [spec for spec in SECTIONS if spec.source in sources]
