"""The GPU benchmark runs end to end (on the CPU, tiny sizes): it is known to work before a GPU
machine runs it once."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


GPU_STEPS = ("wheels", "facts", "iresnet_b256", "iresnet_b1024", "bench_gpu")


@pytest.mark.slow  # IResNet steps in emulated bf16, a tiny model trained three ways, train_hf.py through accelerate
def test_gpu_script_runs_every_step_on_a_cpu_with_tiny_sizes(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    env.pop("OUT", None)
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--cpu", "--out", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (tmp_path / "summary.txt").read_text()
    statuses = {line.split()[0]: line.split()[1] for line in summary.splitlines()}
    assert statuses == dict.fromkeys(GPU_STEPS, "0"), summary
    assert "imports: ok" in (tmp_path / "facts.txt").read_text()
    for name in ("iresnet_b256", "iresnet_b1024"):
        table = (tmp_path / f"{name}.txt").read_text()
        for row in ("bf16 autocast, on cpu", "inference (embedder, no grad)", "training step (whole trunk)", "bf16 GEMM peak"):
            assert row in table, table
    table = (tmp_path / "bench_gpu.txt").read_text()
    for row in ("bf16 GEMM peak", "trunk step alone", "branch step alone", "device-first loader alone, JPEG files",
                "device-first loader alone, prepared Arrow", "train_hf.py path", "accelerate launch train_hf.py"):
        assert row in table, table
    assert "FAILED" not in table and "INTERRUPTED" not in table, table
    assert table.count(" ok ") == 2, table


def _requirement_names(requirements) -> set[str]:
    """Canonical names of the requirements that hold in every environment (no extras, no markers)."""
    names = set()
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is None:
            names.add(canonicalize_name(requirement.name))
    return names


KINDS = Path("/work/.library/device/KINDS.md")


@pytest.mark.skipif(not KINDS.is_file(), reason=f"the device tool's package list ({KINDS}) exists only where the tool does")
def test_gpu_wheels_cover_what_the_gpu_image_lacks():
    kinds = KINDS.read_text()
    listed = kinds[kinds.index("## Python packages already there"):].split("Packages:", 1)[1].split(".\n", 1)[0]
    image = {canonicalize_name(name.strip()) for name in listed.split(",")}
    assert {"torch", "transformers", "accelerate", "numpy"} <= image, listed[:300]
    script = (ROOT / "benchmarks" / "gpu_wheels.sh").read_text()
    block = script[script.index("PACKAGES=(") + len("PACKAGES=("):].split(")", 1)[0]
    pins = dict(line.split("==") for line in block.split())
    wheels = {canonicalize_name(name): version for name, version in pins.items()}
    assert len(wheels) == len(pins), pins  # one version of each: two stop the whole install
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dependencies = {canonicalize_name(Requirement(text).name): Requirement(text) for text in project["dependencies"]}
    missing = set(dependencies) - image
    assert missing and missing <= set(wheels), (missing, sorted(wheels))
    for name in missing:  # the pins meet pyproject.toml's bounds
        assert dependencies[name].specifier.contains(wheels[name]), (name, wheels[name])
    # What the carried packages need in turn (their metadata, where this environment holds the same version).
    for name, version in wheels.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if installed == version:
            needs = _requirement_names(metadata.requires(name) or [])
            assert needs <= image | set(wheels), (name, needs - image - set(wheels))


@pytest.mark.slow  # builds a pack and reads it through a DataLoader, in a subprocess
def test_bench_recordio_runs_with_tiny_sizes():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_recordio.py"), "--tiny", "--threads", "1"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ("read_index, 10000 records", "B a record", "open_pack, 128 images", "loader, RecordIO by offset",
                "loader, prepared Arrow"):
        assert row in done.stdout, done.stdout


def _run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow  # builds flat, IVF-SQ8, IVF-PQ and two HNSW indexes of 10^4 faces in a subprocess
def test_bench_index_runs_tiny():
    done = _run_benchmark("bench_index.py", "--tiny")
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ("flat: IDMap2,Flat", "exact search", "ivfsq8: IVF", ",SQ8", "ivfpq: IVF", "nprobe=1", "hnsw: IDMap2,HNSW32,Flat",
                "hnswsq8: IDMap2,HNSW32,SQ8,RFlat", "efSearch=16"):
        assert row in done.stdout, done.stdout


@pytest.mark.slow  # three subprocesses: a saved HNSW-SQ8 index built, then re-timed from disk with and without refine
def test_ann_build_and_search_run_tiny_and_share_the_saved_truth(tmp_path):
    built = _run_benchmark("ann_build.py", "--tiny", "--factory", "HNSW32,SQ8", "--out", str(tmp_path))
    assert built.returncode == 0, built.stderr[-3000:]
    assert (tmp_path / "tiny" / "HNSW32_SQ8_efC80.faissindex").is_file()
    assert (tmp_path / "tiny" / "gallery_10000x64_q200_truth100.npy").is_file()
    again = _run_benchmark("ann_build.py", "--tiny", "--factory", "IVF16_HNSW32,SQ8", "--out", str(tmp_path))
    assert again.returncode == 0, again.stderr[-3000:]
    index = ",".join(str(tmp_path / "tiny" / name) for name in ("HNSW32_SQ8_efC80.faissindex", "IVF16_HNSW32_SQ8.faissindex"))
    done = _run_benchmark("ann_search.py", "--tiny", "--out", str(tmp_path), "--index", index, "--efSearch", "16,64",
                          "--nprobe", "16", "--k_factor", "0,2", "--repeats", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.strip().split("  ")[0]: line.split() for line in done.stdout.splitlines()}
    assert rows["exact (IndexFlatIP)"][-3:] == ["1.000", "1.000", "1.000"]  # the saved truth is exact search's
    assert "efSearch 64, refine k_factor 2" in rows and float(rows["efSearch 64, refine k_factor 2"][-2]) >= 0.9
    assert float(rows["nprobe 16"][-2]) == 1.0  # every list scanned: only the 8-bit codes can miss, and not at 10


ORIGINAL_REPO = Path("/work/.mirror/gyfastas+CS7319E1G16/repo")
ORIGINAL_PYTHON = Path("/work/orig-venv/bin/python")


@pytest.mark.slow  # five training processes (the original in its own venv, dcr-hf float32 and bf16)
@pytest.mark.skipif(
    not (ORIGINAL_REPO.is_dir() and ORIGINAL_PYTHON.is_file()),
    reason=f"needs the original DCR's git mirror ({ORIGINAL_REPO}) and its venv ({ORIGINAL_PYTHON}), which only the "
    "project's development machine has (not the CI machine)",
)
def test_bench_vs_original_train_runs_with_tiny_sizes():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_vs_original_train.py"), "--tiny",
         "--original_repo", str(ORIGINAL_REPO), "--original_python", str(ORIGINAL_PYTHON)],
        env=env, capture_output=True, text=True, timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout
    rows = {line.split("  ")[0]: line.split() for line in table.splitlines() if line.startswith(("original", "dcr-hf"))}
    assert set(rows) == {"original", "dcr-hf float32", "dcr-hf bf16 (--use_cpu)"}, table
    assert rows["original"][1:4] == [rows["original"][1], rows["original"][1], "1.00x"], table
    for name in ("dcr-hf float32", "dcr-hf bf16 (--use_cpu)"):
        ratio = rows[name][-1]
        assert ratio.endswith("%") and 0 < int(ratio[:-1]) <= 100, table  # end-to-end never beats the step alone
    for shim in ("config.py", "utils/monitor.py", "train.py", "PIL.Image.ANTIALIAS", "mkinit"):
        assert shim in table, table


@pytest.mark.slow  # runs the original's metric code in its own venv
@pytest.mark.skipif(not (ORIGINAL_REPO.exists() and ORIGINAL_PYTHON.exists()),
                    reason="needs the original DCR's repository and its venv (/work/.mirror/..., /work/orig-venv), absent here")
def test_bench_vs_original_metrics_runs_tiny_and_agrees():
    done = _run_benchmark("bench_vs_original_metrics.py", "--tiny", "--repeats", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith(("verification", "retrieval"))}
    assert set(lines) == {"verification", "retrieval"}, done.stdout
    assert all(line.rstrip().endswith("yes") for line in lines.values()), done.stdout


@pytest.mark.slow  # an r18 at 112x112 forward and backward, in a subprocess
def test_bench_iresnet_runs_tiny():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_iresnet.py"), "--tiny"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ("inference (embedder, no grad)", "training step (whole trunk)", "float32 GEMM peak", "r18 IResNet trunk at 112x112"):
        assert row in done.stdout, done.stdout


@pytest.mark.slow  # forks 6 processes, 2 of them gloo pairs
def test_bench_partial_fc_runs_with_tiny_sizes():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_partial_fc.py"), "--tiny"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("1,001 ids")]
    assert [(row[2], row[3]) for row in rows] == [("float32", "replicated"), ("float32", "sharded,"),
                                                   ("bf16", "replicated"), ("bf16", "sharded,")], done.stdout
    for row in rows:
        assert float(row[-1]) > 0 and float(row[-2].replace(",", "")) >= 0  # step ms, step peak MB
    # The shard holds about half the rows: its tensors (weight, gradient, centers) about half the replicated ones.
    replicated, sharded = float(rows[0][-3]), float(rows[1][-3])
    assert sharded == pytest.approx(replicated / 2, rel=0.1)


def test_bench_conv_weight_grad_runs_tiny():
    done = _run_benchmark("bench_conv_weight_grad.py", "--tiny")
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ("Weight gradient of one convolution", "yes", "stock oneDNN weight gradients", "GEMM weight gradients (routed)"):
        assert row in done.stdout, done.stdout
