// One self-contained HTML report (`nofone report`): model, training, latent space, NLL, DE
// calls and volcanoes from the pipeline's folders; EVALUATE's tables and the cohort DE section
// when those ran ([] otherwise).
process NOFONE_REPORT {
    tag 'cohort'
    label 'process_single'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    path data,       stageAs: 'dataset'
    path model,      stageAs: 'model'
    path cohort,     stageAs: 'cohort'       // GATHER: representations.parquet, de.parquet, summary.tsv
    path evaluation, stageAs: 'evaluation'   // EVALUATE's folder, or []
    path cohort_de,  stageAs: 'cohort_de'    // COHORT_DE's folder (--cohort_group), or []

    output:
    path 'report',       emit: report
    path 'versions.yml', emit: versions

    script:
    def args = task.ext.args ?: ''
    def evaluation_arg = evaluation ? "--evaluation ${evaluation}" : ''
    def cohort_de_arg = cohort_de ? "--cohort-de ${cohort_de}" : ''
    """
    nofone --threads ${task.cpus} report --data ${data} --model ${model} --representations ${cohort} --de ${cohort} --outdir report ${evaluation_arg} ${cohort_de_arg} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        nofone: \$(nofone --version | sed 's/^nofone //')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p report/tables
    touch report/report.html report/report_summary.json

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        nofone: \$(nofone --version | sed 's/^nofone //')
    END_VERSIONS
    """
}
