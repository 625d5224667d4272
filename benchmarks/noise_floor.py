"""Noise floor: which settings and which CPU kernels change a run's bytes, and by how much.

    python benchmarks/noise_floor.py [--sections train,speed,synth,cohort] [--epochs 2] [--fold 0]
        [--preprocessed data/preprocessed] [--splits data/splits] [--params params.yaml] [--workdir DIR]

Run from the repository root (or any folder with params.yaml, the preprocessed data and the splits).
Every measurement runs in a fresh child process, so environment variables that are read once at
library load (OMP_NUM_THREADS, ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS,
NPY_DISABLE_CPU_FEATURES, OPENBLAS_CORETYPE) take effect; "default" means the inherited environment,
printed in the header. One child runs at a time. Sections:

- train: one fold trained with ``--epochs`` epochs (patience off) under several settings: repeats,
  1 vs 2 torch threads, bfloat16 autocast vs float32, kernel caps, deterministic algorithms. Each run
  is compared with the reference run of its precision: SHA-256 of best.pt and of the per-epoch
  history, the largest difference of the inner-validation probabilities at the last epoch, the best
  epoch and its inner-validation AUC.
- speed: training steps on random tensors, bf16 / float32 / 1 / 2 threads / deterministic, in one
  process, in alternating rounds (a loaded machine slows all of them alike); reports ratios.
- synth: five synthetic subjects written under numpy / OpenBLAS dispatch caps: are the .nii.gz bytes
  and the decoded voxels the same? Plus single numpy functions under the same caps, and zlib.
- cohort: the default cohort (params.yaml's synthesize section, one worker) and its preprocessing with
  the inherited environment and with OPENBLAS_CORETYPE removed (OpenBLAS then picks kernels from CPUID),
  hashed as DVC hashes a folder, against the hashes the committed dvc.lock records.

Prints Markdown tables. The train section (12 runs of 2 epochs) takes about 12 minutes on 2 busy cores, the
others about 5 together. Bit-identity is settled by the first steps; more epochs only widen the differences.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

# Variables read once at library load that decide threads and kernels: shown in the header as inherited.
KNOBS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "ONEDNN_MAX_CPU_ISA",
    "ATEN_CPU_CAPABILITY",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_CBWR",
    "NPY_DISABLE_CPU_FEATURES",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
)

# The stages whose output folders the cohort section hashes, and the output each stage records in dvc.lock.
COHORT_OUTPUTS = {"synthetic": ("synthesize", "data/synthetic"), "preprocessed": ("preprocess", "data/preprocessed")}


def recorded_hashes(lock_path: Path = Path("dvc.lock")) -> dict[str, tuple[str, int]]:
    """(md5 without .dir, size) of data/synthetic and data/preprocessed as the committed dvc.lock records them."""
    import yaml

    stages = yaml.safe_load(lock_path.read_text())["stages"] if lock_path.is_file() else {}
    recorded = {}
    for name, (stage, path) in COHORT_OUTPUTS.items():
        for out in stages.get(stage, {}).get("outs", []):
            if out["path"] == path:
                recorded[name] = (out["md5"].removesuffix(".dir"), out["size"])
    return recorded


# -- helpers --------------------------------------------------------------------------------------


def sha(data: bytes, n: int = 12) -> str:
    return hashlib.sha256(data).hexdigest()[:n]


def dvc_dir_hash(folder: Path) -> tuple[str, int, int]:
    """(md5 without ``.dir``, total size, number of files) that DVC records for ``folder`` as an output, from its files
    (``dvc_data``'s own hashing, DVC's library: no repository needed, nothing written)."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as scratch:
        _, meta, tree = build(HashFileDB(fs, scratch), os.fspath(folder), fs, "md5", dry_run=True)
    return tree.hash_info.value.removesuffix(".dir"), meta.size, meta.nfiles


