// Per sample and gene set of --gene_sets: do the set's genes deviate together from the closest
// normal, beyond the healthy variation of normals the model never trained on (`nofone pathways`,
// docs/pathways.md)? Reads GATHER's cohort/ (de.parquet) and the model's local null.
process NOFONE_PATHWAYS {
    tag "${meta.id}"
    label 'process_low'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    tuple val(meta),  path(cohort, stageAs: 'cohort')   // GATHER: de.parquet, summary.tsv, ...
    tuple val(meta2), path(model, stageAs: 'model')
    path gene_sets, stageAs: 'gene_sets/*'             // a GMT file
    path symbol_map, stageAs: 'symbol_map/*'           // gene ids/names -> the GMT's symbols, or []

    output:
    tuple val(meta), path('pathways'),                       emit: pathways
    tuple val("${task.process}"), eval('nofone --version'), emit: versions, topic: versions

    script:
    def args = task.ext.args ?: ''
    def symbol_map_arg = symbol_map ? "--symbol-map ${symbol_map}" : ''
    """
    nofone --threads ${task.cpus} pathways --de ${cohort} --gene-sets ${gene_sets} --model ${model} --outdir pathways ${symbol_map_arg} ${args}
    """

    stub:
    """
    mkdir -p pathways/samples
    touch pathways/pathways.parquet pathways/summary.tsv pathways/pathways_report.json
    """
}
