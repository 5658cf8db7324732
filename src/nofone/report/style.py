"""Colours and group order shared by every figure and table of the report.

A group keeps one colour everywhere: training normals grey, held-out normals blue, other
normal-like groups greens, the tested conditions warm colours. Tissues get their own palette
(they are a different variable, shown only in the latent and association figures).
"""

from __future__ import annotations

from collections.abc import Iterable

TRAINING = "training"
TRAINING_COLOUR = "#8c8c8c"
HELDOUT_COLOUR = "#2c6fbb"
NORMAL_COLOURS = ("#1b9e77", "#66a61e", "#17becf", "#4c9f8a")
CASE_COLOURS = ("#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#b8860b", "#7b3294")
UP_COLOUR = "#c0392b"
DOWN_COLOUR = "#2c7bb6"
NEUTRAL_COLOUR = "#bdbdbd"
TISSUE_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)


def heldout_label(normal_value: str) -> str:
    return f"held-out {normal_value}"


def is_normal_like(group: str, normal_value: str) -> bool:
    """Groups of normal samples: training, held-out, the normal condition, or named '...normal...'.

    Used for colours and for choosing which samples to show first; the negative-control
    headline counts only held-out normals and tested samples of the normal condition.
    """
    return group in (TRAINING, heldout_label(normal_value), normal_value) or "normal" in group.lower()


def order_groups(groups: Iterable[str], normal_value: str) -> list[str]:
    """Training first, then held-out normals, other normal groups, then the rest (sorted)."""
    unique = sorted(set(groups))

    def key(group: str) -> tuple[int, str]:
        if group == TRAINING:
            return 0, group
        if group == heldout_label(normal_value):
            return 1, group
        if is_normal_like(group, normal_value):
            return 2, group
        return 3, group

    return sorted(unique, key=key)


def group_colours(groups: Iterable[str], normal_value: str) -> dict[str, str]:
    """One colour per group, stable for a given set of groups."""
    colours: dict[str, str] = {}
    normal_i = case_i = 0
    for group in order_groups(groups, normal_value):
        if group == TRAINING:
            colours[group] = TRAINING_COLOUR
        elif group == heldout_label(normal_value):
            colours[group] = HELDOUT_COLOUR
        elif is_normal_like(group, normal_value):
            colours[group] = NORMAL_COLOURS[normal_i % len(NORMAL_COLOURS)]
            normal_i += 1
        else:
            colours[group] = CASE_COLOURS[case_i % len(CASE_COLOURS)]
            case_i += 1
    return colours


def tissue_colours(tissues: Iterable[str]) -> dict[str, str]:
    unique = sorted({str(t) for t in tissues})
    return {t: TISSUE_COLOURS[i % len(TISSUE_COLOURS)] for i, t in enumerate(unique)}


# `nofone cohort-de`: the contrast's level warm, its reference blue, other levels muted
COHORT_LEVEL_COLOUR = CASE_COLOURS[0]
COHORT_REFERENCE_COLOUR = HELDOUT_COLOUR
COHORT_OTHER_COLOURS = ("#8c8c8c", "#b8a000", "#66a61e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#4c9f8a")
NA_COLOUR = "#ff7f0e"          # genes DESeq2 leaves without an adjusted p-value
NA_LFC_COLOUR = "#9467bd"      # genes DESeq2 leaves without a log2 fold change


def cohort_group_colours(values: Iterable[str], level: str, reference: str) -> dict[str, str]:
    """Reference first (blue), then the level (red), then the other levels (muted), sorted."""
    present = {str(v) for v in values}
    colours: dict[str, str] = {}
    for name, colour in ((reference, COHORT_REFERENCE_COLOUR), (level, COHORT_LEVEL_COLOUR)):
        if name in present:
            colours[name] = colour
    for i, other in enumerate(sorted(present - {level, reference})):
        colours[other] = COHORT_OTHER_COLOURS[i % len(COHORT_OTHER_COLOURS)]
    return colours
