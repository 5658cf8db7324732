"""Pipeline steps as library functions: each reads its inputs, runs the maths, writes its outputs
atomically. The CLI and the Nextflow modules call these; they hold no maths of their own."""
