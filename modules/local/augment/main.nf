// Synthetic samples from a diffusion model (--augment): counts per class (the model's tissues, or
// normal and tumour), written as a nofone count dataset. Their quality against held-out real
// samples: `nofone augment --real-test` (docs/diffusion.md).
process NOFONE_AUGMENT {
    tag "${meta.id}"
    label 'process_gpu'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    tuple val(meta), path(model, stageAs: 'model')

    output:
    tuple val(meta), path('synthetic'),                      emit: synthetic
    tuple val("${task.process}"), eval('nofone --version'), emit: versions, topic: versions

    script:
    def args = task.ext.args ?: ''
    """
    nofone --threads ${task.cpus} augment --model ${model} --outdir synthetic ${args}
    """

    stub:
    """
    mkdir -p synthetic
    touch synthetic/counts.parquet synthetic/genes.parquet synthetic/samples.parquet synthetic/augment_report.json
    """
}
