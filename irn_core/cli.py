"""``irn <step> --config <yaml> ...``: the entry points the Snakemake rules call, and the commands
for people: ``irn run`` (the workflow), ``irn status`` (where a run stands), ``irn show IMAGE_ID``
(the panels of one image), ``irn report`` (the HTML report), ``irn data fetch`` / ``irn data check``
(download and verify the public datasets; check a config's dataset).

Every step subcommand loads and validates the run config, does one step (often for one shard) and
writes its outputs atomically. ``irn --help`` lists the commands; ``irn <command> --help`` their
options and an example.

Exit codes: 0 success; 1 ``irn run``: Snakemake failed (its own exit code is passed on),
``irn status``: the run is not finished (pending, running, interrupted or stale jobs); 2 bad
usage, invalid config or input, missing or corrupt file (the message names it), ``irn data check``:
problems found; 3 ``irn status``:
at least one job failed; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from irn_core.atomic import write_text_atomic
from irn_core.config import RunConfig, dump_config, load_config, schema
from irn_core.errors import IrnError

logger = logging.getLogger("irn_core.cli")


def _config(arguments: argparse.Namespace) -> RunConfig:
    config = load_config(arguments.config)
    threads = getattr(arguments, "threads", None)
    if threads:
        config = config.model_copy(update={"compute": config.compute.model_copy(update={"threads": threads})})
    return config


def _write_metrics(path: Path, metrics: dict[str, object]) -> None:
    write_text_atomic(path, json.dumps(metrics, indent=1, sort_keys=True) + "\n")


def command_make_synthetic(arguments: argparse.Namespace) -> None:
    from irn_core.data import synthetic

    config = _config(arguments)
    if config.dataset.kind != "synthetic" or config.dataset.synthetic is None:
        raise IrnError(f"{arguments.config}: dataset.kind is {config.dataset.kind!r}, not 'synthetic'")
    output = Path(arguments.out) if arguments.out else config.dataset.root
    synthetic.generate(config.dataset.synthetic, output)


def command_plan(arguments: argparse.Namespace) -> None:
    from irn_core.steps.common import shard_plan

    plan = shard_plan(_config(arguments))
    if arguments.out:
        write_text_atomic(arguments.out, plan.to_json() + "\n")
    else:
        sys.stdout.write(plan.to_json() + "\n")


def command_manifest(arguments: argparse.Namespace) -> None:
    from irn_core.data.fingerprints import FingerprintCache, write_if_changed
    from irn_core.steps.common import shard_plan
    from irn_core.steps.inputs import parse_reads, role_manifest_text, shard_manifest_text

    config = _config(arguments)
    plan = shard_plan(config)
    reads = parse_reads(arguments.reads)
    cache = FingerprintCache(None)
    if arguments.product is not None:
        if arguments.shard is None:
            raise IrnError("--product needs --shard")
        text = shard_manifest_text(config, plan, arguments.product, arguments.shard, reads, cache)
    elif arguments.role is not None:
        text = role_manifest_text(config, plan, arguments.role, reads, cache)
    else:
        raise IrnError("give --product and --shard, or --role")
    write_if_changed(arguments.out, text)


def command_compare(arguments: argparse.Namespace) -> int:
    from irn_core.compare import compare_runs

    comparison = compare_runs(arguments.run_a, arguments.run_b, tolerance=arguments.tolerance)
    sys.stdout.write(comparison.report())
    return 0 if comparison.identical else 1


def command_show_config(arguments: argparse.Namespace) -> None:
    if arguments.schema:
        sys.stdout.write(json.dumps(schema(), indent=1) + "\n")
    else:
        sys.stdout.write(dump_config(_config(arguments)))


def command_train_cam(arguments: argparse.Namespace) -> None:
    from irn_core.steps.cam import run_train_cam

    run_train_cam(_config(arguments), Path(arguments.out), max_steps=arguments.max_steps)


def command_make_cam(arguments: argparse.Namespace) -> None:
    from irn_core.steps.cam import run_make_cam

    run_make_cam(_config(arguments), arguments.shard, Path(arguments.checkpoint), Path(arguments.out))


def command_import_cams(arguments: argparse.Namespace) -> None:
    from irn_core.steps.cam import run_import_cams

    run_import_cams(_config(arguments), arguments.shard, Path(arguments.npy_dir), Path(arguments.out))


def command_export_cams(arguments: argparse.Namespace) -> None:
    from irn_core.interop import write_reference_cam
    from irn_core.store import ShardedStore

    output = Path(arguments.out_dir)
    with ShardedStore([Path(path) for path in arguments.cams], product="cam") as store:
        for image_id in store.image_ids:
            stored = store.read(image_id, ["class_ids", "cam_s4", "cam_s1"])
            write_reference_cam(output / f"{image_id}.npy", stored["class_ids"], stored["cam_s4"], stored["cam_s1"])
    logger.info("wrote %d reference CAM files to %s", len(store.image_ids), output)


def command_ir_labels(arguments: argparse.Namespace) -> None:
    from irn_core.steps.irnet import run_ir_labels

    run_ir_labels(_config(arguments), arguments.shard, Path(arguments.cams), Path(arguments.out))


def command_train_irnet(arguments: argparse.Namespace) -> None:
    from irn_core.steps.irnet import run_train_irnet

    run_train_irnet(
        _config(arguments),
        [Path(path) for path in arguments.ir_labels],
        Path(arguments.out),
        cam_checkpoint=Path(arguments.cam_checkpoint) if arguments.cam_checkpoint else None,
        max_steps=arguments.max_steps,
    )


def command_irnet_infer(arguments: argparse.Namespace) -> None:
    from irn_core.steps.irnet import run_irnet_infer

    run_irnet_infer(_config(arguments), arguments.shard, Path(arguments.checkpoint), Path(arguments.out))


def command_pseudo_labels(arguments: argparse.Namespace) -> None:
    from irn_core.steps.pseudo_labels import run_pseudo_labels

    run_pseudo_labels(
        _config(arguments),
        arguments.shard,
        Path(arguments.cams),
        Path(arguments.irnet),
        Path(arguments.semantic_out),
        Path(arguments.instances_out),
    )


def _evaluation_command(function_name: str) -> Callable[[argparse.Namespace], None]:
    def command(arguments: argparse.Namespace) -> None:
        from irn_core.steps import evaluate

        function = getattr(evaluate, function_name)
        prefix = Path(arguments.out_prefix)
        metrics = function(_config(arguments), [Path(path) for path in arguments.inputs], prefix)
        _write_metrics(prefix.with_suffix(".json"), metrics)

    return command


def command_summary(arguments: argparse.Namespace) -> None:
    from irn_core.steps.evaluate import run_summary

    metric_files = {}
    for item in arguments.metrics:
        stage, _, path = item.partition("=")
        if not path:
            raise IrnError(f"--metrics expects STAGE=PATH, got {item!r}")
        metric_files[stage] = Path(path)
    shards = {product: [Path(path) for path in getattr(arguments, product) or []]
              for product in ("cam", "semantic", "instances")}
    run_summary(_config(arguments), metric_files, Path(arguments.out), shards)


def command_train_deeplab(arguments: argparse.Namespace) -> None:
    from irn_core.steps.deeplab import run_train_deeplab

    run_train_deeplab(
        _config(arguments),
        arguments.labels,
        [Path(path) for path in arguments.semantic or []],
        Path(arguments.out),
        max_steps=arguments.max_steps,
    )


def command_train_maskrcnn(arguments: argparse.Namespace) -> None:
    from irn_core.steps.maskrcnn import run_train_maskrcnn

    run_train_maskrcnn(
        _config(arguments), [Path(path) for path in arguments.instances or []], Path(arguments.out),
        max_steps=arguments.max_steps,
    )


def command_deeplab_infer(arguments: argparse.Namespace) -> None:
    from irn_core.steps.deeplab import run_deeplab_infer

    run_deeplab_infer(_config(arguments), arguments.shard, Path(arguments.checkpoint), Path(arguments.out))


def command_evaluate_deeplab(arguments: argparse.Namespace) -> None:
    from irn_core.steps.deeplab import run_evaluate_deeplab

    prefix = Path(arguments.out_prefix)
    metrics = run_evaluate_deeplab(_config(arguments), [Path(path) for path in arguments.inputs], prefix)
    _write_metrics(prefix.with_suffix(".json"), metrics)


def _add_deeplab_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    command = add("train-deeplab", command_train_deeplab,
                  "train DeepLab v2 on the downstream split (pseudo labels or ground truth)")
    command.add_argument("--labels", required=True, choices=["pseudo", "ground_truth"], help="label source")
    command.add_argument("--semantic", nargs="+", help="semantic pseudo-label shard files (--labels pseudo)")
    command.add_argument("--out", required=True)
    command.add_argument("--max-steps", type=int, help="stop early (smoke tests)")
    command = add("deeplab-infer", command_deeplab_infer,
                  "DeepLab v2 ensemble (+ CRF) label maps of one shard's validation images", shard=True)
    command.add_argument("--checkpoint", required=True)
    command.add_argument("--out", required=True)
    command = add("evaluate-deeplab", command_evaluate_deeplab, "mIoU of DeepLab v2 on the validation split")
    command.add_argument("--inputs", nargs="+", required=True, help="the deeplab shard files")
    command.add_argument("--out-prefix", required=True, help="writes PREFIX.csv, PREFIX.md, PREFIX.json")
def command_maskrcnn_infer(arguments: argparse.Namespace) -> None:
    from irn_core.steps.maskrcnn import run_maskrcnn_infer

    run_maskrcnn_infer(_config(arguments), arguments.shard, Path(arguments.checkpoint), Path(arguments.out))


def command_export(arguments: argparse.Namespace) -> None:
    from irn_core.steps.export import run_export

    run_export(
        _config(arguments),
        what=arguments.what,
        inputs=[Path(path) for path in arguments.inputs or []],
        output=Path(arguments.out),
        ground_truth=arguments.ground_truth,
        splits=arguments.splits,
        role=arguments.role,
        min_score=arguments.min_score,
        results=arguments.results,
    )


def _add_downstream_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Mask R-CNN and the exports."""
    command = add("train-maskrcnn", command_train_maskrcnn, "train Mask R-CNN on the downstream split")
    command.add_argument("--instances", nargs="*", help="instance pseudo-label shards (maskrcnn.train.labels: pseudo)")
    command.add_argument("--out", required=True)
    command.add_argument("--max-steps", type=int, help="stop early (smoke tests)")
    command = add("maskrcnn-infer", command_maskrcnn_infer, "Mask R-CNN predictions on one shard's val ids",
                  shard=True)
    command.add_argument("--checkpoint", required=True)
    command.add_argument("--out", required=True)
    command = add("evaluate-maskrcnn", _evaluation_command("run_evaluate_maskrcnn"),
                  "mask AP (mAP^r and COCO) of Mask R-CNN on the val ids")
    command.add_argument("--inputs", nargs="+", required=True, help="the maskrcnn shard files")
    command.add_argument("--out-prefix", required=True, help="writes PREFIX.csv, PREFIX.md, PREFIX.json")
    command = add(
        "export", command_export,
        "instances as COCO JSON or label maps as VOC-palette PNGs; or the dataset as a COCO-format dataset",
    )
    command.add_argument("--what", choices=["coco", "png"], required=True)
    command.add_argument("--inputs", nargs="*", help="shard files of one product (instances, maskrcnn, semantic)")
    command.add_argument("--out", required=True, help="JSON file (coco), folder (png, --ground-truth)")
    command.add_argument("--ground-truth", action="store_true",
                         help="coco: write the dataset's images and ground-truth instances, one JSON per split")
    command.add_argument("--splits", nargs="*", help="--ground-truth: splits to write (default: the run's splits)")
    command.add_argument("--role", choices=["infer", "downstream", "val"],
                         help="only the ids of this split role (default: every stored id)")
    command.add_argument("--min-score", type=float,
                         help="leave out instances scoring below this (default: 1e-5 for pseudo labels, as the "
                         "reference's make_cocoann.py; none for predictions)")
    command.add_argument("--results", action="store_true",
                         help="coco: write COCO's result list (for COCO.loadRes / COCOeval) instead of a dataset")


