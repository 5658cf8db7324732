/*
 * NOFONE: N-of-one differential expression against a model of normal tissue.
 *
 *   sample sheet -> SAMPLESHEET_STAGE -> INGEST -> FILTER -> TRAIN  (or --model: INGEST only)
 *                -> CHUNK -> REPRESENT (one task per chunk) -> DE (one task per chunk) -> GATHER
 *
 * Samples tested are all samples the model did not train on: the cases, plus the normals held
 * out from training (a negative control), as in `nofone run`.
 *
 * With --cohort_group, independently of the above: INGEST -> COHORT_DE, an NB-VAE on every
 * sample and generative log2 fold changes between two groups (`nofone cohort-de`).
 */

include { SAMPLESHEET_STAGE } from '../subworkflows/local/samplesheet/main'
include { NOFONE_INGEST     } from '../modules/local/ingest/main'
include { NOFONE_FILTER     } from '../modules/local/filter/main'
include { NOFONE_TRAIN      } from '../modules/local/train/main'
include { NOFONE_CHUNK      } from '../modules/local/chunk/main'
include { NOFONE_REPRESENT  } from '../modules/local/represent/main'
include { NOFONE_DE         } from '../modules/local/de/main'
include { NOFONE_GATHER     } from '../modules/local/gather/main'
include { NOFONE_COHORT_DE  } from '../modules/local/cohort_de/main'

workflow NOFONE {
    take:
    samplesheet    // channel: one sample sheet file

    main:
    ch_versions = Channel.empty()

    // Optional files: [] when absent (the modules test for it)
    annotation  = params.annotation ? file(params.annotation, checkIfExists: true) : []
    model_genes = params.model ? file("${params.model}/genes.tsv", checkIfExists: true) : []
    config_json = params.train_config_json ? file(params.train_config_json, checkIfExists: true) : []
    gene_sets   = params.gene_sets ? file(params.gene_sets, checkIfExists: true) : []
    symbol_map  = params.symbol_map ? file(params.symbol_map, checkIfExists: true) : []

    SAMPLESHEET_STAGE(samplesheet)

    NOFONE_INGEST(SAMPLESHEET_STAGE.out.samplesheet, SAMPLESHEET_STAGE.out.counts, model_genes, annotation)
    ch_versions = ch_versions.mix(NOFONE_INGEST.out.versions)

    // Cohort DE: every ingested sample (normals, held-out normals, cases), its own NB-VAE; needs
    // neither the gene filter nor the DGD, so it runs beside them
    ch_cohort_de = Channel.empty()
    if (params.cohort_group) {
        NOFONE_COHORT_DE(NOFONE_INGEST.out.data, gene_sets, symbol_map)
        ch_cohort_de = NOFONE_COHORT_DE.out.results
        ch_versions  = ch_versions.mix(NOFONE_COHORT_DE.out.versions)
    }

    ch_data  = Channel.empty()
    ch_model = Channel.empty()
    if (params.model) {
        // An existing model folder (from `nofone train` or `nofone import-bulkdgd`): the data
        // were ingested against its genes; no filter, no training.
        ch_data  = NOFONE_INGEST.out.data.first()
        ch_model = Channel.value(file(params.model, checkIfExists: true))
    }
    else {
        NOFONE_FILTER(NOFONE_INGEST.out.data, SAMPLESHEET_STAGE.out.groups, annotation)
        NOFONE_TRAIN(NOFONE_FILTER.out.data, config_json)
        ch_versions = ch_versions.mix(NOFONE_FILTER.out.versions, NOFONE_TRAIN.out.versions)
        ch_data  = NOFONE_FILTER.out.data.first()
        ch_model = NOFONE_TRAIN.out.model.first()
    }

    // Scatter: one REPRESENT and one DE task per chunk of samples
    NOFONE_CHUNK(ch_data, ch_model)
    ch_chunks = NOFONE_CHUNK.out.chunks
        .flatten()
        .map { chunk -> [[id: chunk.baseName], chunk] }

    NOFONE_REPRESENT(ch_chunks, ch_model, ch_data)
    NOFONE_DE(NOFONE_REPRESENT.out.representations, ch_model, ch_data)

    // Gather: every chunk's reps_* and de_* folder, sorted by name so chunks merge in order
    ch_parts = NOFONE_REPRESENT.out.representations
        .mix(NOFONE_DE.out.de)
        .map { meta, folder -> folder }
        .toSortedList { a, b -> a.name <=> b.name }
    NOFONE_GATHER(ch_parts)

    ch_versions = ch_versions.mix(
        NOFONE_CHUNK.out.versions,
        NOFONE_REPRESENT.out.versions,
        NOFONE_DE.out.versions,
        NOFONE_GATHER.out.versions
    )

    emit:
    cohort    = NOFONE_GATHER.out.cohort  // representations.parquet, de.parquet, summary.tsv, samples/
    model     = ch_model
    cohort_de = ch_cohort_de              // cohort_de.tsv, cohort_de_report.json, latent.*, model/ (--cohort_group)
    versions  = ch_versions               // every task's versions.yml
}
