# IRNet: training of the boundary and displacement heads, then per-shard inference
# (boundary map, displacement field, radius-5 affinities).

IRN_PROCESSES = RUN.irnet.train.processes
CAM_CHECKPOINT = [W.path("models", "cam.pt")] if RUN.irnet.backbone_init == "cam" else []
# training reads the training images; the displacement-mean pass the images of one role
IRN_TRAIN_INPUTS = sorted({W.training_inputs("train", ("image",)),
                           W.training_inputs(RUN.irnet.train.displacement_mean_ids, ("image",))})


rule train_irnet:
    input:
        data=IRN_TRAIN_INPUTS,
        ir_labels=W.shard_files("ir_labels"),
        cam_checkpoint=CAM_CHECKPOINT,
    output:
        W.path("models", "irnet.pt"),
    params:
        stage=W.stage("train_irn"),
        cam_checkpoint=lambda wildcards, input: f"--cam-checkpoint {input.cam_checkpoint}" if input.cam_checkpoint else "",
    threads: W.threads("train_irnet")
    resources:
        **W.resources("train_irnet", **W.training_resources(IRN_PROCESSES)),
    log:
        W.path("logs", "train_irnet.log"),
    benchmark:
        W.path("benchmarks", "train_irnet.tsv")
    shell:
        W.irn("train-irnet", processes=IRN_PROCESSES)
        + " --ir-labels {input.ir_labels} {params.cam_checkpoint} --out {output} > {log} 2>&1"


rule irnet_infer:
    input:
        data=W.shard_inputs("irnet"),
        checkpoint=W.path("models", "irnet.pt"),
    output:
        W.path("irnet", "shard-{shard}.h5"),
    params:
        stage=W.stage("irn_infer"),
    group:
        "irnet_shards"
    threads: W.threads("irnet_infer")
    resources:
        **W.resources("irnet_infer", **W.inference_resources()),
    log:
        W.path("logs", "irnet_infer", "{shard}.log"),
    benchmark:
        W.path("benchmarks", "irnet_infer", "{shard}.tsv")
    shell:
        W.irn("irnet-infer") + " --shard {wildcards.shard} --checkpoint {input.checkpoint} --out {output} > {log} 2>&1"
