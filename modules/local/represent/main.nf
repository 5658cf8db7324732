// Closest-normal representation of the samples of one chunk (decoder and mixture frozen).
process NOFONE_REPRESENT {
    tag "${meta.id}"
    label 'process_gpu'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    tuple val(meta), path(samples_file)
    path model, stageAs: 'model'
    path data,  stageAs: 'dataset'

    output:
    tuple val(meta), path("reps_${meta.id}"), emit: representations
    path 'versions.yml',                       emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    nofone --threads ${task.cpus} represent --model ${model} --input ${data} --samples-file ${samples_file} --outdir reps_${meta.id} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        nofone: \$(nofone --version | sed 's/^nofone //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p reps_${meta.id}
    touch reps_${meta.id}/representations.parquet reps_${meta.id}/represent_report.json

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        nofone: \$(nofone --version | sed 's/^nofone //')
    END_VERSIONS
    """
}
