// Simulated normal atlas, held-out normals and cases with planted DE: the input of the test
// profile (`--simulate`), so that it needs no downloads. Writes simulated/samplesheet.csv with
// count paths relative to that folder.
process NOFONE_SIMULATE {
    tag "${meta.id}"
    label 'process_single'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    val meta

    output:
    tuple val(meta), path('simulated'),                      emit: simulated
    tuple val("${task.process}"), eval('nofone --version'), emit: versions, topic: versions

    script:
    def args = task.ext.args ?: ''
    """
    nofone --threads ${task.cpus} simulate --outdir simulated ${args}
    """

    stub:
    """
    mkdir -p simulated/counts
    touch simulated/counts/normals.tsv simulated/counts/case001.tsv simulated/truth.tsv
    echo 'sample,counts,condition,tissue' > simulated/samplesheet.csv
    echo 'stub_normal,counts/normals.tsv,normal,t1' >> simulated/samplesheet.csv
    echo 'case001,counts/case001.tsv,case,t1' >> simulated/samplesheet.csv
    """
}
