"""Latent space: the training normals and the tested samples on the PCA plane of the training latent."""

from __future__ import annotations

from nofone.report.context import ReportContext
from nofone.report.figures.model import latent_pca
from nofone.report.html import Section, bold, paragraph, png_figure
from nofone.report.style import tissue_colours
from nofone.stats.projection import pca_plane


def build(ctx: ReportContext, section: Section) -> None:
    data = ctx.data
    if data.training is None or data.training_latent is None or len(data.training) < 3:
        section.unavailable("model/training_representations.parquet not found (made by `nofone train`)")
        return
    z = data.training_latent
    tested = new_tissue = new_group = None
    if data.represented is not None and data.represented_latent is not None:
        if data.represented_latent.shape[1] != z.shape[1]:
            section.missing(f"representations have {data.represented_latent.shape[1]} latent dimensions, the "
                            f"model {z.shape[1]}: they were made with another model")
        else:
            tested = data.represented_latent
            new_group = data.represented["group"].astype(str).to_numpy()
            new_tissue = data.represented["tissue"].to_numpy() if "tissue" in data.represented else None
    else:
        section.notes.append("representations/representations.parquet not found: training samples only")
    train_xy, new_xy, explained = pca_plane(z, tested)
    tissues = data.training["tissue"] if "tissue" in data.training and data.training["tissue"].notna().any() else None
    all_tissues = set() if tissues is None else set(tissues.dropna().astype(str))
    if new_tissue is not None:
        all_tissues |= {str(t) for t in new_tissue if t is not None and t == t}
    heldout = (data.training["split"] == "test").to_numpy()
    png = latent_pca(train_xy, None if tissues is None else tissues.astype(str).to_numpy(), heldout,
                     new_xy, new_tissue, new_group, tissue_colours(all_tissues), ctx.colours, explained)
    section.add(png_figure(
        png,
        f"The model's latent space, projected on the first two principal components of the "
        f"{len(z):,} normal samples it was trained with (PCA of their latent points; the tested samples' "
        f"representations are projected with the same PCA). {bold('Left')}: every sample coloured by tissue "
        "(dots: training, hollow circles: normals held out from training, crosses: tested samples). "
        f"{bold('Right')}: tested samples by group over the training normals in grey. A tested sample far from "
        "every normal cloud has no close normal: expect many DE calls and read them with care. PCA keeps only "
        f"part of the latent ({100 * sum(explained):.0f}% of its variance here).",
        "latent space PCA"))
    if new_xy is None and data.represented is None:
        section.add(paragraph("Tested samples not shown: representations/representations.parquet not found.",
                              "note"))
    ctx.numbers["latent"] = {"explained_variance": explained, "training_samples": len(z),
                             "tested_samples": 0 if new_xy is None else len(new_xy)}
