// Sample-sheet staging: what INGEST needs to read every count file as a local path.
//
// Rows may name local paths or remote ones (s3://, https://), several rows may share one matrix
// file, and different files may have the same name (every STAR output is ReadsPerGene.out.tab).
// So staging works on distinct files, not rows:
//   1. each row's `counts` becomes a Path: absolute paths and URLs as written; a relative path
//      against the launch directory (the nf-core convention, and what nf-schema checked) or,
//      failing that, against the sheet's own folder (where `nofone simulate` points its paths);
//   2. distinct files are numbered 1..n in order of first appearance, so the numbering depends
//      only on the sheet's content;
//   3. INGEST stages that list with stageAs 'inputs/*' + '/*', which Nextflow expands to
//      inputs/<n>/<file name> with n the position in the list (remote files are downloaded on
//      the way); file names are kept because the readers recognise some formats by them;
//   4. the sheet is rewritten with counts = inputs/<n>/<file name> and every other column
//      verbatim (extra metadata columns reach samples.parquet), and written with collectFile,
//      whose output is cached across -resume, so the INGEST task hash is stable.
// The CLI resolves a relative counts path against the sheet's folder: the INGEST task folder.
// tests/test_nextflow_contract.py runs this workflow (tests/nextflow/nfflow.py) and INGEST on
// its output.

workflow SAMPLESHEET_STAGE {
    take:
    samplesheet    // channel: [meta, sample sheet (CSV, or TSV when named *.tsv)]

    main:
    ch_staged = samplesheet.map { meta, sheet -> [meta, stageSampleSheet(sheet)] }
    // One rewritten sheet per meta.id, joined back to its meta and count files
    ch_written = ch_staged
        .collectFile { meta, staged -> ["${meta.id}.csv", staged.csv] }
        .map { sheet -> [sheet.baseName, sheet] }
    ch_ingest = ch_staged
        .map { meta, staged -> [meta.id, meta, staged.files] }
        .join(ch_written)
        .map { id, meta, files, sheet -> [meta, sheet, files] }
    ch_groups = ch_staged.map { meta, staged -> [meta, filterGroups(params.filter_group, staged.columns)] }

    emit:
    ingest = ch_ingest   // [meta, rewritten sheet (counts -> inputs/<n>/<file name>), the distinct count files in the order of their numbers]
    groups = ch_groups   // [meta, the --filter_group columns present in the sheet, comma-separated]
}

def stageSampleSheet(sheet) {
    def sep = sheet.name.toLowerCase().endsWith('.tsv') ? '\t' : ','
    def rows = sheet.splitCsv(header: true, sep: sep, quote: '"', strip: true)
    if (!rows) {
        error("Sample sheet ${sheet} has a header but no samples")
    }
    def columns = rows[0].keySet().toList()
    def numbers = [:]
    def files = []
    def lines = [columns.collect { column -> csvField(column) }.join(',')]
    rows.each { row ->
        def path = resolveCountsPath(row.counts, sheet, row.sample)
        def key = path.toUriString()
        if (!numbers.containsKey(key)) {
            files << path
            numbers[key] = files.size()
        }
        def staged = "inputs/${numbers[key]}/${path.name}"
        lines << columns.collect { column -> csvField(column == 'counts' ? staged : (row[column] ?: '')) }.join(',')
    }
    if (!params.model && !rows.any { row -> row.condition == params.normal_value }) {
        error("Sample sheet ${sheet}: no sample has condition '${params.normal_value}', so there is nothing to train on. Mark the normal samples in the 'condition' column, set --normal_value, or give a trained model with --model")
    }
    return [csv: lines.join('\n') + '\n', files: files, columns: columns]
}

def resolveCountsPath(value, sheet, sample) {
    if (!value) {
        error("Sample sheet ${sheet}: empty 'counts' for sample ${sample}")
    }
    if (value.startsWith('/') || value =~ '^[A-Za-z][A-Za-z0-9+.-]*:') {
        return file(value, checkIfExists: true)
    }
    def fromLaunchDir = workflow.launchDir.resolve(value)
    if (fromLaunchDir.exists()) {
        return fromLaunchDir
    }
    def fromSheetDir = sheet.parent.resolve(value)
    if (fromSheetDir.exists()) {
        return fromSheetDir
    }
    error("Sample sheet ${sheet}: count file '${value}' of sample ${sample} not found (looked in ${workflow.launchDir} and ${sheet.parent})")
}

def csvField(value) {
    def text = value == null ? '' : value.toString()
    if (text.contains(',') || text.contains('"') || text.contains('\n')) {
        return '"' + text.replace('"', '""') + '"'
    }
    return text
}

def filterGroups(groups, columns) {
    def wanted = (groups ?: '').tokenize(',').collect { group -> group.trim() }.findAll { group -> group }
    def present = wanted.findAll { group -> group in columns }
    if (present.size() < wanted.size()) {
        log.warn("filterByExpr groups: column(s) ${wanted - present} not in the sample sheet; grouping by ${present ?: 'nothing'}")
    }
    return present.join(',')
}
