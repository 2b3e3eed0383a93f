"""Every shell command of README.md, docs/*.md and results/README.md runs as written (shrunk)
and leaves the checkout unchanged.

**Extraction** (:func:`readme_commands`), in file order:

* fenced code blocks whose info string is ``bash`` (also indented ones inside lists): after
  joining ``\\``-continued lines, every line that is not blank or a ``#`` comment is a command,
  with a trailing ``  # comment`` removed; a line that only assigns variables (``COMMON="..."``)
  is not a command but the environment of the block's later commands;
* inline code spans outside fenced blocks that start with a program (``python``, ``torchrun``,
  ``pip``, ``bash``, ``conda``, ``wandb``, ``srun``) followed by arguments, optionally after
  ``VAR=value`` assignments (``OMP_NUM_THREADS=1 python ...``); spans may wrap across lines;
* whitespace is normalised, and ``a && b`` is split into its parts (``pip install ... &&
  python train.py``: the install is skipped, the training runs).

**The table** (:data:`COMMANDS`) says, for every command, how it is run: :class:`Run` appends
overrides that shrink it (Hydra and argparse both let a later value win) and replaces
placeholders (``DATE``, ``...``, ``<its last.pt>``, ``RUN_DIR...``) by what earlier commands
wrote; :class:`Same` names a command that runs the same thing (they differ only in
``OMP_NUM_THREADS=1``, in overrides the other's shrinking sets anyway, or in a placeholder;
checked); :class:`Skip` gives the reason it cannot run here (data we
do not have, a GPU, SLURM, the network, installing packages). A README command missing from
the table fails the test, and so does a table entry no README holds any more.

**The run**: the checkout is cloned (``git clone`` of this worktree, then its uncommitted
changes copied over and committed in the clone) into a temporary directory; the commands run
there with ``bash -c`` (``PYTHONPATH`` = the clone, ``OMP_NUM_THREADS=1``, W&B offline,
``FST_CACHE`` in the temporary directory), each group of dependent commands in README order, two groups at a time.
Each must exit with status 0, and ``git status --porcelain`` of the clone must still be empty
afterwards: nothing a README command writes may touch a tracked or an unignored file
(``outputs/`` is ignored: runs and tables go there unless ``--out results`` is asked for, which
this test redirects).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_imagefolder

pytestmark = pytest.mark.slow

# README.md, then docs/*.md (reference material moved out of README.md, in file name order),
# then results/README.md: a group's commands run in this order.
READMES = (
    "README.md",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")),
    "results/README.md",
)
PROGRAMS = ("python", "torchrun", "pip", "bash", "conda", "wandb", "srun")
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=(\"[^\"]*\"|'[^']*'|\S*)$")


@dataclass(frozen=True)
class Command:
    text: str  # normalised command, the table's key
    source: str  # "README.md:123"
    env: tuple[str, ...] = ()  # assignments earlier in its bash block (COMMON="...")


def _is_command(text: str) -> bool:
    words = text.split()
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]
    return len(words) > 1 and words[0] in PROGRAMS  # a bare `wandb` names the package


def readme_commands(path: Path) -> list[Command]:
    """Every command of one Markdown file (see the module docstring), in file order."""
    text = path.read_text()
    fence = re.compile(r"^([ \t]*)```([\w-]*)[^\n]*\n(.*?)^\1```", re.S | re.M)
    found: list[tuple[int, Command]] = []

    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name

    def add(pos: int, cmd: str, env: tuple[str, ...] = ()) -> None:
        line = text.count("\n", 0, pos) + 1
        for part in re.split(r"\s+&&\s+", " ".join(cmd.split())):
            found.append((pos, Command(part, f"{name}:{line}", env)))

    for m in fence.finditer(text):
        if m.group(2) != "bash":
            continue
        env: list[str] = []
        pos = m.start(3)
        for line in m.group(3).replace("\\\n", " ").splitlines(keepends=True):
            s = line.strip()
            here, pos = pos, pos + len(line)
            if not s or s.startswith("#"):
                continue
            s = re.sub(r"\s+#\s.*$", "", s)
            if _ASSIGN.match(s):
                env.append(s)
                continue
            add(here, s, tuple(env))
    rest = fence.sub(lambda m: "\n" * m.group(0).count("\n"), text)  # keep line numbers
    for m in re.finditer(r"`([^`]+)`", rest):
        span = " ".join(m.group(1).split())
        if _is_command(span):
            add(m.start(), span)
    return [c for _, c in sorted(found, key=lambda t: t[0])]


def all_commands() -> list[Command]:
    return [c for name in READMES for c in readme_commands(ROOT / name)]


# ------------------------------------------------------------------------------------------
# How each command runs here.

# A few seconds per run: one epoch of 2 batches of 4, 1 validation batch, no W&B, no bar.
SHRINK = (
    "logger=none trainer.device=cpu trainer.epochs=1 trainer.limit_train_batches=2 "
    "trainer.limit_val_batches=1 trainer.precision=32 trainer.progress_bar=false "
    "data.batch_size=4 data.val_batch_size=4 data.num_workers=0"
)
# ImageNet commands read a 3-class ImageFolder tree of 20 px images (made by the test) at 16 px.
IMAGENET = f"data.root={{imagefolder}} data.image_size=16 data.resize_size=18 {SHRINK}"
# Detection on the embedded shapes set: one step of 2 images, one validation batch.
DETECTION = SHRINK.replace("batch_size=4", "batch_size=2").replace("limit_train_batches=2", "limit_train_batches=1")  # fmt: skip


def _mmdet_usable() -> bool:
    """mmdet installed and mmcv built with its ops (scripts/install_mmdet.sh), found without
    importing them."""
    import importlib.util

    mmcv = importlib.util.find_spec("mmcv")
    if mmcv is None or importlib.util.find_spec("mmdet") is None:
        return False
    return any(Path(mmcv.origin).parent.glob("_ext*.so"))


# mmdet's runner on the shapes set: 8 train / 4 val images, one epoch of 2 batches.
MMDET_SHRINK = "--cfg-options train_cfg.max_epochs=1 " + " ".join(
    f"{loader}.{k}={v}"
    for loader in ("train_dataloader", "val_dataloader")
    for k, v in (("batch_size", 4), ("dataset.num_train", 8), ("dataset.num_val", 4))
)
GPU = "needs a CUDA GPU (tests/gpu and scripts/gpu_suite.sh run it on one)"
SLURM = "needs a SLURM cluster"
PIP = "installs packages (the environment running this test is already installed)"
VOC_COCO = "needs PASCAL VOC / COCO and pretrained backbone weights (not shipped)"


@dataclass(frozen=True)
class Run:
    add: str = ""  # appended arguments: later values win (Hydra overrides, argparse options)
    sub: dict[str, str] = field(default_factory=dict)  # placeholder -> value (may use {...})
    group: str = ""  # commands of one group run in README order (later ones read earlier output)


@dataclass(frozen=True)
class Same:
    of: str  # a command in the table that runs the same thing
    sub: dict[str, str] = field(default_factory=dict)  # its placeholder -> the other's words


@dataclass(frozen=True)
class Skip:
    why: str


MMDET = (
    Run(MMDET_SHRINK, group="mmdet")
    if _mmdet_usable()
    else Skip("needs MMDetection: bash scripts/install_mmdet.sh (CI runs it first)")
)


FST18 = "python train.py +experiment=fst_resnet18 data.root=/data/imagenet"
TABLES = (
    "OMP_NUM_THREADS=1 python train.py -m logger=none trainer.progress_bar=false "
    "trainer.save_checkpoints=false output_root=outputs/embedded_tables model=timm "
    "model.arch=resnet18 '+model.kwargs.channels=[16,32,64,128]' +model.kwargs.stem_width=16 "
    "data.image_size=32 trainer.epochs=3 seed=0,1,2 "
    "sparsity=dense,srste,fst2,fst_noir,fst,gg,wg,tsm,gx,wx"
)
TABLES_HARD = (
    "OMP_NUM_THREADS=1 python train.py -m logger=none trainer.progress_bar=false "
    "trainer.save_checkpoints=false output_root=outputs/embedded_tables_hard data=digits_hard "
    "model.width=16 data.image_size=16 trainer.epochs=5 seed=0,1,2 "
    "sparsity=dense,srste,fst2,fst_noir,fst,gg,wg,tsm,gx,wx"
)
VIT_SWEEP = "OMP_NUM_THREADS=1 python train.py -m +sweep=vit_digits output_root=outputs/vit_digits"
VIT_TABLE = "python scripts/vit_table.py outputs/vit_digits --out results"
# one tiny case, one seed, three strategies (a few seconds)
FIDELITY_SHRINK = "--cases vit_digits_init --vit-seeds 1 --vit-batch 8 --strategies dense gg fst"
LATEST_FST18 = "$(ls -d outputs/fst_resnet18/seed0/*/ | sort | tail -1)"
LATEST_DIGITS = "$(ls -d outputs/digits_resnet18_fst/seed0/*/ | sort | tail -1)"
LATEST_SWEEP = "$(dirname $(ls -d outputs/multirun/*/digits_resnet18_srste | sort | tail -1))"
ONE_SEED = "hydra.sweeper.params.seed=0"


def sweep(key: str, values: str) -> str:
    """Override a sweep file's list (quoted: Hydra refuses to sweep over its own config)."""
    return f"\"hydra.sweeper.params.{key}='{values}'\""


