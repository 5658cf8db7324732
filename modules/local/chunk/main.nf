// The samples to test (all but those the model trained on), in chunks of --chunk_size:
// chunks/chunk_0001.txt, ... one sample id per line; one REPRESENT and one DE task per chunk.
process NOFONE_CHUNK {
    tag "${meta.id}"
    label 'process_single'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    tuple val(meta),  path(data, stageAs: 'dataset')
    tuple val(meta2), path(model, stageAs: 'model')

    output:
    tuple val(meta), path('chunks/chunk_*.txt'),             emit: chunks
    tuple val("${task.process}"), eval('nofone --version'), emit: versions, topic: versions

    script:
    def args = task.ext.args ?: ''
    """
    nofone --threads ${task.cpus} chunk --input ${data} --outdir chunks --exclude-training ${model} ${args}
    """

    stub:
    """
    mkdir -p chunks
    echo 'stub_sample' > chunks/chunk_0001.txt
    """
}
