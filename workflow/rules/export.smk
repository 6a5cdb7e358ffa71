# Exports, on request (`snakemake ... export`, or one of the files below):
#   export/coco/instances_{infer,downstream}.json   instance pseudo labels as COCO instances JSON
#   export/coco/maskrcnn_val.json                   Mask R-CNN's val predictions (COCO JSON with scores)
#   export/png/{semantic,instances,maskrcnn}/       SegmentationClass / SegmentationObject PNGs
#   export/coco_dataset/                            the dataset's images + ground truth, COCO format


def _export_targets():
    roles = ["infer"] + (["downstream"] if RUN.dataset.downstream_split else [])
    targets = [W.path("export", "coco", f"instances_{role}.json") for role in roles]
    targets += [W.path("export", "png", product) for product in ("semantic", "instances")]
    if RUN.dataset.downstream_split and RUN.dataset.val_split and RUN.maskrcnn.enabled:
        targets += [W.path("export", "coco", "maskrcnn_val.json"), W.path("export", "png", "maskrcnn")]
    return targets


rule export:
    input:
        _export_targets(),


rule export_instances_coco:
    input:
        W.shard_files("instances"),
    output:
        W.path("export", "coco", "instances_{role}.json"),
    wildcard_constraints:
        role="infer|downstream",
    log:
        W.path("logs", "export", "instances_{role}.log"),
    shell:
        W.irn("export") + " --what coco --role {wildcards.role} --inputs {input} --out {output} > {log} 2>&1"


rule export_maskrcnn_coco:
    input:
        W.shard_files("maskrcnn"),
    output:
        W.path("export", "coco", "maskrcnn_val.json"),
    log:
        W.path("logs", "export", "maskrcnn_val.log"),
    shell:
        W.irn("export") + " --what coco --inputs {input} --out {output} > {log} 2>&1"


rule export_png:
    input:
        lambda wildcards: W.shard_files(wildcards.product),
    output:
        directory(W.path("export", "png", "{product}")),
    wildcard_constraints:
        product="semantic|instances|maskrcnn",
    log:
        W.path("logs", "export", "png_{product}.log"),
    shell:
        W.irn("export") + " --what png --inputs {input} --out {output} > {log} 2>&1"


rule export_coco_dataset:
    input:
        data=DATA_SOURCES,
    output:
        directory(W.path("export", "coco_dataset")),
    log:
        W.path("logs", "export", "coco_dataset.log"),
    shell:
        W.irn("export") + " --what coco --ground-truth --out {output} > {log} 2>&1"
