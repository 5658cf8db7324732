// Count files -> one Parquet dataset (counts, genes, samples, ingest_report.json).
// The sample sheet arrives rewritten by subworkflows/local/samplesheet: its `counts` column
// points at inputs/<n>/<file name>, where this process stages the n-th distinct count file.
process NOFONE_INGEST {
    tag "${meta.id}"
    label 'process_medium'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    tuple val(meta), path(samplesheet, stageAs: 'samplesheet.csv'), path(counts, stageAs: 'inputs/*/*')
    path genes,      stageAs: 'model_genes/*'   // a model's genes.tsv (with --model), or []
    path annotation, stageAs: 'annotation/*/*'  // gene annotation TSVs (one or more), or []

    output:
    tuple val(meta), path('data'),                           emit: data
    tuple val("${task.process}"), eval('nofone --version'), emit: versions, topic: versions

    script:
    def args = task.ext.args ?: ''
    def genes_arg = genes ? "--genes ${genes}" : ''
    def annotation_arg = annotation ? [annotation].flatten().collect { a -> "--annotation ${a}" }.join(' ') : ''
    """
    nofone --threads ${task.cpus} ingest --samplesheet ${samplesheet} --outdir data ${genes_arg} ${annotation_arg} ${args}
    """

    stub:
    """
    mkdir -p data
    touch data/counts.parquet data/genes.parquet data/samples.parquet data/ingest_report.json
    """
}
