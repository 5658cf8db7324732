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
    log.info(paramsSummaryLog(workflow))
    checkPlatform()

    ch_samplesheet = channel.empty()
    if (params.input) {
        // Every row: a safe, unique sample id and a count file that exists (errors name the row)
        samplesheetToList(params.input, "${projectDir}/assets/schema_input.json")
        ch_samplesheet = channel.of([[id: 'cohort'], file(params.input, checkIfExists: true)])
    }
    else if (params.simulate) {
        NOFONE_SIMULATE([id: 'simulated'])
        ch_samplesheet = NOFONE_SIMULATE.out.simulated.map { meta, folder -> [meta, folder.resolve('samplesheet.csv')] }
    }
    else {
        error("Give a sample sheet with --input samplesheet.csv (or use --simulate, or -profile test, for simulated data)")
    }

    NOFONE(ch_samplesheet)

    // pipeline_info/software_versions.yml: every process sends [process, `nofone --version`] to
    // the topic 'versions'; the tasks of a process report the same, so each process appears once,
    // with the workflow's own versions
    channel.topic('versions')
        .unique()
        .map { process, version -> versionEntry(process, version) }
        .mix(channel.of("Workflow:\n    nofone: ${workflow.manifest.version}\n    Nextflow: ${nextflow.version}"))
        .collectFile(name: 'software_versions.yml', storeDir: "${params.outdir}/pipeline_info", sort: true, newLine: true)
}

// One entry of software_versions.yml, `"NOFONE:NOFONE_DE":\n    nofone: 0.1.0`, from the process
// name and what `nofone --version` printed ("nofone 0.1.0")
def versionEntry(process, version) {
    def words = version.trim().tokenize(' ')
    return "\"${process}\":\n    ${words[0]}: ${words[1]}"
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
    if (params.de_test == 'density' && params.de_null in ['outlier', 'local', 'model-error']) {
        error("--de_null ${params.de_null} needs --de_test equal-tail-midp; use --de_null auto or nb with the density rule")
    }
    // GEMDiff's analyses: PERTURB and AUGMENT use a diffusion model (a --model of another type is
    // refused by the step itself, naming the folder); SCREEN screens the sets of a GMT
    if ((params.perturb || params.augment) && !params.model && params.model_type != 'diffusion') {
        error("--perturb and --augment need a diffusion model: add --model_type diffusion (or give a diffusion --model)")
    }
    if (params.screen && !params.gene_sets) {
        error("--screen needs --gene_sets (a GMT file of the gene sets to screen)")
    }
    // The container profiles (nextflow.config) bind-mount the checkpoint folder: it must exist
    // before the first container starts, or Docker creates it owned by root
    if (params.checkpoint_dir) {
        file(params.checkpoint_dir).mkdirs()
    }
}
