# The HTML report (results/<name>/report/index.html, its PNGs beside it): sampled images with the
# panels of every product, the metrics of every stage, per-class charts, precision-recall curves,
# and time and memory per rule from the benchmark files. Included last: it waits for every
# evaluation file that any rule writes (downstream models' too), so it is the run's last job.


def _evaluation_outputs(wildcards):
    """The metric files (evaluation/*.json, no wildcards) of every other rule of the workflow."""
    evaluation_dir = W.path("evaluation")
    found = []
    for other in workflow.rules:
        if other.name in ("report", "all"):
            continue
        for path in map(str, other.output):
            if path.startswith(evaluation_dir) and path.endswith(".json") and "{" not in path:
                found.append(path)
    return sorted(set(found))


rule report:
    input:
        data=DATA_SOURCES,
        summary=W.path("evaluation", "summary.md"),
        metrics=_evaluation_outputs,
        shards=[path for product in ("cam", "irnet", "semantic", "instances") for path in W.shard_files(product)],
    output:
        directory(W.path("report")),
    params:
        stage=W.stage("report"),
    threads: 1
    log:
        W.path("logs", "report.log"),
    benchmark:
        W.path("benchmarks", "report.tsv")
    shell:
        W.irn("report") + " --out {output} > {log} 2>&1"
