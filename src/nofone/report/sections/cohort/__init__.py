"""Cohort differential expression (only with --cohort-de): what `nofone cohort-de` compared, its
latent space, the agreement with DESeq2, the top genes and the pathway enrichment, one module each."""

from __future__ import annotations

from nofone.report.context import ReportContext
from nofone.report.html import Section, code, emphasis, esc, paragraph, strong
from nofone.report.inputs import COHORT_REPORT, COHORT_RESULTS
from nofone.report.sections.cohort import agreement, compared, enrichment, genes, latent
from nofone.report.sections.cohort.contrast import read_contrast

#: The parts of the section, in order.
PARTS = (compared.build, latent.build, agreement.build, genes.build, enrichment.build)


def build(ctx: ReportContext, section: Section) -> None:
    cohort = ctx.data.cohort
    folder = cohort.folder
    if cohort.report is None and cohort.table is None:
        section.unavailable(f"neither {COHORT_REPORT} nor {COHORT_RESULTS} in {folder}: is it the output folder of "
                        "`nofone cohort-de`?")
        return
    c = read_contrast(cohort)
    ctx.numbers["cohort"] = {"folder": str(folder), "group": c.group, "level": c.level, "reference": c.reference,
                             "covariates": c.covariates}
    contrast_text = f"{c.level} vs {c.reference}" if c.level and c.reference else "the two groups"
    section.add(paragraph(
        f"From {code(folder)} ({code('nofone cohort-de')}). A negative-binomial variational "
        f"autoencoder (NB-VAE) was trained on {emphasis('every')} sample of the cohort without their labels. Each "
        f"sample's expression decoded at its posterior mean is averaged within each group; the "
        f"{strong('generative log2 fold change')} of {esc(contrast_text)} is the difference of those means"
        + (" within each combination of covariate levels that has samples of both groups, averaged with equal "
           "weights" if c.covariates else "")
        + ". DESeq2 (pydeseq2, matched to R; design ~ covariates + group) was run on the same samples beside it."))
    for part in PARTS:
        part(ctx, section, c)