# ---------------------------------------------------------------------------------- commands for people

EXIT_CODES = """exit codes:
  0    success
  1    irn run: Snakemake failed; irn status: the run is not finished (pending, running, stale jobs)
  2    bad usage, invalid config or input, missing or corrupt file (the message names it);
       irn data check: problems found (the table names them)
  3    irn status: at least one job failed (its log's last error is shown)
  130  interrupted (Ctrl-C)"""

DEFAULT_CONFIG = "config/config.yaml"


def _people_config(arguments: argparse.Namespace) -> RunConfig:
    config = load_config(arguments.config or [DEFAULT_CONFIG])
    threads = getattr(arguments, "threads", None)
    if threads:
        config = config.model_copy(update={"compute": config.compute.model_copy(update={"threads": threads})})
    return config


def repository_root() -> Path:
    """The checkout holding ``workflow/Snakefile`` (the package is installed from it in editable mode)."""
    return Path(__file__).resolve().parents[1]


def snakemake_command(arguments: argparse.Namespace, extra: Sequence[str]) -> list[str]:
    """The Snakemake command line ``irn run`` starts (this Python's snakemake module)."""
    root = repository_root()
    snakefile = Path(arguments.snakefile) if arguments.snakefile else root / "workflow" / "Snakefile"
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile)]
    configs = arguments.config or [DEFAULT_CONFIG]
    command += ["--configfile", *[str(path) for path in configs]]
    profile_used = True
    if arguments.profile:
        command += ["--profile", str(arguments.profile)]
    elif (root / "config" / "profiles" / "local").is_dir() and not arguments.no_profile:
        command += ["--workflow-profile", str(root / "config" / "profiles" / "local")]
    else:
        profile_used = False
    if arguments.cores is not None:
        command += ["--cores", str(arguments.cores)]
    elif not profile_used:
        command += ["--cores", "all"]
    if arguments.dry_run:
        command.append("--dry-run")
    if arguments.directory:
        command += ["--directory", str(arguments.directory)]
    command += list(extra)
    command += list(arguments.targets)
    return command


