// Generative differential expression between two groups of a cohort: an NB-VAE trained on every
// sample, its log2 fold changes with credible intervals, DESeq2 beside it, the latent plot and
// (with a GMT) pathway enrichment. The contrast comes through ext.args: --group, --contrast,
// --covariate ... (see `nofone cohort-de --help`).
process NOFONE_COHORT_DE {
    tag "${meta.id}"
    label 'process_medium'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    tuple val(meta), path(data, stageAs: 'dataset')
    path gene_sets,  stageAs: 'gene_sets/*'    // a GMT file for pathway enrichment, or []
    path symbol_map, stageAs: 'symbol_map/*'   // gene id/name -> GMT symbol TSV, or []

    output:
    tuple val(meta), path('cohort_de'),                      emit: results
    tuple val("${task.process}"), eval('nofone --version'), emit: versions, topic: versions

    script:
    def args = task.ext.args ?: ''
    def gene_sets_arg = gene_sets ? "--gene-sets ${gene_sets}" : ''
    def symbol_map_arg = symbol_map ? "--symbol-map ${symbol_map}" : ''
    """
    nofone --threads ${task.cpus} cohort-de --input ${data} --outdir cohort_de ${gene_sets_arg} ${symbol_map_arg} ${args}
    """

    stub:
    """
    mkdir -p cohort_de/model
    touch cohort_de/cohort_de.tsv cohort_de/cohort_de_report.json cohort_de/latent.tsv cohort_de/latent.png
    touch cohort_de/model/config.json cohort_de/model/weights.safetensors cohort_de/model/genes.tsv cohort_de/model/checksums.sha256
    """
}
