#!/usr/bin/env nextflow
/*
 * nofone: N-of-one differential expression of bulk RNA-seq without control samples.
 *
 *   nextflow run main.nf -profile test,docker --outdir results
 *   nextflow run main.nf -profile slurm,gpu,singularity --input samplesheet.csv --outdir results
 *
 * See docs/nextflow.md. Parameters: nextflow_schema.json (`--help` lists them).
 */

include { validateParameters; paramsSummaryLog; samplesheetToList } from 'plugin/nf-schema'
include { NOFONE_SIMULATE } from './modules/local/simulate/main'
include { NOFONE          } from './workflows/nofone'

workflow {
    // Parameters against nextflow_schema.json: types, enums, files that must exist, and the
    // sample sheet against assets/schema_input.json
    validateParameters()
    log.info paramsSummaryLog(workflow)
    checkPlatform()

    ch_versions = Channel.empty()
    ch_samplesheet = Channel.empty()
    if (params.input) {
        // Every row: a safe, unique sample id and a count file that exists (errors name the row)
        samplesheetToList(params.input, "${projectDir}/assets/schema_input.json")
        ch_samplesheet = Channel.of(file(params.input, checkIfExists: true))
    }
    else if (params.simulate) {
        NOFONE_SIMULATE()
        ch_samplesheet = NOFONE_SIMULATE.out.simulated.map { folder -> folder.resolve('samplesheet.csv') }
        ch_versions = ch_versions.mix(NOFONE_SIMULATE.out.versions)
    }
    else {
        error("Give a sample sheet with --input samplesheet.csv (or use --simulate, or -profile test, for simulated data)")
    }

    NOFONE(ch_samplesheet)
    ch_versions = ch_versions.mix(NOFONE.out.versions)

    // pipeline_info/software_versions.yml: one entry per process (tasks of a process report the
    // same version, so identical entries are merged), plus the workflow's own versions
    ch_versions
        .map { versions -> versions.text.trim() }
        .unique()
        .mix(Channel.of("Workflow:\n    nofone: ${workflow.manifest.version}\n    Nextflow: ${nextflow.version}"))
        .collectFile(name: 'software_versions.yml', storeDir: "${params.outdir}/pipeline_info", sort: true, newLine: true)
}

// Fail early on set-ups that cannot work, with a message saying what to change
def checkPlatform() {
    def profiles = (workflow.profile ?: '').tokenize(',')
    if ('awsbatch' in profiles) {
        if (!params.awsqueue || !params.awsregion) {
            error("-profile awsbatch needs --awsqueue and --awsregion")
        }
        if (!workflow.workDir.toUriString().startsWith('s3://')) {
            error("-profile awsbatch needs a work directory on S3: -work-dir s3://bucket/work")
        }
    }
    // The density rule is defined for the NB only (nofone de would refuse it after represent)
    if (params.de_test == 'density' && params.de_null in ['outlier', 'model-error']) {
        error("--de_null ${params.de_null} needs --de_test equal-tail-midp; use --de_null auto or nb with the density rule")
    }
    // The container profiles (nextflow.config) bind-mount the checkpoint folder: it must exist
    // before the first container starts, or Docker creates it owned by root
    if (params.checkpoint_dir) {
        file(params.checkpoint_dir).mkdirs()
    }
}
