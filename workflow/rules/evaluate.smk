# Evaluation against the ground truth of the inference split: CSV + Markdown tables, and a summary.

EVALUATIONS = {
    "cam": ("evaluate-cam", "cam"),
    "semantic": ("evaluate-semantic", "semantic"),
    "instances": ("evaluate-instances", "instances"),
}


for _name, (_step, _product) in EVALUATIONS.items():

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
    """The metric files of every evaluation this run makes (downstream models where enabled)."""
    names = list(EVALUATIONS)
    downstream = RUN.dataset.downstream_split is not None and RUN.dataset.val_split is not None
    if downstream and RUN.deeplab.enabled:
        names += ["deeplab_pseudo", "deeplab_ground_truth"]
    if downstream and RUN.maskrcnn.enabled:
        names += ["maskrcnn"]
    return {name: W.path("evaluation", f"{name}.json") for name in names}


SUMMARY_METRICS = _summary_metrics()


rule summary:
    input:
        **SUMMARY_METRICS,
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
        + " --out {output} > {log} 2>&1"
