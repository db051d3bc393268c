"""The kernel command of each stage: the one place that knows how a stage calls its kernel.

command(msg, inputs, out_dir, scratch) -> argv, given the task message, its inputs as local
paths, the directory the task's outputs go to and a scratch directory of the task's own (lists
of many inputs go there as files, so a command line does not grow with the chunks). Each kernel
prints a JSON summary on stdout (--json).
Tasks with resources.ranks > 1 run under MPI: `srun --mpi=pmi2 -n K` inside a Slurm
allocation, the venv's own `mpiexec -n K` elsewhere (the launcher must match mpi4py's library).
"""
import os
import sys

from worker.contract import MPI_STAGES, PART, QUAL_COUNTS, REGION_BAM, REGION_VCF


def _py():
    return sys.executable


def index_prefix(path):
    """An index input is a directory holding ref.gfi.*; the kernels take the prefix."""
    return os.path.join(path, "ref") if os.path.isdir(path) else path


def _as_list(v):
    return list(v) if isinstance(v, (list, tuple)) else [v]




def _list_file(scratch, name, paths):
    """@FILE naming the paths, one per line (the kernels' argparse reads it as arguments)."""
    path = os.path.join(scratch, name)
    with open(path, "w") as f:
        f.write("".join(p + "\n" for p in paths))
    return "@" + path


def command(msg, inputs, out_dir, scratch):
    st, p, t = msg.stage, msg.params, str(max(1, msg.cpus))
    if st == "index":
        argv = [_py(), "-m", "kernels.index", inputs["reference"], os.path.join(out_dir, "ref"), "--json"]
    elif st == "split":
        argv = [_py(), "-m", "kernels.split", inputs["r1"], inputs["r2"], "--pairs", str(p["pairs"]),
                "-o", os.path.join(out_dir, "chunk"), "--json"]
    elif st == "align":
        argv = [_py(), "-m", "kernels.align", index_prefix(inputs["index"]), inputs["r1"], inputs["r2"],
                "--regions", inputs["regions"], "--parts", os.path.join(out_dir, PART),
                "--qual-counts", os.path.join(out_dir, QUAL_COUNTS), "-t", t, "--json", "-q"]
        if p.get("read_group"):
            argv += ["-R", p["read_group"]]
    elif st == "call":
        # the region's records are read from every chunk's part file (only its groups and its
        # neighbours' edges), and the bases near it from the index
        dirs = _as_list(inputs["parts"])       # the align tasks' outputs: part.bam and qual-counts.json each
        argv = [_py(), "-m", "kernels.call", index_prefix(inputs["reference"]),
                "--parts", _list_file(scratch, "parts.txt", [os.path.join(d, PART) for d in dirs]),
                "--regions-bed", inputs["regions"], "--only", f"{p['rows'][0]}-{p['rows'][1]}",
                "-o", os.path.join(out_dir, REGION_VCF), "--bam-out", os.path.join(out_dir, REGION_BAM),
                "-t", t, "--json",
                # the whole sample's quality counts: the same calls in any region
                "--qual-counts", _list_file(scratch, "qual-counts.txt",
                                            [os.path.join(d, QUAL_COUNTS) for d in dirs])]
    elif st == "gather":
        argv = [_py(), "-m", "worker.gather", "-o", out_dir, "--name", p.get("sample", "sample"), "-t", t, "--json",
                "--vcf", _list_file(scratch, "vcfs.txt", _as_list(inputs["vcfs"])),
                "--bam", _list_file(scratch, "bams.txt", _as_list(inputs["bams"]))]
        if inputs.get("parts"):             # the pairs with no position, from every chunk's part file
            argv += ["--unmapped-from", _list_file(scratch, "parts.txt",
                                                   [os.path.join(d, PART) for d in _as_list(inputs["parts"])])]
    else:
        raise ValueError(f"unknown stage {st}")
    if msg.ranks > 1 and st in MPI_STAGES:
        if os.environ.get("SLURM_JOB_ID"):
            argv = ["srun", "--mpi=pmi2", "-n", str(msg.ranks)] + argv
        else:
            argv = [os.path.join(os.path.dirname(_py()), "mpiexec"), "-n", str(msg.ranks)] + argv
    return argv


def kernel_module(stage):
    return {"index": "kernels.index", "split": "kernels.split", "align": "kernels.align",
            "call": "kernels.call", "gather": "worker.gather"}[stage]