def run_child(kind: str, spec: dict, env: dict | None = None, cwd: str | None = None) -> dict:
    """Run this script as ``--child kind`` in a fresh process: the inherited environment with ``env`` applied
    (a value of None removes the variable)."""
    child_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            child_env.pop(key, None)
        else:
            child_env[key] = value
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = f.name
    spec = {**spec, "result": result_path}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--spec", json.dumps(spec)]
    done = subprocess.run(command, env=child_env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"child {kind} {env} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result = json.loads(Path(result_path).read_text())
    os.unlink(result_path)
    return result


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def env_text(env: dict) -> str:
    return " ".join(f"{k}={v}" if v is not None else f"unset {k}" for k, v in env.items()) or "-"


def numpy_caps() -> dict[str, str]:
    """NPY_DISABLE_CPU_FEATURES values that switch off numpy's AVX512 and AVX512 + AVX2 dispatch targets
    (the names depend on the numpy version: X86_V4 / AVX512_ICL in numpy 2.4, AVX512F / AVX512_SKX before)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__ as dispatch
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_dispatch__ as dispatch
    avx512 = [f for f in dispatch if f.startswith(("AVX512", "X86_V4"))]
    avx2 = avx512 + [f for f in dispatch if f in ("X86_V3", "AVX2", "FMA3", "AVX", "F16C")]
    return {"AVX512 off": " ".join(avx512), "AVX512+AVX2 off": " ".join(avx2)}


def blas_core() -> str:
    """The kernels numpy's OpenBLAS picked in this process (OpenBLAS chooses by CPUID family and flags at load)."""
    import numpy  # noqa: F401
    from threadpoolctl import threadpool_info

    return ",".join(str(i.get("architecture")) for i in threadpool_info() if i["user_api"] == "blas")


# -- children -------------------------------------------------------------------------------------


def child_train(spec: dict) -> dict:
    import numpy as np
    import torch

    from gliomil import params as P
    from gliomil.data.bags import BagSet
    from gliomil.data.folds import FoldSplit
    from gliomil.runtime.device import autocast_dtype, default_device, precision_name
    from gliomil.training.loop import TrainConfig, train_fold

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    if spec["deterministic"]:
        torch.use_deterministic_algorithms(True)
    params = P.load_params(spec["params"])
    train = dict(P.section(params, "train"))
    train.update(epochs=spec["epochs"], patience=10**6, amp=spec["amp"])
    top = {key: P.value(params, key) for key in ("seed", "label_smoothing", "use_class_weights")}
    config = TrainConfig.from_settings(top, train)
    split = FoldSplit.read(Path(spec["splits"]) / f"fold_{spec['fold']}.json")
    train_set = BagSet.load(spec["preprocessed"], split.train)
    val_set = BagSet.load(spec["preprocessed"], split.inner_val)

    ticks, probabilities = [time.perf_counter()], []

    def on_epoch(epoch, logged, val_scores):
        ticks.append(time.perf_counter())
        probabilities.append(val_scores.probabilities.tolist())

    checkpoint = Path(spec["workdir"]) / "best.pt"
    result = train_fold(config, spec["fold"], train_set, val_set, checkpoint, log=lambda _: None, on_epoch=on_epoch)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    tensors = b"".join(t.numpy().tobytes() for t in state.values())
    return {
        "precision": precision_name(autocast_dtype(default_device(), spec["amp"])),
        "threads": torch.get_num_threads(),
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": blas_core(),
        "best_pt": sha(checkpoint.read_bytes()),
        "weights": sha(tensors),
        "history": sha(json.dumps(result.history, sort_keys=True).encode()),
        "last_probabilities": probabilities[-1],
        "best_epoch": result.best_epoch,
        "best_auc": result.best["auc"],
        "last_auc": result.history[-1]["val/auc"],
        "last_loss": result.history[-1]["val/loss"],
        "epoch_seconds": float(np.median(np.diff(ticks))),
    }


def child_speed(spec: dict) -> dict:
    from functools import partial

    import torch

    from gliomil import params as P
    from gliomil.training.loop import TrainConfig, train_step
    from gliomil.training.losses import mil_loss

    params = P.load_params(spec["params"])
    top = {key: P.value(params, key) for key in ("seed", "label_smoothing", "use_class_weights")}
    config = TrainConfig.from_settings(top, P.section(params, "train"))
    size = P.value(params, "preprocess.image_size")
    torch.manual_seed(0)
    x = torch.randn(config.batch_size * config.bag_size, 4, size, size)
    sizes = [config.bag_size] * config.batch_size
    y = torch.tensor([1, 0] * (config.batch_size // 2) + [1] * (config.batch_size % 2))
    loss_fn = partial(mil_loss, label_smoothing=config.label_smoothing)
    configs = {
        "bf16, 2 threads": (torch.bfloat16, 2, False),
        "float32, 2 threads": (None, 2, False),
        "bf16, 1 thread": (torch.bfloat16, 1, False),
        "float32, 1 thread": (None, 1, False),
        "bf16, 2 threads, deterministic": (torch.bfloat16, 2, True),
        "float32, 2 threads, deterministic": (None, 2, True),
    }
    models = {}
    for name in configs:
        model = config.model.build().train()
        models[name] = (model, torch.optim.Adam(model.parameters(), lr=config.lr))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    seconds = {name: [] for name in configs}
    for round_ in range(spec["rounds"] + 1):  # round 0 warms up
        for name, (dtype, threads, deterministic) in configs.items():
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic)
            model, optimizer = models[name]
            tick = time.perf_counter()
            for _ in range(spec["steps"]):
                train_step(model, optimizer, scaler, loss_fn, x, sizes, y, dtype)
            if round_:
                seconds[name].append((time.perf_counter() - tick) / spec["steps"])
    return {name: [len(x) / s for s in values] for name, values in seconds.items()}


NUMPY_FUNCTIONS = ("exp", "log", "sin", "cos", "tanh", "sqrt", "power", "sum", "matmul")


def child_numpy(spec: dict) -> dict:
    import numpy as np
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    out = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for dtype in (np.float32, np.float64):
            x = (rng.standard_normal(200_000) * 3).astype(dtype)
            a = np.abs(x) + dtype(0.5)
            m = x[: 256 * 256].reshape(256, 256)
            results = {
                "exp": np.exp(x),
                "log": np.log(a),
                "sin": np.sin(x),
                "cos": np.cos(x),
                "tanh": np.tanh(x),
                "sqrt": np.sqrt(a),
                "power": np.power(a, dtype(2.5)),
                "sum": np.array(x.sum()),
                "matmul": m @ m,
            }
            for name, values in results.items():
                out[f"{name} {np.dtype(dtype).name}"] = sha(np.ascontiguousarray(values).tobytes())
    return {"hashes": out, "blas": blas_core()}


def child_synth(spec: dict) -> dict:
    from gliomil.synthetic.cohort import synthesize_cohort

    tick = time.perf_counter()
    synthesize_cohort(spec["out"], n_hgg=spec["n_hgg"], n_lgg=spec["n_lgg"], shape=spec["shape"], seed=spec["seed"])
    return {"seconds": time.perf_counter() - tick}


def child_cohort(spec: dict) -> dict:
    """Synthesize and preprocess the default cohort into the current folder (data/synthetic, data/preprocessed)."""
    from gliomil import params as P
    from gliomil.data.brats import find_subjects
    from gliomil.data.preprocess import PreprocessSettings, preprocess_cohort
    from gliomil.synthetic.cohort import synthesize_cohort

    params = P.load_params(spec["params"])
    synth, options = P.section(params, "synthesize"), P.section(params, "preprocess")
    tick = time.perf_counter()
    synthesize_cohort("data/synthetic", synth["n_hgg"], synth["n_lgg"], tuple(synth["shape"]), synth["seed"])
    settings = PreprocessSettings(
        image_size=options["image_size"],
        clip_percentiles=options["clip_percentiles"],
        min_brain_fraction=options["min_brain_fraction"],
    )
    subjects = find_subjects("data/synthetic", "auto")
    preprocess_cohort(subjects, Path("data/preprocessed"), settings, P.section(params, "data.suffixes"), progress=False)
    return {
        "seconds": time.perf_counter() - tick,
        "blas": blas_core(),
        "synthetic": dvc_dir_hash(Path("data/synthetic")),
        "preprocessed": dvc_dir_hash(Path("data/preprocessed")),
    }


CHILDREN = {
    "train": child_train,
    "speed": child_speed,
    "numpy": child_numpy,
    "synth": child_synth,
    "cohort": child_cohort,
}


# -- sections -------------------------------------------------------------------------------------


def section_train(args, workdir: Path) -> None:
    import numpy as np

    avx2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    runs = [  # label, amp, threads, deterministic, env
        ("bf16 #1 (reference)", True, 2, False, {}),
        ("bf16 #2", True, 2, False, {}),
        ("bf16 #3", True, 2, False, {}),
        ("bf16, 1 thread", True, 1, False, {}),
        ("bf16, oneDNN without BF16 ISA", True, 2, False, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}),
        ("bf16, OpenBLAS auto-detected", True, 2, False, {"OPENBLAS_CORETYPE": None}),
        ("bf16, deterministic", True, 2, True, {}),
        ("float32 #1 (reference)", False, 2, False, {}),
        ("float32 #2", False, 2, False, {}),
        ("float32, 1 thread", False, 1, False, {}),
        ("float32, oneDNN without BF16 ISA", False, 2, False, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}),
        ("float32, AVX2 everywhere", False, 2, False, avx2),
        ("float32, deterministic", False, 2, True, {}),
    ]
    if args.runs:
        wanted = set(args.runs.split(";"))
        runs = [r for r in runs if r[0] in wanted]
    results, references = [], {}
    for label, amp, threads, deterministic, env in runs:
        run_dir = workdir / f"train_{len(results)}"
        run_dir.mkdir(parents=True, exist_ok=True)
        spec = {
            "params": str(Path(args.params).resolve()),
            "preprocessed": str(Path(args.preprocessed).resolve()),
            "splits": str(Path(args.splits).resolve()),
            "fold": args.fold,
            "epochs": args.epochs,
            "amp": amp,
            "threads": threads,
            "deterministic": deterministic,
            "workdir": str(run_dir),
        }
        tick = time.perf_counter()
        result = run_child("train", spec, env)
        print(f"  {label}: {time.perf_counter() - tick:.0f} s, best.pt {result['best_pt']}", file=sys.stderr)
        results.append((label, env, result))
        references.setdefault(result["precision"], result)
    rows = []
    for label, env, r in results:
        ref = references[r["precision"]]
        diff = np.max(np.abs(np.array(r["last_probabilities"]) - np.array(ref["last_probabilities"])))
        same = "yes" if r["best_pt"] == ref["best_pt"] else "weights only" if r["weights"] == ref["weights"] else "no"
        rows.append(
            [
                label,
                env_text(env),
                r["precision"],
                r["threads"],
                r["blas"],
                r["best_pt"],
                same,
                "yes" if r["history"] == ref["history"] else "no",
                f"{diff:.2e}",
                r["best_epoch"],
                f"{r['best_auc']:.4f}",
                f"{r['last_auc']:.4f}",
                f"{r['last_loss']:.5f}",
                f"{r['epoch_seconds']:.1f}",
            ]
        )
    bf16 = next((r for _, _, r in results if r["precision"] != "float32"), None)
    f32 = references.get("float32")
    print(
        f"\n### Training fold {args.fold}, {args.epochs} epochs, patience off (each run a fresh process)\n\n"
        "Compared with the first run of the same precision: best.pt bytes, the per-epoch history, the largest "
        "|difference| of the inner-validation probabilities after the last epoch.\n"
    )
    header = ["run", "env", "precision", "threads", "OpenBLAS", "best.pt sha256", "same best.pt", "same history"]
    header += ["max abs dp (last epoch)", "best epoch", "best val AUC", "last val AUC", "last val loss", "s/epoch"]
    print(table(header, rows))
    if bf16 is not None and f32 is not None:
        diff = np.max(np.abs(np.array(bf16["last_probabilities"]) - np.array(f32["last_probabilities"])))
        print(f"\nbf16 reference vs float32 reference: max abs dp {diff:.2e} (the scale of a precision change).")


