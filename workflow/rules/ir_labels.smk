# Confident-region ("inter-pixel relation") labels: CAM thresholds + dense CRF, per shard.

rule ir_labels:
    input:
        data=W.shard_inputs("ir_labels"),
        cams=W.path("cam", "shard-{shard}.h5"),
    output:
        W.path("ir_labels", "shard-{shard}.h5"),
    params:
        stage=W.stage("ir_labels"),
    group:
        "ir_label_shards"
    threads: W.threads("ir_labels", 1)
    resources:
        **W.resources("ir_labels"),
    log:
        W.path("logs", "ir_labels", "{shard}.log"),
    benchmark:
        W.path("benchmarks", "ir_labels", "{shard}.tsv")
    shell:
        W.irn("ir-labels") + " --shard {wildcards.shard} --cams {input.cams} --out {output} > {log} 2>&1"
