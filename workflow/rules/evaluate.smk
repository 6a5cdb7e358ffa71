# Evaluation against the ground truth of the inference split: CSV + Markdown tables, and a summary.
# evaluation.ground_truth false (image-level labels only): no evaluation rule; the summary then reads the
# products' shards and the stages' diagnostics (figures that need no ground truth).

EVALUATIONS = {
    "cam": ("evaluate-cam", "cam"),
    "semantic": ("evaluate-semantic", "semantic"),
    "instances": ("evaluate-instances", "instances"),
}


for _name, (_step, _product) in (EVALUATIONS.items() if RUN.evaluation.ground_truth else ()):

    rule:
        name:
            f"evaluate_{_name}"
        input:
            data=W.evaluation_inputs("infer"),
            shards=W.shard_files(_product),
        output:
            table=W.path("evaluation", f"{_name}.csv"),
            markdown=W.path("evaluation", f"{_name}.md"),
            metrics=W.path("evaluation", f"{_name}.json"),
            # the CAM evaluation also writes the mIoU curve against the background threshold
            **({"thresholds": W.path("evaluation", "cam_thresholds.csv")} if _name == "cam" else {}),
        params:
            stage=W.stage("evaluate") + (W.stage("eval_cam") if _name == "cam" else ""),
            prefix=W.path("evaluation", _name),
            step=_step,  # shell commands are evaluated at run time: take loop values through params
        threads: 1
        resources:
            **W.resources(f"evaluate_{_name}", kind="evaluate"),
        log:
            W.path("logs", f"evaluate_{_name}.log"),
        shell:
            W.irn("{params.step}") + " --inputs {input.shards} --out-prefix {params.prefix} > {log} 2>&1"


def _summary_metrics():
    """The metric files of every evaluation this run makes (downstream models where enabled); none
    without ground truth."""
    if not RUN.evaluation.ground_truth:
        return {}
    names = list(EVALUATIONS)
    downstream = RUN.dataset.downstream_split is not None and RUN.dataset.val_split is not None
    if downstream and RUN.deeplab.enabled:
        names += ["deeplab_pseudo", "deeplab_ground_truth"]
    if downstream and RUN.maskrcnn.enabled:
        names += ["maskrcnn"]
    return {name: W.path("evaluation", f"{name}.json") for name in names}


SUMMARY_METRICS = _summary_metrics()


def _summary_products():
    """Without ground truth: the shards the summary reads (cam, semantic, instances) and, so that the
    run still makes them, those of IR labels and IRNet and the downstream models' outputs."""
    if RUN.evaluation.ground_truth:
        return {}
    products = {product: W.shard_files(product) for product in ("cam", "ir_labels", "irnet", "semantic", "instances")}
    downstream = RUN.dataset.downstream_split is not None
    val = downstream and RUN.dataset.val_split is not None
    if downstream and RUN.deeplab.enabled:
        products["deeplab"] = [W.path("deeplab_pseudo", Path(path).name) for path in W.shard_files("deeplab")] if val else [W.path("models", "deeplab_pseudo.pt")]
    if downstream and RUN.maskrcnn.enabled:
        products["maskrcnn"] = W.shard_files("maskrcnn") if val else [W.path("models", "maskrcnn.pt")]
    return products


SUMMARY_PRODUCTS = _summary_products()


rule summary:
    input:
        **SUMMARY_METRICS,
        **SUMMARY_PRODUCTS,
    output:
        W.path("evaluation", "summary.md"),
    threads: 1
    resources:
        **W.resources("summary"),
    log:
        W.path("logs", "summary.log"),
    shell:
        W.irn("summary")
        + " --metrics "
        + " ".join(f"{name}={{input.{name}}}" for name in SUMMARY_METRICS)
        + "".join(f" --{product} {{input.{product}}}" for product in ("cam", "semantic", "instances") if product in SUMMARY_PRODUCTS)
        + " --out {output} > {log} 2>&1"
