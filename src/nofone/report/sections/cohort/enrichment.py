"""Pathway enrichment of both rankings, side by side, from cohort-de's enrichment_<method>.tsv."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nofone.evaluate.enrichment_agreement import RankingComparison, compare_rankings, lookup, sort_terms
from nofone.report.context import ReportContext
from nofone.report.html import Section, code, esc, format_value, paragraph, subheading
from nofone.report.inputs import COHORT_ENRICHMENT
from nofone.report.sections.cohort.contrast import Contrast

RANKING_LABELS = {"nbvae": "NB-VAE", "deseq2": "DESeq2"}
RANKING_TITLES = {
    "prerank": {"nbvae": "genes ranked by the generative log2 fold change",
                "deseq2": "genes ranked by the Wald statistic"},
    "ora": {"nbvae": "genes whose posterior interval excludes 0, with |log2FC| ≥ 1",
            "deseq2": "genes with padj < α and |log2FC| ≥ 1"},
}


def _direction(nes: float) -> str:
    return "" if not np.isfinite(nes) else ("up" if nes > 0 else "down")


def _side_by_side(found: RankingComparison, q: str, method: str) -> pd.DataFrame:
    """The chosen terms with each ranking's direction and NES (prerank) or overlap (ora), and FDR."""
    chosen = found.chosen
    side: dict[str, list] = {"term": chosen}
    for ranking in found.rankings:
        rows = found.by_term[ranking]
        label = RANKING_LABELS.get(ranking, ranking)
        if method == "prerank":
            nes = np.asarray(lookup(rows, "nes", chosen), dtype=float)
            side[f"{label} direction"] = [_direction(v) for v in nes]
            side[f"{label} NES"] = list(nes)
        elif "overlap" in rows:
            side[f"{label} overlap"] = [v if isinstance(v, str) else "—" for v in lookup(rows, "overlap", chosen)]
        side[f"{label} FDR q"] = lookup(rows, q, chosen)
    return pd.DataFrame(side)


def _about(report: dict) -> list[str]:
    summary = report.get("enrichment") if isinstance(report.get("enrichment"), dict) else {}
    about = []
    if summary.get("gene_sets"):
        sets = summary.get("n_gene_sets")
        about.append(f"gene sets {code(summary['gene_sets'])}" + (f" ({esc(format_value(sets))} sets)" if sets else ""))
    if summary.get("genes_with_symbol") is not None:
        about.append(f"{esc(format_value(summary['genes_with_symbol']))} genes with a symbol"
                     + (" (upper-cased)" if summary.get("uppercase_symbols") else ""))
    return about


def _one_table(ctx: ReportContext, section: Section, name: str, frame: pd.DataFrame, c: Contrast,
               about: list[str]) -> dict | None:
    method = "prerank" if "nes" in frame else ("ora" if "overlap" in frame else name.removeprefix(
        "enrichment_").removesuffix(".tsv"))
    q = "fdr_q_value" if "fdr_q_value" in frame else ("q_value" if "q_value" in frame else None)
    if "ranking" not in frame or "term" not in frame or q is None:
        section.add(paragraph(f"{esc(name)}: not an enrichment table of `nofone cohort-de` (needs ranking, "
                              "term and a q-value column); skipped.", "note"))
        return None
    permutations = c.options.get("permutations")
    how = ("GSEA preranked" + (f", {esc(format_value(permutations))} gene-set permutations"
                               if permutations else "") if method == "prerank" else
           "over-representation (hypergeometric) against the modelled genes" if method == "ora" else esc(method))
    section.add(paragraph(f"{code(name)}: {how}" + ("; " + "; ".join(about) if about else "") + "."))
    ordered = sort_terms(frame, q)
    stem = name.removesuffix(".tsv")
    path = ctx.add_table(f"cohort_{stem}", ordered.reset_index(drop=True))
    k = ctx.options.cohort_top_terms
    found = compare_rankings(ordered, q, method, k)
    shown = _side_by_side(found, q, method)
    titles = RANKING_TITLES.get(method, {})
    described = "; ".join(f"{RANKING_LABELS.get(r, r)}: {titles[r]}" for r in found.rankings if r in titles)
    caption = (f"The {k} gene sets with the lowest FDR in each ranking ({len(found.chosen)} in all), ordered by "
               f"their lowest FDR. {esc(described)}. "
               + (f"Direction: up = the set's genes lean towards higher expression in "
                  f"{esc(c.level) if c.level else 'the level'} (NES &gt; 0). FDR q = 0: below 1 / permutations. "
                  if method == "prerank" else "")
               + f"— : not tested in that ranking. With p-values and leading edges: {code(path)}.")
    section.add(ctx.html_table(f"cohort_{stem}_top", shown, caption, colour_column=None,
                               nowrap=tuple(col for col in shown if col.endswith("direction"))))
    per_method = dict(found.summary)
    significant = found.significant
    if {"nbvae", "deseq2"} <= set(significant):
        shared = significant["nbvae"] & significant["deseq2"]
        section.add(paragraph(
            f"Gene sets at FDR &lt; 0.05: NB-VAE {len(significant['nbvae'])}, DESeq2 "
            f"{len(significant['deseq2'])}, both {len(shared)}"
            + (": " + esc(", ".join(sorted(shared)[:12])) + ("…" if len(shared) > 12 else "") if shared else "")
            + ".", "note"))
        per_method["fdr_below_0.05_in_both"] = len(shared)
    return {"method": method, **per_method}


def build(ctx: ReportContext, section: Section, c: Contrast) -> None:
    section.add(subheading("Pathway enrichment"))
    cohort = ctx.data.cohort
    if not cohort.enrichment:
        section.missing(f"no {COHORT_ENRICHMENT} in {cohort.folder}: run `nofone cohort-de` with --gene-sets GMT "
                        "(needs gseapy)")
        return
    about = _about(c.report)
    numbers: dict = {}
    for name, frame in cohort.enrichment.items():
        found = _one_table(ctx, section, name, frame, c, about)
        if found is not None:
            numbers[name] = found
    ctx.numbers["cohort"]["enrichment"] = numbers