COMMANDS: dict[str, Run | Same | Skip] = {
    # ---- README.md: set-up
    "pip install torch==2.14.1 torchvision==0.29.1": Skip(PIP),
    "pip install -e .": Skip(PIP),
    "python train.py": Run(
        # as written, W&B (offline) included; 1 epoch of 2 batches
        "trainer.epochs=1 trainer.limit_train_batches=2 trainer.limit_val_batches=1",
        group="everyday",
    ),
    "pip install torch==2.14.1 torchvision==0.29.1 --index-url "
    "https://download.pytorch.org/whl/cpu": Skip(PIP),
    'pip install -e ".[dev]"': Skip(PIP),
    "python -m pytest -q": Skip("the test suite itself, which holds this test (CI runs it)"),
    'python -m pytest -q -m "not slow"': Skip("the test suite less its slow tests (CI runs all)"),
    "conda env create -f environment.yml": Skip("creates a conda environment (downloads)"),
    "conda activate fst": Skip("activates that conda environment"),
    # ---- README.md: everyday commands
    "python train.py sparsity=srste trainer.epochs=5 model.width=32": Run(SHRINK),
    "python train.py resume=auto": Run(
        # continues `python train.py` above (same settings) for one more epoch
        "trainer.epochs=2 trainer.limit_train_batches=2 trainer.limit_val_batches=1",
        group="everyday",
    ),
    "python eval.py checkpoint=outputs/digits_resnet18_fst/seed0/DATE export=digits_fst_24.pt": Run(
        sub={"outputs/digits_resnet18_fst/seed0/DATE": LATEST_DIGITS}, group="everyday"
    ),
    "python train.py -m sparsity=dense,srste,fst seed=0,1": Run(
        f"{SHRINK} seed=0", group="compare"
    ),
    "python scripts/compare.py outputs/multirun/DATE": Run(
        sub={"outputs/multirun/DATE": LATEST_SWEEP}, group="compare"
    ),
    "python scripts/compare.py RUN_DIR...": Same(
        "python scripts/compare.py outputs/multirun/DATE", {"RUN_DIR...": "outputs/multirun/DATE"}
    ),
    "python train.py --help": Run(),
    "wandb sweep configs/wandb_sweep.yaml": Skip("creates a sweep on the W&B service (network)"),
    "wandb agent ENTITY/fst/SWEEP_ID": Skip("runs a W&B sweep's agent (network, an account)"),
    "python train.py sparsity=fst seed=1 logger.wandb.mode=online ...": Skip(
        "the W&B agent's command, online; tests/logging/test_wandb_sweep.py runs it offline"
    ),
    # ---- the paper's experiments (ImageNet commands on the tiny ImageFolder tree)
    FST18: Run(IMAGENET, group="fst_resnet18"),
    "python train.py +experiment=fst_resnet50 data.root=/data/imagenet": Run(IMAGENET),
    "python train.py -m +sweep=table1 data.root=/data/imagenet": Run(
        f"{IMAGENET} {ONE_SEED} " + sweep("experiment", "table1_resnet18_dense,table1_resnet18_gx")
    ),
    "python train.py -m +sweep=table3 data.root=/data/imagenet": Run(
        f"{IMAGENET} {ONE_SEED} "
        + sweep("experiment", "table3_resnet18_dense,table3_resnet50_dpf"),
        group="table3",
    ),
    "python train.py -m +sweep=table5 data.root=/data/imagenet": Run(
        f"{IMAGENET} {ONE_SEED} "
        + sweep("experiment", "table5_resnet18_fst_noir,table5_resnet18_fst")
    ),
    "python train.py +experiment=table5_resnet18_fst_noir data.root=/data/imagenet": Run(IMAGENET),
    "python train.py +experiment=table3_resnet18_asp sparsity.dense_epochs=0 "
    "model.pretrained=<its last.pt> data.root=...": Run(
        IMAGENET,
        sub={
            "<its last.pt>": "$(ls outputs/multirun/*/table3_resnet18_dense/seed0/checkpoints/last.pt)",
            "data.root=...": "",
        },
        group="table3",
    ),
    # ---- library and benchmarks
    "python scripts/bench_step.py --model resnet18 --batch 32 --res 224 --strategies dense,fst "
    "--backend native": Run("--batch 2 --res 32 --steps 1 --warmup 0"),
    "python scripts/bench_step.py --model resnet18 --batch 32 --res 224 --strategies dense,fst "
    "--compile": Skip(
        "compiles ResNet-18 twice with inductor (2 min even shrunk); its code path runs in "
        "tests/analysis/test_bench_step.py with AOTAutograd's eager backend"
    ),
    f"{FST18} data.loader=pil": Run(IMAGENET, group="fst_resnet18"),
    f"{FST18} data.decode_device=cuda": Skip(GPU),
    "python scripts/bench_data.py --workers 0,1,2": Run("--tiny --workers 0"),
    "python scripts/bench_data.py --device cuda --workers 0,4,8,16 --model resnet50 "
    "--step-batch 256 --amp bf16 --channels-last --out results/gpu/bench_data.json": Skip(GPU),
    # ---- vision transformers
    "python train.py +experiment=vit_deit_tiny_fst data.root=/data/imagenet": Run(
        f"{IMAGENET} model.patch_size=8"
    ),
    "python train.py +experiment=vit_deit_tiny_dense data.root=/data/imagenet": Run(
        f"{IMAGENET} model.patch_size=8"
    ),
    "python train.py +experiment=vit_deit_small_mvue data.root=/data/imagenet": Run(
        f"{IMAGENET} model.patch_size=8 model.depth=2"
    ),
    "python train.py +experiment=vit_base_fst data.root=/data/imagenet": Run(
        f"{IMAGENET} model.patch_size=8 model.depth=1"
    ),
    VIT_SWEEP: Run(f"{SHRINK} {ONE_SEED} " + sweep("sparsity", "dense,fst"), group="vit_digits"),
    VIT_TABLE: Run("--out outputs/vit_table", group="vit_digits"),  # results/ only when asked
    "python scripts/bench_vit.py --what mlp --backend sparse24 --strategy mvue --device cuda "
    "--out results/gpu": Skip(GPU),
    "python scripts/bench_vit.py --what block --backend sparse24 --strategy mvue --device cuda "
    "--out results/gpu": Skip(GPU),
    "python scripts/bench_vit.py --what step --model deit_small_patch16_224 --batch 128 "
    "--backend sparse24 --strategy fst --device cuda --out results/gpu": Skip(GPU),
    "python -m pytest -m gpu": Run("-q -p no:cacheprovider"),  # every GPU test skips on a CPU
    # ---- runs, logs, checkpoints
    "python eval.py checkpoint=outputs/fst_resnet18/seed0/DATE/checkpoints/best.pt "
    "export=fst_resnet18_24.pt": Run(
        sub={"outputs/fst_resnet18/seed0/DATE/": LATEST_FST18}, group="fst_resnet18"
    ),
    "python eval.py checkpoint=outputs/fst_resnet18/seed0/DATE weights=fst_resnet18_24.pt": Run(
        sub={"outputs/fst_resnet18/seed0/DATE": LATEST_FST18}, group="fst_resnet18"
    ),
    "python eval.py checkpoint=... data=imagenet data.root=/other/imagenet": Run(
        "data.root={imagefolder} data.image_size=16 data.resize_size=18",
        sub={"checkpoint=...": f"checkpoint={LATEST_FST18}"},
        group="fst_resnet18",
    ),
    "python train.py --cfg job": Run(),
    "torchrun --nproc_per_node=N train.py +experiment=fst_resnet18 data.root=/data/imagenet": Run(
        IMAGENET,
        sub={"--nproc_per_node=N": "--standalone --nproc_per_node=2"},
        group="fst_resnet18",
    ),
    'pip install -e ".[slurm]"': Skip(PIP),
    "python train.py -m hydra/launcher=submitit_slurm hydra.launcher.partition=gpu "
    "hydra.launcher.gpus_per_node=8 hydra.launcher.tasks_per_node=8 "
    "hydra.launcher.timeout_min=4320 +sweep=table5 data.root=/data/imagenet": Skip(SLURM),
    # ---- GPU
    "python train.py +experiment=fst_resnet50 data.root=/data/imagenet backend=sparse24 "
    "trainer.precision=bf16 trainer.channels_last=true": Skip(GPU),
    "bash scripts/gpu_wheels.sh": Skip("downloads wheels from PyPI (network)"),
    "bash scripts/gpu_suite.sh OUT --part tests": Skip(GPU),
    "bash scripts/gpu_suite.sh OUT --part bench": Skip(GPU),
    "wandb sync <run dir>/wandb/offline-run-*": Skip("uploads to the W&B service (network)"),
    "wandb login": Skip("logs in to the W&B service (network, an account)"),
    # ---- detection
    **{
        f"python train.py +experiment=table4_{m}_{d}_{s} data.root=/data/{root} "
        f"model.backbone_weights=/weights/{w}": Skip(VOC_COCO)
        for m, w in (("ssd300_vgg16", "vgg16_features.pth"), ("fasterrcnn_r50_fpn", "resnet50.pth"))
        for d, root in (("voc", "VOCdevkit"), ("coco", "coco"))
        for s in ("dense", "fst")
    },
    "torchrun --nproc_per_node=8 train.py ...": Skip(f"a Table 4 recipe on 8 GPUs; {VOC_COCO}"),
    "OMP_NUM_THREADS=1 python train.py +experiment=table4_fasterrcnn_r50_fpn_shapes_dense": Run(
        DETECTION, group="shapes"
    ),
    "OMP_NUM_THREADS=1 python train.py +experiment=table4_fasterrcnn_r50_fpn_shapes_fst": Run(
        DETECTION, group="shapes"
    ),
    "python train.py +experiment=table4_ssd300_vgg16_shapes_fst": Run(DETECTION, group="shapes"),
    "python train.py +experiment=table4_fasterrcnn_r50_fpn_voc_fst data=shapes model.min_size=128 "
    "model.max_size=128 trainer.epochs=1 trainer.limit_train_batches=5": Run(
        DETECTION, group="shapes"
    ),
    # ---- detection with MMDetection
    "bash scripts/install_mmdet.sh": Skip(
        "builds mmcv from source and installs packages (.ci/run runs it before the tests)"
    ),
    "python scripts/mmdet_train.py configs/mmdet/table4_faster-rcnn_r50_fpn_shapes_fst.py": MMDET,
    "python scripts/mmdet_train.py CONFIG": Same(
        "python scripts/mmdet_train.py configs/mmdet/table4_faster-rcnn_r50_fpn_shapes_fst.py",
        {"CONFIG": "configs/mmdet/table4_faster-rcnn_r50_fpn_shapes_fst.py"},
    ),
    # steps of scripts/install_mmdet.sh named in docs/mmdet.md
    "pip download --no-binary": Skip(PIP),
    "pip wheel --no-build-isolation": Skip(PIP),
    "pip wheel": Skip(PIP),
    'pip install -e ".[mmdet]"': Skip(PIP),
    "OMP_NUM_THREADS=1 python scripts/mmdet_train.py "
    "configs/mmdet/table4_faster-rcnn_r50_fpn_shapes_dense.py --work-dir outputs/mmdet_results/"
    "dense --cfg-options train_dataloader.dataset.num_train=400 "
    "val_dataloader.dataset.num_train=400": MMDET,
    # ---- the paper's analyses and the embedded tables
    "python scripts/make_tables.py RUN_DIR... --suffix _digits": Same(
        "python scripts/make_tables.py outputs/embedded_tables --suffix _digits",
        {"RUN_DIR...": "outputs/embedded_tables"},
    ),
    TABLES: Run(
        f"{SHRINK} seed=0 sparsity=dense,fst trainer.limit_train_batches=2", group="tables"
    ),
    "python scripts/make_tables.py outputs/embedded_tables --suffix _digits": Run(group="tables"),
    TABLES_HARD: Run(f"{SHRINK} seed=0 sparsity=dense,fst", group="tables_hard"),
    "python scripts/make_tables.py outputs/embedded_tables_hard --suffix _digits_hard": Run(
        group="tables_hard"
    ),
    "python train.py -m +sweep=table1 data.root=...": Same(
        "python train.py -m +sweep=table1 data.root=/data/imagenet",
        {"data.root=...": "data.root=/data/imagenet"},
    ),
    # ---- when things go wrong
    "python tests/faults/table.py": Run(),
    "python train.py +experiment=fst_resnet18 resume=auto": Run(
        # the run it continues (the first command of the group) finished its epoch: one more
        f"{IMAGENET.replace('data.root={imagefolder} ', '')} trainer.epochs=2",
        group="fst_resnet18",
    ),
    "srun python train.py ... hydra.run.dir=runs/my_run resume=auto": Skip(SLURM),
    "[ $? -eq 75 ]": Skip(SLURM),
    # ---- docs/faults.md
    "srun torchrun --nproc_per_node=8 train.py ... hydra.run.dir=runs/my_run resume=auto": Skip(
        SLURM
    ),
    "[ -e runs/my_run/PREEMPTED ]": Skip(SLURM),
    'scontrol requeue "$SLURM_JOB_ID"': Skip(SLURM),
    # ---- paper vs released code
    "python train.py +experiment=table5_released data.root=/data/imagenet": Run(IMAGENET),
    "python train.py +experiment=table5_resnet18_fst data.root=/data/imagenet": Run(IMAGENET),
    "python train.py -m +sweep=table5_paper_vs_release": Run(
        f"{SHRINK} {ONE_SEED}",  # 8 configurations of a few steps
        group="release",
    ),
    # ---- results/README.md
    "python scripts/fig2_macs.py": Run(),
    "OMP_NUM_THREADS=1 python scripts/table2_mask_timing.py --cpu-batch 32": Run(
        "--cpu-batch 2 --repeats 1"
    ),
    "OMP_NUM_THREADS=1 python scripts/table6_overhead.py --cpu-batch 16": Run(
        "--cpu-batch 2 --res 32 --repeats 1"
    ),
    "python scripts/fig4_entropy.py": Run("--images 2 --batch 2"),
    "python scripts/fig5_features.py": Run("--images 1"),
    "OMP_NUM_THREADS=1 python train.py +experiment=table4_fasterrcnn_r50_fpn_shapes_dense "
    "trainer.progress_bar=false": Same(
        "OMP_NUM_THREADS=1 python train.py +experiment=table4_fasterrcnn_r50_fpn_shapes_dense"
    ),
    "OMP_NUM_THREADS=1 python train.py -m +sweep=table5_paper_vs_release": Same(
        "python train.py -m +sweep=table5_paper_vs_release"
    ),
    "OMP_NUM_THREADS=1 python train.py -m +experiment=table5_released_digits seed=0,1,2": Run(
        f"{SHRINK} seed=0", group="release"
    ),
    "python scripts/table5_paper_vs_release.py outputs/multirun": Run(group="release"),
    "OMP_NUM_THREADS=1 python train.py -m $COMMON sparsity=meprop,resprop,dense,srste,tsm,fst2": Run(
        f"{SHRINK} seed=0 sparsity=meprop", group="tables_hard"
    ),
    "OMP_NUM_THREADS=1 python train.py -m $COMMON sparsity=dpf,rigl,asfp,asp,fst_noir,fst": Run(
        f"{SHRINK} seed=0 sparsity=rigl", group="tables_hard"
    ),
    "python scripts/make_tables.py outputs/embedded_tables_hard --suffix _digits_hard "
    "--tables table3 table5": Run(group="tables_hard"),
    "OMP_NUM_THREADS=1 python train.py -m +experiment=vit_digits_fst trainer.progress_bar=false "
    "trainer.save_checkpoints=false output_root=outputs/vit_digits "
    "sparsity=dense,srste,tsm,fst2,fst_noir,fst seed=0,1,2": Run(
        f"{SHRINK} seed=0 sparsity=srste", group="vit_digits"
    ),
    "OMP_NUM_THREADS=1 python train.py -m +experiment=vit_digits_fst trainer.progress_bar=false "
    "trainer.save_checkpoints=false output_root=outputs/vit_digits "
    "sparsity=mvue,fst_released,wg,wx,gg,gx seed=0,1,2": Run(
        f"{SHRINK} seed=0 sparsity=mvue", group="vit_digits"
    ),
    f"OMP_NUM_THREADS=1 {VIT_TABLE}": Same(VIT_TABLE),
    # ---- issue 24: the discriminating Table 1 run and the gradient fidelity analysis
    "OMP_NUM_THREADS=1 python train.py -m $COMMON sparsity=dense,wx,gg": Run(
        f"{SHRINK} seed=0 sparsity=gg", group="t1_discriminating"
    ),
    "OMP_NUM_THREADS=1 python train.py -m $COMMON sparsity=gx,fst_noir,fst": Run(
        f"{SHRINK} seed=0 sparsity=fst", group="t1_discriminating"
    ),
    "python scripts/make_tables.py outputs/table1_discriminating --suffix _discriminating "
    "--tables table1 table5": Run(group="t1_discriminating"),
    # named in results/README.md's table, above the commands that make its runs: the same
    # command as the block's last line, writing results/ (not run: the block's line runs)
    "python scripts/make_tables.py outputs/table1_discriminating --suffix _discriminating "
    "--tables table1 table5 --out results": Same(
        "python scripts/make_tables.py outputs/table1_discriminating --suffix _discriminating "
        "--tables table1 table5",
        {" --out results": ""},
    ),
    "python scripts/gradient_fidelity.py": Run(FIDELITY_SHRINK),
    "OMP_NUM_THREADS=1 python scripts/gradient_fidelity.py --cases resnet18_init resnet18_photos "
    "deit_tiny_init vit_digits_init vit_digits_trained --vit-seeds 3 --out outputs/gf_full": Run(
        FIDELITY_SHRINK, group="fidelity"
    ),
    "OMP_NUM_THREADS=1 python scripts/gradient_fidelity.py --cases resnet18_init resnet18_photos "
    "deit_tiny_init --first-seed 1 --out outputs/gf_seed1": Run(FIDELITY_SHRINK, group="fidelity"),
    "python scripts/gradient_fidelity.py --from-csv outputs/gf_full outputs/gf_seed1 --cases "
    "resnet18_init resnet18_photos deit_tiny_init vit_digits_init vit_digits_trained --out results": Run(
        f"{FIDELITY_SHRINK} --out outputs/analysis",
        group="fidelity",  # results/ only when asked
    ),
    "python train.py -m +sweep=vit_digits output_root=outputs/vit_digits": Same(VIT_SWEEP),
}