def section_speed(args) -> None:
    spec = {"params": str(Path(args.params).resolve()), "steps": args.speed_steps, "rounds": args.speed_rounds}
    result = run_child("speed", spec)
    base = statistics.median(result["bf16, 2 threads"])
    rows = []
    for name, rates in result.items():
        median = statistics.median(rates)
        rows.append([name, f"{median:.0f}", f"{min(rates):.0f}-{max(rates):.0f}", f"{base / median:.2f}"])
    print(
        f"\n### Training-step speed on random tensors ({args.speed_rounds} alternating rounds of "
        f"{args.speed_steps} steps, after a warm-up round)\n"
    )
    print(table(["configuration", "slices/s (median)", "range", "time relative to bf16, 2 threads"], rows))


def section_synth(args, workdir: Path) -> None:
    import nibabel as nib
    import numpy as np

    caps = numpy_caps()
    variants = {
        "default": {},
        "OpenBLAS auto-detected": {"OPENBLAS_CORETYPE": None},
        "numpy AVX512 off": {"NPY_DISABLE_CPU_FEATURES": caps["AVX512 off"]},
        "numpy AVX512+AVX2 off": {"NPY_DISABLE_CPU_FEATURES": caps["AVX512+AVX2 off"]},
        "OpenBLAS Haswell": {"OPENBLAS_CORETYPE": "Haswell"},
        "OpenBLAS SkylakeX": {"OPENBLAS_CORETYPE": "SkylakeX"},
    }
    spec = {"n_hgg": 3, "n_lgg": 2, "shape": [96, 96, 64], "seed": 42}
    folders, numpy_results = {}, {}
    for name, env in variants.items():
        out = workdir / f"synth_{name.replace(' ', '_').replace('+', '_')}"
        run_child("synth", {**spec, "out": str(out)}, env)
        folders[name] = out
        numpy_results[name] = run_child("numpy", {}, env)
    files = sorted(p.relative_to(folders["default"]) for p in folders["default"].rglob("*.nii.gz"))
    rows = []
    for name, env in variants.items():
        same_bytes = same_arrays = voxels = differing = 0
        max_diff = 0
        for rel in files:
            a_bytes, b_bytes = (folders["default"] / rel).read_bytes(), (folders[name] / rel).read_bytes()
            same_bytes += a_bytes == b_bytes
            a = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(a_bytes)).dataobj)
            b = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(b_bytes)).dataobj)
            same_arrays += np.array_equal(a, b)
            voxels += a.size
            differing += int((a != b).sum())
            max_diff = max(max_diff, int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max()))
        rows.append(
            [
                name,
                env_text(env),
                numpy_results[name]["blas"],
                f"{same_bytes}/{len(files)}",
                f"{same_arrays}/{len(files)}",
                f"{differing} ({100 * differing / voxels:.4f}%)",
                max_diff,
            ]
        )
    print("\n### Synthetic cohort, 3 HGG + 2 LGG, 96 x 96 x 64, seed 42, one worker: each variant against default\n")
    header = ["variant", "env", "OpenBLAS kernels", "same .nii.gz bytes", "same voxels", "voxels differing", "max |d|"]
    print(table(header, rows))
    names = list(variants)
    default = numpy_results["default"]["hashes"]
    rows = [
        [function] + ["=" if numpy_results[n]["hashes"][function] == default[function] else "DIFF" for n in names[1:]]
        for function in default
    ]
    print("\n### Single numpy functions (200 000 values, one BLAS thread): the same bits as the default?\n")
    print(table(["function"] + names[1:], rows))
    print(
        f"\nzlib: compiled {zlib.ZLIB_VERSION}, runtime {zlib.ZLIB_RUNTIME_VERSION} "
        "(gzip level 6 output depends on the zlib implementation: equal voxels with different bytes would mean "
        "the compressor)."
    )


