"""The fast TSV writer writes what pandas' to_csv(float_format="%.6g") writes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nofone.io.tsv import round_significant, write_tsv


def read(path):
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])


def test_round_significant_equals_python_formatting_across_300_decades():
    rng = np.random.default_rng(0)
    values = rng.lognormal(0, 60, 200_000) * rng.choice([-1, 1], 200_000)
    values = np.concatenate([values, [0.0, 5e-324, 1.7976931348623157e308, 999999.5, 1e-5, 1e22, 1e23]])
    expected = np.array([float(f"{v:.6g}") for v in values])
    np.testing.assert_array_equal(round_significant(values), expected)
    assert np.isnan(round_significant(np.array([np.nan]))[0])
    assert round_significant(np.array([np.inf, -np.inf])).tolist() == [np.inf, -np.inf]


def test_write_tsv_reads_back_like_pandas(tmp_path):
    frame = pd.DataFrame({
        "gene_id": ["ENSG1", "ENSG2", "ENSG3", "ENSG4"],
        "gene_name": ["A", None, "", "D"],
        "count": np.array([0, 7, 123456789, 3], dtype=np.int64),
        "p_value": [1.0, 3.14159265e-250, np.nan, 0.0123456789],
        "log2_fold_change": [-np.inf, np.inf, 2.5, -0.333333333],
        "can_call_down": [True, False, True, False],
    })
    write_tsv(frame, tmp_path / "ours.tsv")
    frame.to_csv(tmp_path / "pandas.tsv", sep="\t", index=False, float_format="%.6g")
    pd.testing.assert_frame_equal(read(tmp_path / "ours.tsv"), read(tmp_path / "pandas.tsv"))
    header, first = (tmp_path / "ours.tsv").read_text().splitlines()[:2]
    assert header == "gene_id\tgene_name\tcount\tp_value\tlog2_fold_change\tcan_call_down"
    assert first == "ENSG1\tA\t0\t1\t-inf\tTrue"


def test_write_tsv_quotes_text_with_tabs_like_pandas(tmp_path):
    frame = pd.DataFrame({"gene_id": ["a\tb", 'say "x"'], "value": [0.5, 1.25]})
    write_tsv(frame, tmp_path / "t.tsv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t.tsv", sep="\t"), frame)


def test_write_tsv_of_no_rows_writes_the_header(tmp_path):
    write_tsv(pd.DataFrame({"gene_id": pd.Series([], dtype=object), "p": pd.Series([], dtype=float)}),
              tmp_path / "e.tsv")
    assert (tmp_path / "e.tsv").read_text() == "gene_id\tp\n"
