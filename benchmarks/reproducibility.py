"""Which CPU settings change the numbers: the CAM network's stages under emulated instruction sets.

Each setting runs in its own process (the kernels are chosen when torch loads): a fixed batch through
a randomly initialised ResNet-18 CAM network (forward), its gradients (backward), 10 SGD steps of CAM
training on synthetic images, and the multi-scale CAMs of one image after training, kept as float32
and as the float16 the CAM shards store. Every result is compared with the first setting (the
machine's own kernels, the threads given): largest absolute difference, and the time of the run as a
ratio to the first. ``ATEN_CPU_CAPABILITY`` picks PyTorch's own vectorised kernels (default = no
SIMD, avx2, avx512), ``ONEDNN_MAX_CPU_ISA`` the highest ISA oneDNN (MKL-DNN, the convolutions) may
use, ``MKL_CBWR`` MKL's code path.

    python benchmarks/reproducibility.py            (about a minute on 2 cores)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

SETTINGS: list[tuple[str, dict[str, str]]] = [
    ("native, 1 thread", {}),
    ("native, 2 threads", {"THREADS": "2"}),
    ("oneDNN AVX2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("ATen avx2 + oneDNN AVX2", {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("ATen avx2 + oneDNN AVX2 + MKL AVX2", {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                                            "MKL_CBWR": "AVX2"}),
    ("mkldnn off", {"MKLDNN_OFF": "1"}),
    ("mkldnn off, ATen avx2, MKL AVX2", {"MKLDNN_OFF": "1", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}),
]


def child() -> None:
    import numpy as np
    import torch

    from irn_core.cam.infer import multiscale_cams
    from irn_core.cam.train import CAMTrainSettings, build_cam_network
    from irn_core.data.synthetic import SyntheticConfig, render_image
    from irn_core.data.transforms import normalize

    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    if os.environ.get("MKLDNN_OFF"):
        torch.backends.mkldnn.enabled = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    started = time.perf_counter()
    torch.manual_seed(0)
    settings = CAMTrainSettings(backbone="resnet18", weights="none", frozen_batchnorm=False, frozen_stages=0,
                                batch_size=4, crop_size=96, epochs=1, resize_long=(96, 96), learning_rate=0.05,
                                head_lr_multiplier=10.0, weight_decay=1e-4, momentum=0.9, poly_power=0.9,
                                num_workers=0, seed=0)
    model = build_cam_network(settings, 4)
    config = SyntheticConfig(seed=1, num_train=4, num_val=0, image_size_range=(96, 96))
    samples = [render_image(config, index) for index in range(4)]
    images = torch.stack([torch.from_numpy(normalize(sample.image)).permute(2, 0, 1) for sample in samples]).float()
    labels = torch.zeros(4, 4)
    for row, sample in enumerate(samples):
        labels[row, list(sample.class_indices)] = 1
    results: dict[str, list[float]] = {}
    logits = model(images)
    results["forward"] = logits.detach().flatten().tolist()
    loss = torch.nn.functional.multilabel_soft_margin_loss(logits, labels)
    loss.backward()
    results["backward"] = next(model.parameters()).grad.flatten()[:4096].tolist()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(10):
        optimizer.zero_grad()
        torch.nn.functional.multilabel_soft_margin_loss(model(images), labels).backward()
        optimizer.step()
    results["10 training steps"] = torch.cat([p.detach().flatten()[:2048] for p in model.parameters()]).tolist()
    model.eval()
    with torch.no_grad():
        cams, _ = multiscale_cams(model, samples[0].image, scales=(1.0, 0.5), flip=True)
    results["CAMs (float32)"] = cams.flatten().tolist()
    results["CAMs (float16 stored)"] = cams.numpy().astype(np.float16).astype(np.float32).flatten().tolist()
    results["seconds"] = [time.perf_counter() - started]
    results["capability"] = [torch.backends.cpu.get_cpu_capability()]  # type: ignore[list-item]
    sys.stdout.write(json.dumps(results))


def main() -> None:
    import numpy as np

    runs = []
    for name, variables in SETTINGS:
        environment = {**os.environ, **variables, "OMP_NUM_THREADS": variables.get("THREADS", "1")}
        output = subprocess.run([sys.executable, __file__, "--child"], env=environment, capture_output=True,
                                text=True, check=True).stdout
        runs.append((name, json.loads(output)))
    base_name, base = runs[0]
    stages = [key for key in base if key not in ("seconds", "capability")]
    print(f"max |difference| against '{base_name}' (ATen kernels: {base['capability'][0]})\n")
    print("| setting | ATen | " + " | ".join(stages) + " | time |")
    print("|---|---|" + "---|" * len(stages) + "---|")
    for name, result in runs:
        cells = []
        for stage in stages:
            difference = float(np.max(np.abs(np.array(result[stage]) - np.array(base[stage]))))
            cells.append("0" if difference == 0 else f"{difference:.1e}")
        ratio = result["seconds"][0] / base["seconds"][0]
        print(f"| {name} | {result['capability'][0]} | " + " | ".join(cells) + f" | {ratio:.2f}x |")


if __name__ == "__main__":
    if "--child" in sys.argv:
        child()
    else:
        main()
