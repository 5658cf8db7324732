// GEMDiff's gene-set screen (--screen, with --gene_sets): per set, the silhouette of the
// --normal_value samples against the others in a 2-D UMAP and in PCA space, against random sets
// of the same size. Needs no model: it runs on every ingested sample.
process NOFONE_SCREEN {
    tag "${meta.id}"
    label 'process_medium'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    tuple val(meta), path(data, stageAs: 'dataset')
    tuple val(meta2), path(gmt, stageAs: 'gene_sets/*')   // the GMT file of the sets to screen

    output:
    tuple val(meta), path('screen'),                         emit: screen
    tuple val("${task.process}"), eval('nofone --version'), emit: versions, topic: versions

    script:
    def args = task.ext.args ?: ''
    """
    nofone --threads ${task.cpus} screen-gene-sets --input ${data} --outdir screen --gene-sets ${gmt} ${args}
    """

    stub:
    """
    mkdir -p screen
    touch screen/screen.tsv screen/random_sets.tsv screen/screen.png screen/screen_report.json
    """
}
