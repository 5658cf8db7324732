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
 *
 * After GATHER (each step skippable):
 *   DESEQ2    the classical baseline: each case against the normals TRAIN trained on (with
 *             --model: every --normal_value sample); not with --skip_deseq2
 *   EVALUATE  the model against DESeq2 (held-out normals, spike-ins, --gene_sets enrichment,
 *             tissue assignment, NLL AUROC); --no-deseq2 with --skip_deseq2; not with
 *             --skip_evaluate, nor with --model (its training samples are not in the data)
 *   PATHWAYS  per sample, each gene set of --gene_sets against the model's local null
 *             (`nofone pathways`); not without --gene_sets, nor with --skip_pathways
 *   EXPLAIN   the regulators behind each tested sample's profile, against the regulator model
 *             given with --regulators (`nofone regulators train`); only with --regulators
 *   REPORT    the HTML report of the model, the cohort's DE, EVALUATE's tables, EXPLAIN's,
 *             PATHWAYS' and COHORT_DE's sections where they ran; not with --skip_report
 *
 * The diffusion model's analyses, each only when asked (docs/diffusion.md):
 *   PERTURB   (--perturb) the samples not of --normal_value bridged to their closest normals:
 *             the shift per gene and per --gene_sets set; needs a diffusion model
 *   AUGMENT   (--augment) synthetic count samples per class of the diffusion model
 *   SCREEN    (--screen, with --gene_sets) gene-set silhouettes of every ingested sample
 *
 * Channels carry [meta, files] (meta.id: the cohort; for a chunk, the chunk's name, with the
 * cohort's meta in meta.dataset). Every process sends its `nofone --version` to the topic
 * 'versions', which main.nf collects.
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
include { NOFONE_DESEQ2     } from '../modules/local/deseq2/main'
include { NOFONE_EVALUATE   } from '../modules/local/evaluate/main'
include { NOFONE_EXPLAIN    } from '../modules/local/explain/main'
include { NOFONE_PATHWAYS   } from '../modules/local/pathways/main'
include { NOFONE_REPORT     } from '../modules/local/report/main'
include { NOFONE_PERTURB    } from '../modules/local/perturb/main'
include { NOFONE_AUGMENT    } from '../modules/local/augment/main'
include { NOFONE_SCREEN     } from '../modules/local/screen_gene_sets/main'

workflow NOFONE {
    take:
    samplesheet    // channel: [meta, sample sheet file]

    main:
    // Optional files: [] when absent, and [[:], []] for an optional [meta, folder] (the modules
    // test for it)
    annotation  = params.annotation ? params.annotation.tokenize(',').collect { a -> file(a.trim(), checkIfExists: true) } : []
    model_genes = params.model ? file("${params.model}/genes.tsv", checkIfExists: true) : []
    config_json = params.train_config_json ? file(params.train_config_json, checkIfExists: true) : []
    gene_sets   = params.gene_sets ? file(params.gene_sets, checkIfExists: true) : []
    symbol_map  = params.symbol_map ? file(params.symbol_map, checkIfExists: true) : []
    absent      = [[:], []]

    SAMPLESHEET_STAGE(samplesheet)

    NOFONE_INGEST(SAMPLESHEET_STAGE.out.ingest, model_genes, annotation)

    // Cohort DE: every ingested sample (normals, held-out normals, cases), its own NB-VAE; needs
    // neither the gene filter nor the model of normal tissue, so it runs beside them
    ch_cohort_de = channel.empty()
    if (params.cohort_group) {
        NOFONE_COHORT_DE(NOFONE_INGEST.out.data, gene_sets, symbol_map)
        ch_cohort_de = NOFONE_COHORT_DE.out.results
    }

    ch_data  = channel.empty()
    ch_model = channel.empty()
    if (params.model) {
        // An existing model folder (from `nofone train` or `nofone import-bulkdgd`): the data
        // were ingested against its genes; no filter, no training.
        ch_data  = NOFONE_INGEST.out.data.first()
        ch_model = channel.value([[id: file(params.model).name], file(params.model, checkIfExists: true)])
    }
    else {
        NOFONE_FILTER(NOFONE_INGEST.out.data.join(SAMPLESHEET_STAGE.out.groups), annotation)
        NOFONE_TRAIN(NOFONE_FILTER.out.data, config_json)
        ch_data  = NOFONE_FILTER.out.data.first()
        ch_model = NOFONE_TRAIN.out.model.first()
    }

    // Scatter: one REPRESENT and one DE task per chunk of samples (CHUNK emits one file or a
    // list of them)
    NOFONE_CHUNK(ch_data, ch_model)
    ch_chunks = NOFONE_CHUNK.out.chunks
        .flatMap { meta, chunks -> [chunks].flatten().collect { chunk -> [[id: chunk.baseName, dataset: meta], chunk] } }

    NOFONE_REPRESENT(ch_chunks, ch_model, ch_data)
    NOFONE_DE(NOFONE_REPRESENT.out.representations, ch_model, ch_data)

    // Gather: every chunk's reps_* and de_* folder, per cohort, sorted by name so that chunks
    // merge in order
    ch_parts = NOFONE_REPRESENT.out.representations
        .mix(NOFONE_DE.out.de)
        .map { meta, folder -> [meta.dataset, folder] }
        .groupTuple(sort: { a, b -> a.name <=> b.name })
    NOFONE_GATHER(ch_parts)

    // The classical baseline: DESeq2, each case against the normals TRAIN trained on; with
    // --model those are not in the data: every --normal_value sample is a control
    ch_deseq2 = channel.empty()
    if (!params.skip_deseq2) {
        NOFONE_DESEQ2(ch_data, params.model ? absent : ch_model)
        ch_deseq2 = NOFONE_DESEQ2.out.results
    }

    // The model against DESeq2 (which EVALUATE runs itself, with TRAIN's training normals as
    // controls: hence not with --model)
    ch_evaluation = channel.empty()
    report_evaluation = absent  // REPORT's input when EVALUATE does not run
    if (!params.skip_evaluate && !params.model) {
        NOFONE_EVALUATE(ch_data, ch_model, NOFONE_GATHER.out.cohort, gene_sets)
        ch_evaluation     = NOFONE_EVALUATE.out.evaluation
        report_evaluation = NOFONE_EVALUATE.out.evaluation
    }

    // The regulators behind each tested sample's profile (DEcode), against a trained regulator model
    ch_explain = channel.empty()
    report_explain = absent  // REPORT's input when EXPLAIN does not run
    if (params.regulators) {
        ch_regulators = channel.value([[id: file(params.regulators).name], file(params.regulators, checkIfExists: true)])
        NOFONE_EXPLAIN(NOFONE_GATHER.out.cohort, ch_regulators)
        ch_explain     = NOFONE_EXPLAIN.out.explain
        report_explain = NOFONE_EXPLAIN.out.explain
    }

    // Gene sets per sample, against the healthy variation of the model's calibration normals
    ch_pathways = channel.empty()
    report_pathways = absent
    if (params.gene_sets && !params.skip_pathways) {
        NOFONE_PATHWAYS(NOFONE_GATHER.out.cohort, ch_model, gene_sets, symbol_map)
        ch_pathways     = NOFONE_PATHWAYS.out.pathways
        report_pathways = NOFONE_PATHWAYS.out.pathways
    }

    // The HTML report: absent for a step that did not run (an empty channel would hold it back)
    ch_report = channel.empty()
    if (!params.skip_report) {
        NOFONE_REPORT(
            ch_data,
            ch_model,
            NOFONE_GATHER.out.cohort,
            report_evaluation,
            params.cohort_group ? ch_cohort_de : absent,
            report_explain,
            report_pathways
        )
        ch_report = NOFONE_REPORT.out.report
    }

    // The diffusion model's analyses (main.nf refuses --perturb and --augment without a
    // diffusion model to train, and --screen without --gene_sets)
    ch_perturb = channel.empty()
    if (params.perturb) {
        NOFONE_PERTURB(ch_data, ch_model, gene_sets)
        ch_perturb = NOFONE_PERTURB.out.perturb
    }
    ch_synthetic = channel.empty()
    if (params.augment) {
        NOFONE_AUGMENT(ch_model)
        ch_synthetic = NOFONE_AUGMENT.out.synthetic
    }
    ch_screen = channel.empty()
    if (params.screen) {
        NOFONE_SCREEN(NOFONE_INGEST.out.data, channel.value([[id: gene_sets.baseName], gene_sets]))
        ch_screen = NOFONE_SCREEN.out.screen
    }

    emit:
    cohort     = NOFONE_GATHER.out.cohort  // [meta, cohort/]: representations.parquet, de.parquet, summary.tsv, samples/
    model      = ch_model                  // [meta, model/]
    cohort_de  = ch_cohort_de              // [meta, cohort_de/] (--cohort_group)
    deseq2     = ch_deseq2                 // [meta, deseq2/]: deseq2.parquet, summary.tsv, controls.tsv, deseq2_report.json
    evaluation = ch_evaluation             // [meta, evaluation/]: evaluation.json, negative_control*.tsv, spike_ins*.tsv, ...
    explain    = ch_explain                // [meta, explain/]: summary.tsv, cohort.tsv, regulators/, knockouts/ (--regulators)
    pathways   = ch_pathways               // [meta, pathways/]: pathways.parquet, summary.tsv, samples/ (--gene_sets)
    report     = ch_report                 // [meta, report/]: report.html, report_summary.json, tables/
    perturb    = ch_perturb                // [meta, perturb/]: genes.tsv, sets.tsv, core.tsv, perturb_report.json (--perturb)
    synthetic  = ch_synthetic              // [meta, synthetic/]: a count dataset, augment_report.json (--augment)
    screen     = ch_screen                 // [meta, screen/]: screen.tsv, random_sets.tsv, screen.png (--screen)
}
