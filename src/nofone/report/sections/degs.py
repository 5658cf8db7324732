"""DE genes per sample: up and down calls of every tested sample, with the model-error diagnostics."""

from __future__ import annotations

from nofone.report.context import ReportContext
from nofone.report.figures.calls import de_per_sample
from nofone.report.html import Section, esc, png_figure


def build(ctx: ReportContext, section: Section) -> None:
    summary = ctx.data.summary
    if summary is None:
        section.unavailable("de/summary.tsv not found: run `nofone de`")
        return
    order = {g: i for i, g in enumerate(ctx.group_order(summary["group"]))}
    frame = summary.assign(_o=summary["group"].map(order)).sort_values(
        ["_o", "n_de", "sample_id"], ascending=[True, False, True]).drop(columns="_o").reset_index(drop=True)
    tiers = [c for c in ("n_candidate", "n_de_nb") if c in frame]
    first = ["sample_id", "group", *(["tissue"] if "tissue" in frame else []), "n_up", "n_down", "n_de", *tiers]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    colours = {g: ctx.colours[g] for g in order}
    rule = ctx.numbers.get("call_rule", "as in de/de_report.json")
    many = len(frame) > 60
    how = ("Each point is a sample; black bars are group medians." if many else
           "Bars right of zero: up calls; hatched bars left of zero: down calls; colour: group.")
    section.add(png_figure(
        de_per_sample(frame, colours),
        f"Genes called up and down in each tested sample ({esc(rule)}). {how} Held-out normals should have "
        "(almost) none; a clear excess of up over down calls in normals points to a bias of the model "
        "rather than biology.", "DE genes per sample"))
    shown = frame.drop(columns=[c for c in ("scale",) if c in frame])
    section.add(ctx.html_table("de_per_sample", frame,
                               "DE genes per sample. Two tiers: n_de counts the abnormal calls (beyond healthy "
                               "variation, the null of de), n_candidate the genes only the NB test calls (changes "
                               "against the closest normal that healthy people also show at that size; n_de_nb: "
                               "every NB call). n_cannot_call_down: genes whose expected count is so low that "
                               "even 0 reads would not be a significant down call; model_error_sd: how far, on the "
                               "log scale, the sample's closest normal misses it beyond the NB's own noise, 0 for a "
                               "sample the model fits as well as its held-out normals; many calls with a large "
                               "model_error_sd mean a sample the model covers poorly, and `de --null model-error` "
                               "tests against it).", shown=shown))
