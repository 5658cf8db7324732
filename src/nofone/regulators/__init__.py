"""Which regulators explain a DE profile: DEcode (Tasaki et al. 2020) on per-gene regulator tables.

- `features`, `tables`, `genes`, `scaling`: gene x feature tables on Ensembl ids, joined and
  scaled robustly on the training genes;
- `targets`: tissue DE from a dataset, the DE prior, or any gene x target table;
- `network`, `split`, `train`: DEcode's dense network, chromosome 1 held out, best of N seeds;
  `baselines`, `scores`: ridge and boosted trees on the same split, Spearman / AUROC;
- `model`: the saved regulator model (a nofone artifact, safetensors);
- `attribution`: DeepLIFT (captum) against no binding, with completeness and IG checks;
- `head`, `profiles`, `knockout`, `explain`, `explain_step`: one DE profile explained by a head
  on the frozen trunk, with permutation q-values and in-silico knockouts;
- `simulate`: planted regulator effects for the tests.
"""
