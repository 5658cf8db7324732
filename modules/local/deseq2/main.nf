// The classical baseline: DESeq2 (pydeseq2), each case sample against the normals the model
// trained on (`model`: TRAIN's folder), or, with --model ([[:], []] here), against every
// --normal_value sample of the sheet. Cases: every sample whose condition is neither
// --normal_value nor one of --negative_conditions. Which cases and controls, how many random
// controls: ext.args (see `nofone deseq2 n-of-one --help`). Output in the per-gene layout of
// `nofone de`.
process NOFONE_DESEQ2 {
    tag "${meta.id}"
    label 'process_medium'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    tuple val(meta),  path(data, stageAs: 'dataset')
    tuple val(meta2), path(model, stageAs: 'model')   // TRAIN's model, or [[:], []] (--model: no training samples here)

    output:
    tuple val(meta), path('deseq2'),                         emit: results
    tuple val("${task.process}"), eval('nofone --version'), emit: versions, topic: versions

    script:
    def args = task.ext.args ?: ''
    def trained_by = model ? "--controls-trained-by ${model}" : ''
    """
    nofone --threads ${task.cpus} deseq2 n-of-one --input ${data} --outdir deseq2 ${trained_by} ${args}
    """

    stub:
    """
    mkdir -p deseq2
    touch deseq2/deseq2.parquet deseq2/summary.tsv deseq2/controls.tsv deseq2/deseq2_report.json
    """
}
