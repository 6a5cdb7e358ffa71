# CAM network: training (one job, optionally DDP) and multi-scale + flip inference per shard.

CAM_PROCESSES = RUN.cam.train.processes

if RUN.cam.import_dir is None:

    rule train_cam:
        input:
            data=W.training_inputs("train"),
        output:
            W.path("models", "cam.pt"),
        params:
            stage=W.stage("train_cam"),
        threads: W.threads("train_cam")
        resources:
            **W.resources("train_cam", **W.training_resources(CAM_PROCESSES)),
        log:
            W.path("logs", "train_cam.log"),
        benchmark:
            W.path("benchmarks", "train_cam.tsv")
        shell:
            W.irn("train-cam", processes=CAM_PROCESSES) + " --out {output} > {log} 2>&1"

    rule make_cam:
        input:
            data=W.shard_inputs("cam"),
            checkpoint=W.path("models", "cam.pt"),
        output:
            W.path("cam", "shard-{shard}.h5"),
        params:
            stage=W.stage("make_cam"),
        group:
            "cam_shards"
        threads: W.threads("make_cam")
        resources:
            **W.resources("make_cam", **W.inference_resources()),
        log:
            W.path("logs", "make_cam", "{shard}.log"),
        benchmark:
            W.path("benchmarks", "make_cam", "{shard}.tsv")
        shell:
            W.irn("make-cam") + " --shard {wildcards.shard} --checkpoint {input.checkpoint} --out {output} > {log} 2>&1"

else:

    rule import_cams:
        input:
            data=W.shard_inputs("cam", reads=("image",)),
            npy=str(RUN.cam.import_dir),
        output:
            W.path("cam", "shard-{shard}.h5"),
        params:
            stage=W.stage("make_cam"),
        group:
            "cam_shards"
        threads: 1
        resources:
            **W.resources("import_cams"),
        log:
            W.path("logs", "import_cams", "{shard}.log"),
        shell:
            W.irn("import-cams") + " --shard {wildcards.shard} --npy-dir {input.npy} --out {output} > {log} 2>&1"


rule export_reference_cams:
    """On request (`snakemake export_reference_cams`): our CAMs as the reference code's <id>.npy dicts."""
    input:
        W.shard_files("cam"),
    output:
        directory(W.path("reference_cams")),
    threads: 1
    resources:
        **W.resources("export_reference_cams"),
    log:
        W.path("logs", "export_reference_cams.log"),
    shell:
        W.irn("export-cams") + " --cams {input} --out-dir {output} > {log} 2>&1"
