"""File names of a `nofone explain` output folder, in a module without torch so that the report
(which reads them) can import them."""

REGULATORS_DIR = "regulators"      # regulators/<sample>.tsv: one row per feature, best first
KNOCKOUTS_DIR = "knockouts"        # knockouts/<sample>.tsv: per target gene of the top regulators
SUMMARY_FILE = "summary.tsv"       # one row per sample
COHORT_FILE = "cohort.tsv"         # one row per feature over the samples
LONG_FILE = "regulators.parquet"   # every sample's regulators/<sample>.tsv in one table
REPORT_FILE = "explain_report.json"