# ------------------------------------------------------------------------------------------
# The tests.


def test_every_readme_command_is_declared():
    """Each README command has an entry (run, same as another, or skipped with a reason), and
    each entry is still in a README."""
    found = {c.text: c for c in all_commands()}
    missing = [f"{c.source}: {t}" for t, c in found.items() if t not in COMMANDS]
    assert not missing, "README commands without an entry in COMMANDS:\n" + "\n".join(missing)
    stale = sorted(set(COMMANDS) - set(found))
    assert not stale, "COMMANDS entries no README holds any more:\n" + "\n".join(stale)
    for text, how in COMMANDS.items():
        if isinstance(how, Same):
            other = COMMANDS.get(how.of)
            assert isinstance(other, Run), (text, how.of)
            for old, new in how.sub.items():
                text = text.replace(old, new)
            shrunk = {w.split("=")[0] for w in other.add.split() if "=" in w}
            assert _words(text, shrunk) == _words(how.of, shrunk), f"{text!r} vs {how.of!r}"


def _words(cmd: str, shrunk: set[str]) -> list[str]:
    """``cmd``'s words less the thread setting and the overrides the shrinking sets anyway."""
    return [w for w in cmd.split() if w != "OMP_NUM_THREADS=1" and w.split("=")[0] not in shrunk]