def command_run(arguments: argparse.Namespace, extra: Sequence[str] = ()) -> int:
    import shlex
    import subprocess

    config = _people_config(arguments)  # a config error is reported before Snakemake starts
    command = snakemake_command(arguments, extra)
    if arguments.print_command:
        sys.stdout.write(shlex.join(command) + "\n")
        return 0
    if not arguments.no_data_check and not arguments.directory:
        from irn_core.data.check import check_at_run_start

        check_at_run_start(config)  # a wrong dataset folder: exit 2 with the table (the workflow checks too)
    logger.info("running: %s", shlex.join(command))
    return subprocess.run(command, check=False).returncode


def command_status(arguments: argparse.Namespace) -> int:
    from irn_core.status import format_status, run_status
    from irn_core.steps.common import shard_plan

    config = _people_config(arguments)
    status = run_status(config, shard_plan(config), workdir=Path(arguments.directory))
    sys.stdout.write(status.to_json() + "\n" if arguments.json else format_status(status, verbose=arguments.verbose))
    return status.exit_code


def command_show(arguments: argparse.Namespace) -> None:
    from irn_core.report.figures import panel_grid, write_png
    from irn_core.report.sources import RunSources, image_panels
    from irn_core.steps.common import open_run_dataset

    config = _people_config(arguments)
    dataset = open_run_dataset(config)
    with RunSources.open(config.run_dir) as sources:
        if not sources.holding(arguments.image_id):
            raise IrnError(
                f"image id {arguments.image_id!r} is in none of the product shard files under {config.run_dir} "
                "(not in the run's splits, or its shards are not made yet: see irn status)"
            )
        panels = image_panels(arguments.image_id, sources, dataset, config)
    output = Path(arguments.out or f"{arguments.image_id}.png")
    write_png(panel_grid(panels, title=f"{arguments.image_id} (run '{config.name}')", columns=arguments.columns),
              output)
    logger.info("wrote %s (%d panels)", output, len(panels))
    sys.stdout.write(f"{output}\n")


