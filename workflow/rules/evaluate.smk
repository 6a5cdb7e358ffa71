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


rule summary:
    input:
        **{name: W.path("evaluation", f"{name}.json") for name in EVALUATIONS},
    output:
        W.path("evaluation", "summary.md"),
    threads: 1
    resources:
        **W.resources("summary"),
    log:
        W.path("logs", "summary.log"),
    shell:
        W.irn("summary")
        + " --metrics cam={input.cam} semantic={input.semantic} instances={input.instances}"
        + " --out {output} > {log} 2>&1"