def test_extraction(tmp_path):
    """Fenced bash lines (continuations joined, comments dropped, block variables kept),
    inline commands (wrapped spans too), ``&&`` parts; not Python blocks or prose spans."""
    md = tmp_path / "README.md"
    md.write_text(
        "Run `python train.py\n  --cfg job` or `OMP_NUM_THREADS=1`, `wandb` or `train.py`.\n\n"
        '```bash\n# a comment\nA="x y"\npython a.py \\\n  --b 1   # trailing\n'
        "pip install c && python d.py\n```\n\n"
        "- item\n\n  ```python\n  x = `python no.py`\n  ```\n\n"
        "  ```bash\n  bash e.sh OUT\n  ```\n"
    )
    got = [(c.text, c.env) for c in readme_commands(md)]
    assert got == [
        ("python train.py --cfg job", ()),
        ("python a.py --b 1", ('A="x y"',)),
        ("pip install c", ('A="x y"',)),
        ("python d.py", ('A="x y"',)),
        ("bash e.sh OUT", ()),
    ]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A clone of this checkout with its uncommitted changes (tracked and untracked files that
    are not ignored) copied over and committed there, so that its ``git status`` is clean."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    dest = tmp_path_factory.mktemp("readme") / "fst"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    git = ["git", "-C", str(ROOT)]
    changed = subprocess.run(
        [*git, "ls-files", "-z", "--modified", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for rel in filter(None, changed):
        src, dst = ROOT / rel, dest / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        elif dst.exists():  # deleted in the worktree
            dst.unlink()
    if _porcelain(dest):  # commit them in the clone: any later change then shows
        ident = ["-c", "user.name=test", "-c", "user.email=test@localhost"]
        subprocess.run(["git", "-C", str(dest), "add", "-A"], check=True)
        subprocess.run(
            ["git", "-C", str(dest), *ident, "commit", "-qm", "uncommitted changes"], check=True
        )
    assert _porcelain(dest) == ""
    return dest


def _porcelain(repo: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=all"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def _shell(cmd: Command, how: Run, values: dict[str, str]) -> str:
    text = cmd.text
    for old, new in how.sub.items():
        assert old in text, (old, text)
        text = text.replace(old, new.format(**values))
    # block variables as statements of their own: `A=x cmd $A` would expand $A before A is set
    run = " ".join([text, how.add.format(**values)]).replace("  ", " ")
    return "; ".join([*cmd.env, run])


def test_readme_commands_run_and_leave_the_checkout_unchanged(clone, tmp_path_factory):
    values = {"imagefolder": str(make_imagefolder(tmp_path_factory.mktemp("imagefolder")))}
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(clone),
        OMP_NUM_THREADS="1",
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        FST_CACHE=str(tmp_path_factory.mktemp("fst_cache")),
        PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
    )
    env.pop("WANDB_API_KEY", None)
    groups: dict[str, list[Command]] = {}
    seen: set[str] = set()
    for cmd in all_commands():
        how = COMMANDS[cmd.text]
        if isinstance(how, Run) and cmd.text not in seen:
            seen.add(cmd.text)
            groups.setdefault(how.group or cmd.text, []).append(cmd)

    def run_group(cmds: list[Command]) -> list[str]:
        failures = []
        for cmd in cmds:
            line = _shell(cmd, COMMANDS[cmd.text], values)
            t0 = time.monotonic()
            proc = subprocess.run(
                ["bash", "-c", line],
                cwd=clone,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            took = time.monotonic() - t0
            print(f"[{took:5.1f} s] rc={proc.returncode} {cmd.source}: {line}", flush=True)
            if proc.returncode != 0:
                out = (proc.stdout + proc.stderr)[-3000:]
                failures.append(f"{cmd.source}: `{line}` exited {proc.returncode}:\n{out}")
                break  # later commands of the group read this one's output
        return failures

    # Two groups at a time: independent groups write different run names or output roots.
    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for fs in pool.map(run_group, groups.values()) for f in fs]
    assert not failures, "\n\n".join(failures)
    changed = _porcelain(clone)
    assert changed == "", f"README commands changed the checkout:\n{changed}"
