# Confident-region ("inter-pixel relation") labels: CAM thresholds + dense CRF, per shard.

rule ir_labels:
    input:
        data=DATA_ROOT,
        cams=W.path("cam", "shard-{shard}.h5"),
    output:
        W.path("ir_labels", "shard-{shard}.h5"),
    params:
        stage=W.stage("ir_labels"),
    threads: 1
    log:
        W.path("logs", "ir_labels", "{shard}.log"),
    benchmark:
        W.path("benchmarks", "ir_labels", "{shard}.tsv")
    shell:
        W.irn("ir-labels") + " --shard {wildcards.shard} --cams {input.cams} --out {output} > {log} 2>&1"
