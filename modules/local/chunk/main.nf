// The samples to test (all but those the model trained on), in chunks of --chunk_size:
// chunks/chunk_0001.txt, ... one sample id per line; one REPRESENT and one DE task per chunk.
process NOFONE_CHUNK {
    tag 'cohort'
    label 'process_single'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    path data,  stageAs: 'dataset'
    path model, stageAs: 'model'

    output:
    path 'chunks/chunk_*.txt', emit: chunks
    path 'versions.yml',       emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    nofone --threads ${task.cpus} chunk --input ${data} --outdir chunks --exclude-training ${model} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        nofone: \$(nofone --version | sed 's/^nofone //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p chunks
    echo 'stub_sample' > chunks/chunk_0001.txt

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        nofone: \$(nofone --version | sed 's/^nofone //')
    END_VERSIONS
    """
}
