// One self-contained HTML report (`nofone report`): model, training, latent space, NLL, DE
// calls and volcanoes from the pipeline's folders; EVALUATE's tables, the regulators section
// (EXPLAIN), the cohort DE section and the gene sets called per sample (PATHWAYS) when those ran
// ([[:], []] otherwise).
process NOFONE_REPORT {
    tag "${meta.id}"
    label 'process_single'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    tuple val(meta),  path(data, stageAs: 'dataset')
    tuple val(meta2), path(model, stageAs: 'model')
    tuple val(meta3), path(cohort, stageAs: 'cohort')           // GATHER: representations.parquet, de.parquet, summary.tsv
    tuple val(meta4), path(evaluation, stageAs: 'evaluation')   // EVALUATE's folder, or [[:], []]
    tuple val(meta5), path(cohort_de, stageAs: 'cohort_de')     // COHORT_DE's folder (--cohort_group), or [[:], []]
    tuple val(meta6), path(explain, stageAs: 'explain')         // EXPLAIN's folder (--regulators), or [[:], []]
    tuple val(meta7), path(pathways, stageAs: 'pathways')       // PATHWAYS' folder (--gene_sets), or [[:], []]

    output:
    tuple val(meta), path('report'),                         emit: report
    tuple val("${task.process}"), eval('nofone --version'), emit: versions, topic: versions

    script:
    def args = task.ext.args ?: ''
    def evaluation_arg = evaluation ? "--evaluation ${evaluation}" : ''
    def cohort_de_arg = cohort_de ? "--cohort-de ${cohort_de}" : ''
    def explain_arg = explain ? "--explain ${explain}" : ''
    def pathways_arg = pathways ? "--pathways ${pathways}" : ''
    def sections = [evaluation_arg, cohort_de_arg, explain_arg, pathways_arg].findAll().join(' ')
    """
    nofone --threads ${task.cpus} report --data ${data} --model ${model} --representations ${cohort} --de ${cohort} --outdir report ${sections} ${args}
    """

    stub:
    """
    mkdir -p report/tables
    touch report/report.html report/report_summary.json
    """
}
