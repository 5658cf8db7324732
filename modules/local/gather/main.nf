// Merge the per-chunk outputs of REPRESENT (reps_chunk_*) and DE (de_chunk_*) into the cohort's:
// representations.parquet, de.parquet, summary.tsv, samples/<id>.tsv, gather_report.json.
// `parts` arrives sorted by folder name, so chunks are merged in order.
process NOFONE_GATHER {
    tag "${meta.id}"
    label 'process_low'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    tuple val(meta), path(parts)

    output:
    tuple val(meta), path('cohort'),                         emit: cohort
    tuple val("${task.process}"), eval('nofone --version'), emit: versions, topic: versions

    script:
    def args = task.ext.args ?: ''
    """
    nofone --threads ${task.cpus} gather ${parts} --outdir cohort ${args}
    """

    stub:
    """
    mkdir -p cohort/samples
    touch cohort/representations.parquet cohort/de.parquet cohort/summary.tsv cohort/gather_report.json
    """
}
