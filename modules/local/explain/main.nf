// Which regulators explain each tested sample's DE profile (`nofone explain`, DEcode): a head
// on the frozen trunk of a regulator model (`nofone regulators train`, given with --regulators)
// fitted to GATHER's log2 fold changes, per regulator its attribution, direction and q-value,
// and in-silico knockouts. Runs only with --regulators.
process NOFONE_EXPLAIN {
    tag "${meta.id}"
    label 'process_medium'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    tuple val(meta),  path(cohort, stageAs: 'cohort')            // GATHER: de.parquet, summary.tsv, ...
    tuple val(meta2), path(regulators, stageAs: 'regulators')    // the regulator model folder

    output:
    tuple val(meta), path('explain'),                        emit: explain
    tuple val("${task.process}"), eval('nofone --version'), emit: versions, topic: versions

    script:
    def args = task.ext.args ?: ''
    """
    nofone --threads ${task.cpus} explain --regulators ${regulators} --de ${cohort} --outdir explain ${args}
    """

    stub:
    """
    mkdir -p explain/regulators explain/knockouts
    touch explain/summary.tsv explain/cohort.tsv explain/regulators.parquet explain/explain_report.json
    """
}
