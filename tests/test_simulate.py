"""`nofone simulate`: files, ingest round trip, determinism, realism, tissue structure, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from nofone.cli.app import app
from nofone.errors import NofoneError
from nofone.io.dataset import Dataset
from nofone.io.gene_ids import Annotation
from nofone.io.ingest import IngestOptions, ingest
from nofone.simulate.atlas import build_gene_model, draw_nb, draw_normals
from nofone.simulate.cases import plant_de
from nofone.simulate.config import SimulationConfig
from nofone.simulate.write import simulate, write_normal_matrix

SAMPLE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FILES = ("samplesheet.csv", "counts/normals.tsv.gz", "truth.tsv", "genes.tsv", "gene_params.tsv",
         "latent.tsv", "simulation.json")


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    """The default simulation (what CI, the demo and most tests use)."""
    out = tmp_path_factory.mktemp("sim") / "sim"
    simulate(out, SimulationConfig())
    return out


@pytest.fixture(scope="module")
def ingested(sim: Path, tmp_path_factory) -> Dataset:
    out = tmp_path_factory.mktemp("ingested") / "data"
    ingest(sim / "samplesheet.csv", out, IngestOptions())
    return Dataset(out)


@pytest.fixture(scope="module")
def matrix(sim: Path) -> pd.DataFrame:
    """The normal matrix, genes x samples, as written."""
    table = pd.read_csv(sim / "counts/normals.tsv.gz", sep="\t", index_col=0)
    assert table.columns[0] == "gene_name"
    return table.drop(columns="gene_name")


def test_writes_every_file(sim: Path):
    for name in FILES:
        assert (sim / name).is_file(), name
    sheet = pd.read_csv(sim / "samplesheet.csv", dtype=str, keep_default_na=False)
    assert list(sheet.columns) == ["sample", "counts", "condition", "tissue", "batch", "column"]
    assert all(SAMPLE_ID.match(s) for s in sheet["sample"])
    assert sheet["sample"].is_unique
    counts = sheet["condition"].value_counts().to_dict()
    assert counts == {"normal": 160, "case": 8, "heldout_normal": 8}
    normals = sheet[sheet["condition"] != "case"]
    assert (normals["counts"] == "counts/normals.tsv.gz").all()
    assert (normals["column"] == normals["sample"]).all()
    assert normals.groupby("tissue").size().tolist() == [42] * 4
    cases = sheet[sheet["condition"] == "case"]
    for _, row in cases.iterrows():
        assert row["counts"] == f"counts/cases/{row['sample']}.tsv"
        first = (sim / row["counts"]).read_text().splitlines()[:2]
        assert first[0] == "gene_id\tcount"
        assert re.match(r"^ENSG9\d{10}\t\d+$", first[1])
    assert set(sheet["batch"]) <= {"b1", "b2"}

    summary = json.loads((sim / "simulation.json").read_text())
    assert summary["seed"] == 0 and summary["parameters"]["genes"] == 2000
    assert summary["n_samples"]["normal"] == {f"tissue0{t}": 40 for t in range(1, 5)}
    assert len(summary["latent"]["means"]) == 4 and summary["nofone_version"]

    genes = pd.read_csv(sim / "genes.tsv", sep="\t")
    assert list(genes.columns) == ["gene_id", "gene_name", "biotype"]
    assert genes["gene_id"].str.match(r"^ENSG9\d{10}$").all() and genes["gene_id"].is_unique
    assert genes["gene_name"].iloc[0] == "SIM1"
    lnc = (genes["biotype"] == "lncRNA").mean()
    assert set(genes["biotype"]) == {"protein_coding", "lncRNA"} and 0.08 < lnc < 0.12
    annotation = Annotation.read(sim / "genes.tsv")  # usable as `nofone filter --annotation`
    assert annotation.biotype_of(["ENSG90000000001"])[0] in {"protein_coding", "lncRNA"}

    latent = pd.read_csv(sim / "latent.tsv", sep="\t")
    assert list(latent.columns[:5]) == ["sample_id", "tissue", "condition", "batch", "size_factor"]
    assert [c for c in latent.columns if c.startswith("z")] == [f"z{i}" for i in range(1, 9)]
    assert set(latent["sample_id"]) == set(sheet["sample"])


def test_ingest_round_trip(sim: Path, ingested: Dataset, matrix: pd.DataFrame):
    assert ingested.gene_ids == matrix.index.tolist()
    genes = pd.read_csv(sim / "genes.tsv", sep="\t")
    assert ingested.gene_ids == genes["gene_id"].tolist()
    assert ingested.genes["gene_name"].tolist() == genes["gene_name"].tolist()
    chunk = ingested.read()
    assert chunk.measured is None
    got = pd.DataFrame(chunk.counts.T, index=ingested.gene_ids, columns=chunk.sample_ids)
    assert got[matrix.columns].equals(matrix.astype(np.int64))
    sheet = pd.read_csv(sim / "samplesheet.csv", dtype=str, keep_default_na=False)
    for _, row in sheet[sheet["condition"] == "case"].iterrows():
        case = pd.read_csv(sim / row["counts"], sep="\t", index_col=0)["count"]
        assert case.index.tolist() == ingested.gene_ids
        np.testing.assert_array_equal(got[row["sample"]].to_numpy(), case.to_numpy())
    meta = ingested.samples.set_index("sample_id")
    expected = sheet.set_index("sample")
    for column in ("condition", "tissue", "batch"):
        assert meta.loc[expected.index, column].tolist() == expected[column].tolist()


def test_counts_are_nonnegative_integers_with_realistic_spread(matrix: pd.DataFrame, sim: Path):
    values = matrix.to_numpy()
    assert values.dtype.kind == "i" and values.min() >= 0
    library = values.sum(axis=0)
    assert library.std() / library.mean() > 0.2
    # per-gene true dispersions: wide, realistic range (atlas: 0.02-1.2 for mean >= 20)
    params = pd.read_csv(sim / "gene_params.tsv", sep="\t")
    expressed = params[np.exp(params["log_mean_baseline"]) >= 20]
    q05, q50, q95 = np.quantile(expressed["dispersion"], [0.05, 0.5, 0.95])
    assert 0.003 < q05 < 0.05 and 0.03 < q50 < 0.3 and 0.2 < q95 < 3
    # observed moment dispersion within one tissue, expressed genes
    latent = pd.read_csv(sim / "latent.tsv", sep="\t", index_col=0)
    one = latent.index[(latent["tissue"] == "tissue01") & (latent["condition"] == "normal")]
    block = matrix[one].to_numpy(float)
    norm = block / (block.sum(axis=0) / block.sum(axis=0).mean())
    mean, var = norm.mean(axis=1), norm.var(axis=1, ddof=1)
    keep = mean >= 100
    alpha = (var[keep] - mean[keep]) / mean[keep] ** 2
    assert 0.02 < np.median(alpha) < 0.3
    # expression spans orders of magnitude, with some never-seen genes
    gene_mean = values.mean(axis=1)
    assert (gene_mean < 1).mean() > 0.03 and gene_mean.max() > 1e4


def test_planted_de_has_the_planted_direction(sim: Path):
    truth = pd.read_csv(sim / "truth.tsv", sep="\t")
    assert list(truth.columns) == ["sample_id", "source_normal", "gene_id", "log2_fold_change",
                                   "base_mean"]
    assert (truth["base_mean"] >= 5).all()
    assert truth["log2_fold_change"].abs().between(1.0, 3.0).all()
    assert truth["sample_id"].nunique() == 8
    assert 0.35 < (truth["log2_fold_change"] > 0).mean() < 0.65
    per_sample = truth.groupby("sample_id").size()
    assert (per_sample > 50).all()  # 5% of the ~1,700 genes with mean >= 5
    agree = []
    for sample, rows in truth.groupby("sample_id"):
        counts = pd.read_csv(sim / f"counts/cases/{sample}.tsv", sep="\t", index_col=0)["count"]
        rows = rows[rows["base_mean"] >= 20]
        observed = counts.loc[rows["gene_id"]].to_numpy() + 0.5
        ratio = np.log(observed / rows["base_mean"].to_numpy())
        agree.extend(np.sign(ratio) == np.sign(rows["log2_fold_change"].to_numpy()))
    assert np.mean(agree) > 0.85


def test_tissue_structure_is_recoverable(matrix: pd.DataFrame, sim: Path):
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import NearestCentroid

    latent = pd.read_csv(sim / "latent.tsv", sep="\t", index_col=0).loc[matrix.columns]
    counts = matrix.to_numpy(float)
    log_cpm = np.log1p(counts / counts.sum(axis=0) * 1e6).T
    scores = PCA(n_components=10, random_state=0).fit_transform(log_cpm - log_cpm.mean(axis=0))
    labels = latent["tissue"].to_numpy()
    accuracy = cross_val_score(NearestCentroid(), scores, labels, cv=5).mean()
    assert accuracy > 0.9
    clusters = KMeans(4, n_init=10, random_state=0).fit_predict(scores)
    assert adjusted_rand_score(labels, clusters) > 0.9
    # the true latent separates the tissues too (what a DGD should recover)
    z = latent[[f"z{i}" for i in range(1, 9)]].to_numpy()
    assert cross_val_score(NearestCentroid(), z, labels, cv=5).mean() > 0.95


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "simulation.json"}


def test_deterministic_for_a_seed(tmp_path: Path):
    config = SimulationConfig(genes=300, samples_per_tissue=10, cases=3)
    first, second = simulate(tmp_path / "a", config), simulate(tmp_path / "b", config)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert {k: v for k, v in first.items() if k != "created"} == \
        {k: v for k, v in second.items() if k != "created"}
    simulate(tmp_path / "c", SimulationConfig(genes=300, samples_per_tissue=10, cases=3, seed=1))
    a, c = _files(tmp_path / "a"), _files(tmp_path / "c")
    assert a["counts/normals.tsv.gz"] != c["counts/normals.tsv.gz"]
    assert a["truth.tsv"] != c["truth.tsv"]


def test_matrix_in_many_blocks_is_one_valid_gzip(tmp_path: Path, monkeypatch):
    """Several blocks (separate gzip members) read back as one table, in gene order."""
    import nofone.simulate.write as module

    monkeypatch.setattr(module, "BLOCK_VALUES", 1000)  # 1000 values // 34 samples = 29 genes
    simulate(tmp_path / "s", SimulationConfig(tissues=2, samples_per_tissue=15, genes=100, cases=1))
    table = pd.read_csv(tmp_path / "s/counts/normals.tsv.gz", sep="\t")
    assert table.shape == (100, 2 + 34)
    assert table["gene_id"].tolist() == [f"ENSG9{i:010d}" for i in range(1, 101)]
    ingest(tmp_path / "s/samplesheet.csv", tmp_path / "d")
    assert Dataset(tmp_path / "d").n_samples == 35


def test_matrix_does_not_depend_on_threads(tmp_path: Path, monkeypatch):
    import nofone.simulate.write as module

    monkeypatch.setattr(module, "BLOCK_VALUES", 2000)
    config = SimulationConfig(tissues=3, samples_per_tissue=12, genes=400)
    model = build_gene_model(config)
    normals = draw_normals(config, model)
    one = write_normal_matrix(tmp_path / "one.tsv.gz", config, model, normals, workers=1)
    three = write_normal_matrix(tmp_path / "three.tsv.gz", config, model, normals, workers=3)
    assert (tmp_path / "one.tsv.gz").read_bytes() == (tmp_path / "three.tsv.gz").read_bytes()
    np.testing.assert_array_equal(one, three)


def test_plant_de_keeps_the_negative_binomial():
    rng = np.random.default_rng(0)
    n, mu, r = 200_000, 40.0, 2.0
    base = draw_nb(rng, np.full(n, mu), np.full(n, r))
    genes = np.arange(n)
    for lfc in (1.5, -1.5):
        f = 2.0**lfc
        out = plant_de(rng, base, np.full(n, mu), np.full(n, r), genes, np.full(n, lfc))
        size = f * r if lfc > 0 else r
        assert out.mean() == pytest.approx(f * mu, rel=0.02)
        assert out.var() == pytest.approx(f * mu + (f * mu) ** 2 / size, rel=0.05)
    assert base.mean() == pytest.approx(mu, rel=0.02)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"genes": 0}, "--genes"),
        ({"tissues": -1}, "--tissues"),
        ({"samples_per_tissue": 0}, "--samples-per-tissue"),
        ({"cases": -2}, "--cases"),
        ({"lfc_min": 3.0, "lfc_max": 1.0}, "--lfc-min"),
        ({"lfc_min": 0.0}, "--lfc-min"),
        ({"de_fraction": 0.0}, "--de-fraction"),
        ({"de_fraction": 1.0}, "--de-fraction"),
        ({"latent_dim": 0}, "--latent-dim"),
    ],
)
def test_bad_options_raise_and_write_nothing(tmp_path: Path, options: dict, message: str):
    with pytest.raises(NofoneError, match=re.escape(message)):
        simulate(tmp_path / "out", SimulationConfig(**options))
    assert list(tmp_path.iterdir()) == []


def test_cli(tmp_path: Path, runner: CliRunner):
    out = tmp_path / "sim"
    result = runner.invoke(app, ["simulate", "--outdir", str(out), "--genes", "300", "--tissues",
                                 "3", "--samples-per-tissue", "8", "--cases", "2", "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "simulation.json").read_text())["parameters"]["seed"] == 7
    assert len(pd.read_csv(out / "samplesheet.csv")) == 3 * (8 + 2) + 2
    bad = runner.invoke(app, ["simulate", "--outdir", str(tmp_path / "bad"), "--de-fraction", "2"])
    assert bad.exit_code == 2 and not (tmp_path / "bad").exists()