def section_cohort(args, workdir: Path) -> None:
    variants = {"inherited": {}, "auto-detected": {"OPENBLAS_CORETYPE": None}}
    recorded = recorded_hashes()
    rows = []
    for name, env in variants.items():
        cwd = workdir / f"cohort_{len(rows)}"
        (cwd / "data").mkdir(parents=True, exist_ok=True)
        result = run_child("cohort", {"params": str(Path(args.params).resolve())}, env, cwd=str(cwd))
        for stage in ("synthetic", "preprocessed"):
            md5, size, n = result[stage]
            same = "yes" if recorded.get(stage) == (md5, size) else "no"
            rows.append([name, result["blas"], f"data/{stage}", md5, size, n, same])
    print("\n### Default cohort synthesized and preprocessed (one worker each), hashed as DVC does\n")
    print(table(["env", "OpenBLAS kernels", "output", "md5 (.dir)", "bytes", "files", "same as dvc.lock"], rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="train,speed,synth,cohort")
    parser.add_argument("--runs", default="", help="train: only these runs, labels separated by ';'")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--preprocessed", default="data/preprocessed")
    parser.add_argument("--splits", default="data/splits")
    parser.add_argument("--speed-steps", type=int, default=4)
    parser.add_argument("--speed-rounds", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        spec = json.loads(args.spec)
        Path(spec["result"]).write_text(json.dumps(CHILDREN[args.child](spec)))
        return

    import numpy as np
    import torch

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="noise_floor_"))
    workdir.mkdir(parents=True, exist_ok=True)
    info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
    info = {k.strip(): v.strip() for k, v in info.items()}
    cpu, family = info.get("model name", "?"), info.get("cpu family", "?")
    print(
        f"## Noise floor: torch {torch.__version__} ({torch.get_num_threads()} threads by default, ATen "
        f"{torch.backends.cpu.get_cpu_capability()}), numpy {np.__version__}, {os.cpu_count()} CPUs: {cpu} "
        f"(family {family}); inherited: {env_text({k: os.environ[k] for k in KNOBS if k in os.environ})}"
    )
    sections = args.sections.split(",")
    for name in sections:
        tick = time.perf_counter()
        if name == "train":
            section_train(args, workdir)
        elif name == "speed":
            section_speed(args)
        elif name == "synth":
            section_synth(args, workdir)
        elif name == "cohort":
            section_cohort(args, workdir)
        else:
            raise SystemExit(f"unknown section {name!r}")
        print(f"\n({name}: {time.perf_counter() - tick:.0f} s)")


if __name__ == "__main__":
    main()
