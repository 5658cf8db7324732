// edgeR filterByExpr computed on the normal samples (`--condition` from ext.args), grouped by
// the sample-sheet columns in `groups` (comma-separated; '' for no groups). All samples are kept.
process NOFONE_FILTER {
    tag 'cohort'
    label 'process_low'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    path data,       stageAs: 'dataset'
    val  groups
    path annotation, stageAs: 'annotation/*'     // gene annotation TSV, or []

    output:
    path 'filtered',     emit: data
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    def group_arg = groups ? "--group ${groups}" : ''
    def annotation_arg = annotation ? "--annotation ${annotation}" : ''
    """
    nofone --threads ${task.cpus} filter --input ${data} --outdir filtered ${group_arg} ${annotation_arg} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        nofone: \$(nofone --version | sed 's/^nofone //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p filtered
    touch filtered/counts.parquet filtered/genes.parquet filtered/samples.parquet filtered/gene_filter.tsv filtered/filter_report.json

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        nofone: \$(nofone --version | sed 's/^nofone //')
    END_VERSIONS
    """
}
