# Mask R-CNN trained on the instance pseudo labels of the downstream split (or on its ground truth:
# maskrcnn.train.labels), predictions per shard on the val ids, mask AP (mAP^r and COCO) on val.

MASKRCNN_PROCESSES = RUN.maskrcnn.train.processes
# the pseudo-label shards holding downstream ids (none when training on the ground truth)
MASKRCNN_LABELS = [
    W.path("instances", f"shard-{index:05d}.h5")
    for index in range(len(W.plan))
    if W.plan.ids(index, "downstream") and RUN.maskrcnn.train.labels == "pseudo"
]


rule train_maskrcnn:
    input:
        data=W.training_inputs("downstream", ("image",) if RUN.maskrcnn.train.labels == "pseudo" else ("image", "ground_truth")),
        instances=MASKRCNN_LABELS,
    output:
        W.path("models", "maskrcnn.pt"),
    params:
        stage=W.stage("train_maskrcnn"),
        instances=lambda wildcards, input: f"--instances {' '.join(input.instances)}" if input.instances else "",
    threads: W.threads("train_maskrcnn")
    # the longest downstream job starts first when the pseudo labels are done, the DeepLab trainings beside it
    # (priority 1) and their inferences (0) after both trainings
    priority: 2
    resources:
        **W.resources("train_maskrcnn", kind="train_cam", **W.training_resources(MASKRCNN_PROCESSES)),
    log:
        W.path("logs", "train_maskrcnn.log"),
    benchmark:
        W.path("benchmarks", "train_maskrcnn.tsv")
    shell:
        W.irn("train-maskrcnn", processes=MASKRCNN_PROCESSES) + " {params.instances} --out {output} > {log} 2>&1"


if RUN.dataset.val_split is not None:  # predictions and evaluation need val ids

    rule maskrcnn_infer:
        input:
            data=W.shard_inputs("maskrcnn"),
            checkpoint=W.path("models", "maskrcnn.pt"),
        output:
            W.path("maskrcnn", "shard-{shard}.h5"),
        params:
            stage=W.stage("maskrcnn_infer"),
        group:
            "maskrcnn_shards"
        threads: W.threads("maskrcnn_infer")
        resources:
            **W.resources("maskrcnn_infer", kind="make_cam", **W.inference_resources()),
        log:
            W.path("logs", "maskrcnn_infer", "{shard}.log"),
        benchmark:
            W.path("benchmarks", "maskrcnn_infer", "{shard}.tsv")
        shell:
            W.irn("maskrcnn-infer") + " --shard {wildcards.shard} --checkpoint {input.checkpoint} --out {output} > {log} 2>&1"


if RUN.dataset.val_split is not None and RUN.evaluation.ground_truth:

    rule evaluate_maskrcnn:
        input:
            data=W.evaluation_inputs("val"),
            shards=W.shard_files("maskrcnn"),
        output:
            table=W.path("evaluation", "maskrcnn.csv"),
            markdown=W.path("evaluation", "maskrcnn.md"),
            metrics=W.path("evaluation", "maskrcnn.json"),
        params:
            stage=W.stage("evaluate"),
            prefix=W.path("evaluation", "maskrcnn"),
        threads: 1
        resources:
            **W.resources("evaluate_maskrcnn", kind="evaluate"),
        log:
            W.path("logs", "evaluate_maskrcnn.log"),
        benchmark:
            W.path("benchmarks", "evaluate_maskrcnn.tsv")
        shell:
            W.irn("evaluate-maskrcnn") + " --inputs {input.shards} --out-prefix {params.prefix} > {log} 2>&1"
