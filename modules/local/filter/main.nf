// edgeR filterByExpr computed on the normal samples (`--condition` from ext.args), grouped by
// the sample-sheet columns in `groups` (comma-separated; '' for no groups). All samples are kept.
process NOFONE_FILTER {
    tag "${meta.id}"
    label 'process_low'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    tuple val(meta), path(data, stageAs: 'dataset'), val(groups)
    path annotation, stageAs: 'annotation/*/*'   // gene annotation TSVs (one or more), or []

    output:
    tuple val(meta), path('filtered'),                       emit: data
    tuple val("${task.process}"), eval('nofone --version'), emit: versions, topic: versions

    script:
    def args = task.ext.args ?: ''
    def group_arg = groups ? "--group ${groups}" : ''
    def annotation_arg = annotation ? [annotation].flatten().collect { a -> "--annotation ${a}" }.join(' ') : ''
    """
    nofone --threads ${task.cpus} filter --input ${data} --outdir filtered ${group_arg} ${annotation_arg} ${args}
    """

    stub:
    """
    mkdir -p filtered
    touch filtered/counts.parquet filtered/genes.parquet filtered/samples.parquet filtered/gene_filter.tsv filtered/filter_report.json
    """
}
