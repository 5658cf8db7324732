"""What every section builder gets: the loaded data, the options, colours, and where it puts
the tables it shows (tables/<name>.tsv) and the numbers it reports (report_summary.json)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from nofone.models.registry import model_facts
from nofone.report.html import table, table_source
from nofone.report.inputs import ReportData
from nofone.report.style import group_colours, order_groups

TABLES = "tables"


@dataclass
class ReportOptions:
    title: str = "nofone report"
    samples: list[str] = field(default_factory=list)   # volcano samples; default: chosen by calls
    max_volcanoes: int = 4
    max_table_rows: int = 200
    top_genes: int = 20
    cohort_top_genes: int = 25        # genes by |generative log2 fold change| in the cohort section
    cohort_top_terms: int = 15        # gene sets per ranking in the cohort section
    top_regulators: int = 10          # regulators per sample in the regulators section
    max_explained_samples: int = 12   # samples with their own regulator table (tables/ has all)
    heatmap_regulators: int = 25      # regulators (rows) of the cohort heatmap


class ReportContext:
    """What the section builders share: data, options, colours, collected tables and numbers."""

    def __init__(self, data: ReportData, options: ReportOptions) -> None:
        self.data = data
        self.options = options
        self.normal = data.normal_value
        self.colours = group_colours(data.all_groups(), self.normal)
        self.tables: dict[str, pd.DataFrame] = {}
        self.numbers: dict[str, dict] = {}

    def add_table(self, name: str, frame: pd.DataFrame) -> str:
        self.tables[name] = frame
        return f"{TABLES}/{name}.tsv"

    def html_table(self, name: str, frame: pd.DataFrame, caption: str, shown: pd.DataFrame | None = None,
                   colour_column: str | None = "group", nowrap: tuple[str, ...] = ()) -> str:
        """Register `frame` as tables/<name>.tsv and render `shown` (default: the frame)."""
        path = self.add_table(name, frame)
        caption = f"{caption} {table_source(path)}"
        return table(frame if shown is None else shown, caption, max_rows=self.options.max_table_rows,
                     colours=self.colours, colour_column=colour_column, nowrap=nowrap)

    def group_order(self, groups) -> list[str]:
        return order_groups(groups, self.normal)


def model_settings(config: dict) -> dict:
    """The architecture settings of whichever model type made the artifact."""
    return config.get(config.get("model_type") or "") or {}


def n_components(config: dict) -> int | None:
    """Mixture components of the model's prior (1 for a standard normal prior, as the NB-VAE's;
    None for a model without components), from the facts config.json states."""
    return model_facts(config)["n_components"]


def latent_dim(config: dict) -> int | None:
    """Length of the model's stored point (the number of genes for a model without a latent space)."""
    return model_facts(config)["latent_dim"]
