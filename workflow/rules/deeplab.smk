# DeepLab v2 on the downstream split: trained on the semantic pseudo labels and, as the fully
# supervised upper bound, on the ground truth (the same command, another --labels); ensemble (+ CRF)
# inference per validation shard; val mIoU per label source.
# Included by the Snakefile when deeplab.enabled and dataset.downstream_split are set.

DEEPLAB_PROCESSES = RUN.deeplab.train.processes
# without ground truth (evaluation.ground_truth false) no upper bound and no evaluation
DEEPLAB_LABEL_SOURCES = ("pseudo", "ground_truth") if RUN.evaluation.ground_truth else ("pseudo",)
# the semantic pseudo-label shards holding downstream ids
DEEPLAB_PSEUDO_LABELS = [
    W.path("semantic", f"shard-{index:05d}.h5") for index in range(len(W.plan)) if W.plan.ids(index, "downstream")
]
DEEPLAB_SHARDS = [Path(path).name for path in W.shard_files("deeplab")]


for _labels in DEEPLAB_LABEL_SOURCES:

    rule:
        name:
            f"train_deeplab_{_labels}"
        input:
            data=W.training_inputs("downstream", ("image",) if _labels == "pseudo" else ("image", "ground_truth")),
            semantic=DEEPLAB_PSEUDO_LABELS if _labels == "pseudo" else [],
            # order only (compute.ground_truth_twins_with_pseudo): the upper bound waits for the pseudo labels
            # to run beside its twin; ancient(): their timestamps never make it re-run
            after=[ancient(path) for path in DEEPLAB_PSEUDO_LABELS]
            if _labels == "ground_truth" and RUN.compute.ground_truth_twins_with_pseudo
            else [],
        output:
            W.path("models", f"deeplab_{_labels}.pt"),
        params:
            stage=W.stage("train_deeplab"),
            labels=_labels,  # shell commands are evaluated at run time: take loop values through params
            semantic=lambda wildcards, input: f"--semantic {input.semantic}" if input.semantic else "",
        threads: W.threads(f"train_deeplab_{_labels}")
        # both trainings before either inference: on two cores beside Mask R-CNN, an inference started between
        # them left one core idle at the end (the cats/dogs/people run: 12:41-12:44 on one core)
        priority: 1
        resources:
            **W.resources(f"train_deeplab_{_labels}", kind="train_cam", **W.training_resources(DEEPLAB_PROCESSES)),
        log:
            W.path("logs", f"train_deeplab_{_labels}.log"),
        benchmark:
            W.path("benchmarks", f"train_deeplab_{_labels}.tsv")
        shell:
            W.irn("train-deeplab", processes=DEEPLAB_PROCESSES)
            + " --labels {params.labels} {params.semantic} --out {output} > {log} 2>&1"

    if RUN.dataset.val_split is not None:  # predictions and evaluation need val ids

        rule:
            name:
                f"deeplab_infer_{_labels}"
            input:
                data=W.shard_inputs("deeplab"),
                checkpoint=W.path("models", f"deeplab_{_labels}.pt"),
            output:
                W.path(f"deeplab_{_labels}", "shard-{shard}.h5"),
            params:
                stage=W.stage("deeplab_infer"),
            group:
                "deeplab_shards"
            threads: W.threads(f"deeplab_infer_{_labels}")
            resources:
                **W.resources(f"deeplab_infer_{_labels}", kind="make_cam", **W.inference_resources()),
            log:
                W.path("logs", f"deeplab_infer_{_labels}", "{shard}.log"),
            benchmark:
                W.path("benchmarks", f"deeplab_infer_{_labels}", "{shard}.tsv")
            shell:
                W.irn("deeplab-infer")
                + " --shard {wildcards.shard} --checkpoint {input.checkpoint} --out {output} > {log} 2>&1"

    if RUN.dataset.val_split is not None and RUN.evaluation.ground_truth:

        rule:
            name:
                f"evaluate_deeplab_{_labels}"
            input:
                data=W.evaluation_inputs("val"),
                shards=[W.path(f"deeplab_{_labels}", name) for name in DEEPLAB_SHARDS],
            output:
                table=W.path("evaluation", f"deeplab_{_labels}.csv"),
                markdown=W.path("evaluation", f"deeplab_{_labels}.md"),
                metrics=W.path("evaluation", f"deeplab_{_labels}.json"),
            params:
                stage=W.stage("evaluate_deeplab"),
                prefix=W.path("evaluation", f"deeplab_{_labels}"),
            threads: 1
            resources:
                **W.resources(f"evaluate_deeplab_{_labels}", kind="evaluate"),
            log:
                W.path("logs", f"evaluate_deeplab_{_labels}.log"),
            benchmark:
                W.path("benchmarks", f"evaluate_deeplab_{_labels}.tsv")
            shell:
                W.irn("evaluate-deeplab") + " --inputs {input.shards} --out-prefix {params.prefix} > {log} 2>&1"
