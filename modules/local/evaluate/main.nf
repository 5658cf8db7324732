// The model against DESeq2 on the user's data (`nofone evaluate`): false calls in held-out
// normals, planted spike-ins, enrichment of --gene_sets among the cases' calls, tissue
// assignment and the AUROC of the NLL scores. Its inputs are the pipeline's folders (no run
// folder): FILTER's data, TRAIN's model (its training samples are DESeq2's controls) and GATHER's
// cohort/ (representations and DE). Options through ext.args (--no-deseq2 with --skip_deseq2).
process NOFONE_EVALUATE {
    tag "${meta.id}"
    label 'process_medium'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    tuple val(meta),  path(data, stageAs: 'dataset')
    tuple val(meta2), path(model, stageAs: 'model')
    tuple val(meta3), path(cohort, stageAs: 'cohort')   // GATHER: representations.parquet, de.parquet, ...
    path gene_sets, stageAs: 'gene_sets/*'             // a GMT file or gene list, or []

    output:
    tuple val(meta), path('evaluation'),                     emit: evaluation
    tuple val("${task.process}"), eval('nofone --version'), emit: versions, topic: versions

    script:
    def args = task.ext.args ?: ''
    def gene_sets_arg = gene_sets ? "--gene-set ${gene_sets}" : ''
    """
    nofone --threads ${task.cpus} evaluate --data ${data} --model ${model} --representations ${cohort} --de ${cohort} --outdir evaluation ${gene_sets_arg} ${args}
    """

    stub:
    """
    mkdir -p evaluation
    touch evaluation/evaluation.json evaluation/negative_control_summary.tsv evaluation/spike_ins_summary.tsv evaluation/nll_auroc.tsv
    """
}
