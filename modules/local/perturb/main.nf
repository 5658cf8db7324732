// GEMDiff's tumour-to-normal perturbation with a diffusion model (--perturb): every sample not of
// --normal_value bridged to its closest normal; the shift per gene, GEMDiff's rule and the
// calibrated one, per gene set of the GMT (or all genes as one set), core genes.
process NOFONE_PERTURB {
    tag "${meta.id}"
    label 'process_gpu'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    tuple val(meta),  path(data, stageAs: 'dataset')
    tuple val(meta2), path(model, stageAs: 'model')
    path gene_sets, stageAs: 'gene_sets/*'   // a GMT file, or [] (all genes as one set)

    output:
    tuple val(meta), path('perturb'),                        emit: perturb
    tuple val("${task.process}"), eval('nofone --version'), emit: versions, topic: versions

    script:
    def args = task.ext.args ?: ''
    def gene_sets_arg = gene_sets ? "--gene-sets ${gene_sets}" : ''
    """
    nofone --threads ${task.cpus} perturb --model ${model} --input ${data} --outdir perturb ${gene_sets_arg} ${args}
    """

    stub:
    """
    mkdir -p perturb
    touch perturb/genes.tsv perturb/sets.tsv perturb/core.tsv perturb/perturb_report.json
    """
}
