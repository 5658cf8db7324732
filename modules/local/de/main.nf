// Per-gene exact tests of the samples of one chunk against their closest normal's NB.
process NOFONE_DE {
    tag "${meta.id}"
    label 'process_low'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    tuple val(meta),  path(representations)
    tuple val(meta2), path(model, stageAs: 'model')
    tuple val(meta3), path(data, stageAs: 'dataset')

    output:
    tuple val(meta), path("de_${meta.id}"),                  emit: de
    tuple val("${task.process}"), eval('nofone --version'), emit: versions, topic: versions

    script:
    def args = task.ext.args ?: ''
    """
    nofone --threads ${task.cpus} de --model ${model} --representations ${representations} --input ${data} --outdir de_${meta.id} ${args}
    """

    stub:
    """
    mkdir -p de_${meta.id}/samples
    touch de_${meta.id}/de.parquet de_${meta.id}/summary.tsv de_${meta.id}/de_report.json
    """
}
