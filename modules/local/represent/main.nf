// Closest-normal representation of the samples of one chunk (the model frozen).
process NOFONE_REPRESENT {
    tag "${meta.id}"
    label 'process_gpu'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    tuple val(meta),  path(samples_file)
    tuple val(meta2), path(model, stageAs: 'model')
    tuple val(meta3), path(data, stageAs: 'dataset')

    output:
    tuple val(meta), path("reps_${meta.id}"),                emit: representations
    tuple val("${task.process}"), eval('nofone --version'), emit: versions, topic: versions

    script:
    def args = task.ext.args ?: ''
    """
    nofone --threads ${task.cpus} represent --model ${model} --input ${data} --samples-file ${samples_file} --outdir reps_${meta.id} ${args}
    """

    stub:
    """
    mkdir -p reps_${meta.id}
    touch reps_${meta.id}/representations.parquet reps_${meta.id}/represent_report.json
    """
}
