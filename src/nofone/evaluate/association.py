"""Which tissues each mixture component holds, and whether tested samples land in a component of
their own tissue (Fig. 2B of Prada-Luengo et al. 2023), as the report shows them.

Tables in, tables out; the component order makes a model that separates tissues a diagonal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd


@dataclass
class ComponentTissues:
    """Training samples per tissue (rows, sorted) and component (columns: grouped by their
    majority tissue, in tissue order, the purest first)."""

    counts: pd.DataFrame
    percent: pd.DataFrame          # of each component's samples (columns sum to 100)
    majority: pd.Series            # component -> its majority tissue
    purity: float                  # share of samples in their component's majority tissue

    def long(self) -> pd.DataFrame:
        """tissue, component, samples, percent_of_component; only cells with samples."""
        long = self.counts.stack().rename("samples").reset_index()
        long.columns = ["tissue", "component", "samples"]
        long["percent_of_component"] = self.percent.stack().to_numpy()
        return long[long["samples"] > 0].reset_index(drop=True)


def component_tissues(tissue: pd.Series, component: pd.Series) -> ComponentTissues:
    counts = pd.crosstab(tissue.astype(str), component.astype(int))
    percent = 100 * counts / counts.sum(axis=0)
    tissues = sorted(counts.index)
    majority = percent.idxmax(axis=0)
    columns = sorted(counts.columns, key=lambda c: (tissues.index(majority[c]), -percent[c].max(), c))
    counts, percent = counts.loc[tissues, columns], percent.loc[tissues, columns]
    purity = float(counts.max(axis=0).sum() / counts.to_numpy().sum())
    return ComponentTissues(counts, percent, majority, purity)


def components_of_tested(tissue: pd.Series, group: pd.Series, component: pd.Series, columns: Sequence[int],
                      group_order: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(counts, percent of each row) of tested samples per "tissue · group" row and component:
    rows by tissue then group in `group_order`, the training `columns` first, then the others."""
    label = tissue.astype(str) + " · " + group.astype(str)
    counts = pd.crosstab(label, component.astype(int))
    new_columns = [c for c in columns if c in counts.columns] + sorted(
        c for c in counts.columns if c not in columns)
    order = list(group_order)
    rows = sorted(counts.index, key=lambda r: (r.split(" · ")[0], order.index(r.split(" · ", 1)[1])))
    counts = counts.loc[rows, new_columns]
    return counts, 100 * counts.div(counts.sum(axis=1), axis=0)


def own_tissue_agreement(tissue: pd.Series, group: pd.Series, component: pd.Series, majority: pd.Series,
                         group_order: Sequence[str]) -> list[dict]:
    """Per group (in `group_order`): samples, how many lie in a component whose majority tissue
    among the training samples is their own, and that fraction."""
    majority_tissue = {int(c): str(t) for c, t in majority.items()}
    agree = component.astype(int).map(majority_tissue) == tissue.astype(str)
    rows = []
    for name in group_order:
        pick = (group == name).to_numpy()
        rows.append({"group": name, "samples": int(pick.sum()),
                     "in a component of their tissue": int(agree[pick].sum()), "fraction": float(agree[pick].mean())})
    return rows


def long_counts(counts: pd.DataFrame) -> pd.DataFrame:
    """row, component, samples of a counts table; only cells with samples."""
    long = counts.stack().rename("samples").reset_index()
    long.columns = ["row", "component", "samples"]
    return long[long["samples"] > 0].reset_index(drop=True)
