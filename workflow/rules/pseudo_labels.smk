# Semantic and instance pseudo labels (one random walk per image serves both), per shard.

rule pseudo_labels:
    input:
        cams=W.path("cam", "shard-{shard}.h5"),
        irnet=W.path("irnet", "shard-{shard}.h5"),
    output:
        semantic=W.path("semantic", "shard-{shard}.h5"),
        instances=W.path("instances", "shard-{shard}.h5"),
    params:
        stage=W.stage("pseudo_labels"),
    group:
        "pseudo_label_shards"
    threads: W.threads("pseudo_labels", 1)  # 256 small sparse products per image: one thread per shard
    resources:
        **W.resources("pseudo_labels", **W.inference_resources()),
    log:
        W.path("logs", "pseudo_labels", "{shard}.log"),
    benchmark:
        W.path("benchmarks", "pseudo_labels", "{shard}.tsv")
    shell:
        W.irn("pseudo-labels")
        + " --shard {wildcards.shard} --cams {input.cams} --irnet {input.irnet}"
        + " --semantic-out {output.semantic} --instances-out {output.instances} > {log} 2>&1"
