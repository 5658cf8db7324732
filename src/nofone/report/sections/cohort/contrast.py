"""What a `nofone cohort-de` output compared: its report and the contrast read from it."""

from __future__ import annotations

from dataclasses import dataclass, field

from nofone.report.inputs import CohortData


@dataclass
class Contrast:
    """The cohort-de report (empty when missing) and the contrast it describes."""

    report: dict
    group: str | None = None
    level: str | None = None
    reference: str | None = None
    covariates: list[str] = field(default_factory=list)
    alpha: float = 0.05

    @property
    def options(self) -> dict:
        return self.report.get("options") or {}


def read_contrast(cohort: CohortData) -> Contrast:
    """(group column, level, reference, covariates) from the report JSON, else from the table's columns."""
    report = cohort.report or {}
    contrast = report.get("contrast") or {}
    options = report.get("options") or {}
    group = contrast.get("column") or options.get("group")
    level = contrast.get("level") or options.get("level")
    reference = contrast.get("reference") or options.get("reference")
    covariates = [str(c) for c in (contrast.get("covariates") or options.get("covariates") or [])]
    if (level is None or reference is None) and cohort.table is not None:
        expression = [c.removeprefix("log2_expression_") for c in cohort.table.columns
                      if c.startswith("log2_expression_")]
        if len(expression) == 2:  # cohort-de writes the level's column first
            level, reference = level or expression[0], reference or expression[1]
    return Contrast(report, None if group is None else str(group), None if level is None else str(level),
                    None if reference is None else str(reference), covariates, float(options.get("alpha", 0.05)))
