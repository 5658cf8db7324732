// Train a model of normal tissue (--model_type, through ext.args) on the normal samples.
// Checkpoints go to a folder named after the run's session: a retry (same run) and a `-resume`
// (same session id) continue from the newest checkpoint; `--resume` starts fresh when there is
// none. Use a checkpoint_dir every task can see (a shared file system on SLURM); on AWS Batch a
// local path is lost with the job, so a retry starts over.
process NOFONE_TRAIN {
    tag "${meta.id}"
    label 'process_gpu'
    conda "${moduleDir}/../../../containers/environment.yml"
    container "${params.container}"

    input:
    tuple val(meta), path(data, stageAs: 'dataset')
    path config_json, stageAs: 'train_config/*'  // a JSON file of settings, or [] (preset via ext.args)

    output:
    tuple val(meta), path('model'),                          emit: model
    tuple val("${task.process}"), eval('nofone --version'), emit: versions, topic: versions

    script:
    def args = task.ext.args ?: ''
    def config_arg = config_json ? "--config ${config_json}" : ''
    """
    nofone --threads ${task.cpus} train --input ${data} --outdir model ${config_arg} --checkpoint-dir ${params.checkpoint_dir}/${workflow.sessionId} --resume ${args}
    """

    stub:
    """
    mkdir -p model
    touch model/config.json model/weights.safetensors model/genes.tsv model/checksums.sha256 model/history.tsv model/training_representations.parquet model/null.safetensors
    """
}
