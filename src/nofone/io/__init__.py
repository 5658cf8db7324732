"""Files in and out: sample sheets, count readers, gene ids, Parquet datasets, model artifacts."""