def command_report(arguments: argparse.Namespace) -> None:
    from irn_core.engine.runtime import configure_runtime
    from irn_core.report.page import write_report
    from irn_core.steps.common import open_run_dataset, shard_plan

    config = _people_config(arguments)
    configure_runtime(threads=config.compute.threads, deterministic=config.compute.deterministic)
    plan = shard_plan(config)
    role_ids = {"infer": plan.all_ids("infer"), "val": plan.all_ids("val")}
    output = Path(arguments.out) if arguments.out else config.run_dir / "report"
    page = write_report(config, open_run_dataset(config), role_ids, output)
    sys.stdout.write(f"{page}\n")
    if arguments.open:
        import webbrowser

        if not webbrowser.open(page.resolve().as_uri()):
            logger.warning("no browser found; open %s", page.resolve().as_uri())


def command_estimate(arguments: argparse.Namespace) -> None:
    from irn_core.estimate import estimate, format_estimate

    config = _people_config(arguments)
    report = None
    if arguments.throughput:
        try:
            report = json.loads(Path(arguments.throughput).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise IrnError(f"{arguments.throughput}: not a readable gpu_check report ({error})") from None
    if arguments.gpus < 1:
        raise IrnError(f"--gpus must be at least 1, got {arguments.gpus}")
    from_run = Path(arguments.from_run) if arguments.from_run else None
    result = estimate(config, throughput_report=report, from_run=from_run)
    sys.stdout.write(format_estimate(result, arguments.gpus) + "\n")


def _add_people_commands(commands: argparse._SubParsersAction) -> None:
    def add(name: str, function: Callable[..., object], help_text: str, example: str, *,
            one_config_per_option: bool = False) -> argparse.ArgumentParser:
        command = commands.add_parser(
            name, help=help_text, description=help_text, epilog=f"example:\n  {example}\n\n{EXIT_CODES}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # irn run takes targets as positional arguments: there --config takes one file per option
        # (a list would swallow the targets); every option adds to the list, merged left to right.
        forms = "--config A --config B" if one_config_per_option else "--config A B or --config A --config B"
        command.add_argument(
            "--config", nargs=1 if one_config_per_option else "+", action="extend", default=[],
            help=f"config YAML file(s), merged left to right ({forms}; default: {DEFAULT_CONFIG})",
        )
        command.set_defaults(function=function)
        return command

    command = add("run", command_run, "run the workflow (Snakemake) for a config; extra options go to Snakemake",
                  "irn run --config config/config.yaml --cores 2 --dry-run\n"
                  "  irn run --config config/voc12.yaml --profile config/profiles/slurm report -- --keep-going",
                  one_config_per_option=True)
    command.add_argument("targets", nargs="*", help="rules or files to make (default: the whole pipeline)")
    command.add_argument("--cores", help="CPU cores Snakemake may use (default: the profile's, else all)")
    command.add_argument("--profile", help="a Snakemake profile folder (e.g. config/profiles/slurm)")
    command.add_argument("--no-profile", action="store_true", help="do not use config/profiles/local")
    command.add_argument("--dry-run", "-n", action="store_true", help="list the jobs without running them")
    command.add_argument("--directory", help="Snakemake's working directory (where results/ goes)")
    command.add_argument("--snakefile", help="another Snakefile (default: this checkout's workflow/Snakefile)")
    command.add_argument("--print-command", action="store_true", help="print the Snakemake command, run nothing")
    command.add_argument("--no-data-check", action="store_true",
                         help="do not check the dataset first (the workflow still checks it when it builds its DAG)")
    command.set_defaults(passes_extra=True)

    command = add("status", command_status, "where a run stands: each stage and shard done, stale, failed or "
                  "pending", "irn status --config config/config.yaml")
    command.add_argument("--directory", default=".", help="the working directory the run was started in")
    command.add_argument("--json", action="store_true", help="every job's state as JSON")
    command.add_argument("--verbose", "-v", action="store_true", help="list every job")

    command = add("show", command_show, "the panels of one image (CAMs, boundaries, displacement, instances, "
                  "pseudo labels, predictions, ground truth) as one PNG",
                  "irn show syn_000012 --config config/config.yaml --out syn_000012.png")
    command.add_argument("image_id")
    command.add_argument("--out", help="PNG to write (default: IMAGE_ID.png)")
    command.add_argument("--columns", type=int, default=6, help="panels per row of the picture")

    command = add("report", command_report, "write the HTML report of a run (results/<name>/report/index.html)",
                  "irn report --config config/config.yaml --open")
    command.add_argument("--out", help="report folder (default: results/<name>/report)")
    command.add_argument("--open", action="store_true", help="open the page in a web browser")
    command.add_argument("--threads", type=int, help="CPU threads (overrides compute.threads; the rule passes it)")

    command = add("estimate", command_estimate, "per stage the images, jobs and projected time on 1 and N devices, "
                  "and the disk each HDF5 product needs",
                  "irn estimate --config config/voc12.yaml --gpus 8\n"
                  "  irn estimate --config config/voc12.yaml --throughput benchmarks/gpu_reports/REPORT.json\n"
                  "  irn estimate --config config/config.yaml --from-run results/demo")
    command.add_argument("--throughput", help="a benchmarks/gpu_check.py JSON report: its measured images/s per stage "
                         "(default: CPU figures, from --from-run or the README demo's)")
    command.add_argument("--from-run", help="a finished run folder: images/s from its Snakemake benchmark files, "
                         "and the compression ratio of its HDF5 files")
    command.add_argument("--gpus", type=int, default=8, help="devices for the SLURM column (default 8)")


def command_data_fetch(arguments: argparse.Namespace) -> None:
    from irn_core.data.fetch import MIRROR_VARIABLE, config_overlay_text, fetch_dataset, load_resources

    resources = load_resources(arguments.resources)
    unknown = [name for name in arguments.datasets if name not in resources]
    if unknown:
        raise IrnError(f"unknown dataset(s) {unknown} (the resource table lists: {', '.join(resources)})")
    mirror = arguments.mirror or os.environ.get(MIRROR_VARIABLE)
    results = []
    for name in arguments.datasets:
        resource = resources[name].with_mirror(mirror) if mirror else resources[name]
        results.append(fetch_dataset(resource, Path(arguments.root), progress=not arguments.no_progress,
                                     keep_archives=arguments.keep_archives))
    overlay = config_overlay_text(results, resources)
    if arguments.write_config:
        write_text_atomic(arguments.write_config, overlay)
        bases = " ".join(f"--config {resources[name].base_config}" for name in dict.fromkeys(arguments.datasets)
                         if resources[name].base_config)
        sys.stdout.write(f"wrote {arguments.write_config}; run with: irn run {bases} "
                         f"--config {arguments.write_config}\n")
    else:
        sys.stdout.write(overlay)


def command_data_check(arguments: argparse.Namespace) -> int:
    from irn_core.data.check import check_dataset, disk_needed, format_disk, format_report

    config = _people_config(arguments)
    report = check_dataset(config, progress=not arguments.no_progress)
    disk = disk_needed(config, report) if report.ok else {}
    if arguments.json:
        sys.stdout.write(json.dumps({**json.loads(report.to_json()), "disk_bytes": disk}, indent=1) + "\n")
    else:
        sys.stdout.write(format_report(report) + format_disk(disk))
    return 0 if report.ok else 2


def _add_data_commands(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="fetch the public datasets (VOC 2012, SBD, COCO 2017) and check a "
                               "dataset folder", description="fetch the public datasets and check a dataset folder")
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = actions.add_parser(
        "fetch", help="download, verify (MD5) and unpack voc12, sbd or coco; print the config lines to use",
        description="download (resuming interrupted downloads), verify and unpack the official archives listed in "
        "resources/datasets.yaml; a dataset already fetched and verified is left alone",
        epilog="example:\n  irn data fetch voc12 sbd --root data --write-config data/voc12-paths.yaml\n"
        "  irn run --config config/voc12.yaml --config data/voc12-paths.yaml\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch.add_argument("datasets", nargs="+", metavar="DATASET", help="voc12, sbd or coco (several allowed)")
    fetch.add_argument("--root", default="data", help="folder the datasets are unpacked in (default: data)")
    fetch.add_argument("--mirror", help="URL prefix to download every archive from (PREFIX/<archive name>) "
                       "instead of the official URL (also: IRN_DATA_MIRROR)")
    fetch.add_argument("--resources", help="another resource table (default: resources/datasets.yaml; "
                       "also: IRN_DATA_RESOURCES)")
    fetch.add_argument("--write-config", help="write the dataset lines as a config file to merge onto "
                       "config/voc12.yaml or config/coco.yaml")
    fetch.add_argument("--keep-archives", action="store_true", help="keep the downloaded archives after unpacking")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bars")
    fetch.set_defaults(function=command_data_fetch)
    check = actions.add_parser(
        "check", help="check a config's dataset: split sizes, every image and label file, labels, sizes",
        description="check that every image and label file of the config's splits exists and reads, the split "
        "sizes (the official VOC 2012 / COCO 2017 counts where they apply), non-empty image-level labels; print "
        "class counts and image size statistics. Exit code 2 and a table of the problems otherwise.",
        epilog="example:\n  irn data check --config config/voc12.yaml --config data/voc12-paths.yaml\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--config", nargs="+", action="extend", default=[],
                       help=f"config YAML file(s), merged left to right (default: {DEFAULT_CONFIG})")
    check.add_argument("--json", action="store_true", help="the report as JSON")
    check.add_argument("--no-progress", action="store_true", help="no progress bars")
    check.set_defaults(function=command_data_check)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="irn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True, metavar="STEP")

    def add(name: str, function: Callable[[argparse.Namespace], None], help_text: str, *, shard: bool = False,
            config_required: bool = True) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--config", required=config_required, nargs="+", action="extend", default=[],
                             help="config YAML file(s), merged left to right; a repeated --config adds to the list")
        if shard:
            command.add_argument("--shard", type=int, required=True, help="shard index (0-based)")
        command.add_argument("--threads", type=int, help="CPU threads (overrides compute.threads)")
        command.set_defaults(function=function)
        return command

    command = add("make-synthetic", command_make_synthetic, "generate the synthetic VOC-layout dataset")
    command.add_argument("--out", help="output folder (default: dataset.root)")
    command = add("plan", command_plan, "print or write the shard plan")
    command.add_argument("--out")
    command = add("manifest", command_manifest, "write the input manifest of a shard's product or of a role")
    command.add_argument("--product", help="per-shard product (with --shard)")
    command.add_argument("--shard", type=int, help="shard index (0-based)")
    command.add_argument("--role", help="split role (train, infer, downstream, val)")
    command.add_argument("--reads", required=True, help="what is read per id: image, labels, ground_truth (joined by +)")
    command.add_argument("--out", required=True)
    command = add("compare", command_compare, "compare two runs' products; exit 1 and say where they first differ",
                  config_required=False)
    command.add_argument("run_a", help="a run folder (results/<name>)")
    command.add_argument("run_b", help="another run folder")
    command.add_argument("--tolerance", type=float, default=0.0, help="largest absolute difference taken as equal")
    command = add("show-config", command_show_config, "print the resolved config (or the JSON schema)",
                  config_required=False)
    command.add_argument("--schema", action="store_true")

    command = add("train-cam", command_train_cam, "train the CAM network")
    command.add_argument("--out", required=True)
    command.add_argument("--max-steps", type=int, help="stop early (smoke tests)")
    command = add("make-cam", command_make_cam, "multi-scale + flip CAMs of one shard", shard=True)
    command.add_argument("--checkpoint", required=True)
    command.add_argument("--out", required=True)
    command = add("import-cams", command_import_cams, "CAM shard from reference-format .npy files", shard=True)
    command.add_argument("--npy-dir", required=True)
    command.add_argument("--out", required=True)
    command = add("export-cams", command_export_cams, "write CAM shards as reference-format .npy files",
                  config_required=False)
    command.add_argument("--cams", nargs="+", required=True)
    command.add_argument("--out-dir", required=True)

    command = add("ir-labels", command_ir_labels, "confident-region labels of one shard (dense CRF)", shard=True)
    command.add_argument("--cams", required=True)
    command.add_argument("--out", required=True)
    command = add("train-irnet", command_train_irnet, "train IRNet and measure the displacement mean")
    command.add_argument("--ir-labels", nargs="+", required=True)
    command.add_argument("--cam-checkpoint")
    command.add_argument("--out", required=True)
    command.add_argument("--max-steps", type=int)
    command = add("irnet-infer", command_irnet_infer, "boundary, displacement and affinities of one shard",
                  shard=True)
    command.add_argument("--checkpoint", required=True)
    command.add_argument("--out", required=True)
    command = add("pseudo-labels", command_pseudo_labels, "semantic and instance pseudo labels of one shard",
                  shard=True)
    command.add_argument("--cams", required=True)
    command.add_argument("--irnet", required=True)
    command.add_argument("--semantic-out", required=True)
    command.add_argument("--instances-out", required=True)

    for name, function_name, help_text in (
        ("evaluate-cam", "run_evaluate_cam", "mIoU of the CAMs"),
        ("evaluate-semantic", "run_evaluate_semantic", "mIoU of the semantic pseudo labels"),
        ("evaluate-instances", "run_evaluate_instances", "mask AP of the instance pseudo labels"),
    ):
        command = add(name, _evaluation_command(function_name), help_text)
        command.add_argument("--inputs", nargs="+", required=True, help="the stage's shard files")
        command.add_argument("--out-prefix", required=True, help="writes PREFIX.csv, PREFIX.md, PREFIX.json")
    _add_deeplab_commands(add)
    _add_downstream_commands(add)
    command = add("summary", command_summary, "one Markdown table of the headline metrics")
    command.add_argument("--metrics", nargs="*", default=[], help="STAGE=metrics.json")
    for product in ("cam", "semantic", "instances"):
        command.add_argument(f"--{product}", nargs="+", help=f"{product} shard files (summarised without ground "
                             "truth when evaluation.ground_truth is false)")
    command.add_argument("--out", required=True)
    _add_people_commands(commands)
    _add_data_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    passed_on: list[str] = []
    if "--" in argv:  # irn run ... -- <Snakemake options>
        argv, passed_on = argv[: argv.index("--")], argv[argv.index("--") + 1:]
    arguments, extra = parser.parse_known_args(argv)
    extra += passed_on
    if extra and not getattr(arguments, "passes_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=getattr(logging, arguments.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    injected = _injected_failure(arguments.command)
    if injected is not None:
        logger.error("%s", injected)
        return 1
    try:
        if getattr(arguments, "passes_extra", False):
            result = arguments.function(arguments, extra)
        else:
            result = arguments.function(arguments)
    except IrnError as error:
        logger.error("%s", error)
        return 2
    except KeyboardInterrupt:
        logger.error("interrupted")
        return 130
    return result if isinstance(result, int) else 0


FAIL_ONCE_VARIABLE = "IRN_TEST_FAIL_ONCE"
"""Fault injection for tests of retries: ``STEP:MARKER`` makes the first ``irn STEP`` that finds no
file ``MARKER`` create it and exit 1 (the next attempt runs normally)."""


def _injected_failure(command: str) -> str | None:
    value = os.environ.get(FAIL_ONCE_VARIABLE)
    if not value:
        return None
    step, _, marker = value.partition(":")
    if step != command or not marker:
        return None
    try:
        with open(marker, "x", encoding="utf-8") as handle:
            handle.write(f"{command} failed once on purpose\n")
    except FileExistsError:
        return None
    return f"{FAIL_ONCE_VARIABLE}: failing this first attempt of 'irn {command}' on purpose ({marker})"


if __name__ == "__main__":
    sys.exit(main())
