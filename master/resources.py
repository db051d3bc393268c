"""What each task asks the scheduler for: memory (MB) and cores, from a model per stage and the
task's size. The figures are peak resident memory measured in the benchmarks (BENCHMARKS.md,
"Human-genome scale" and "pipeline"), with room added; the memory-mapped index and reference
pages are page cache shared by every task of a node, so a task asks for its own memory only.

    index   the build's buffers (kernels.index.need_mb), whatever the genome
    split   the reader's and the writer's buffers
    align   per MPI rank: the interpreter and the kernels, and a batch's arrays
    call    a fixed part, and the shard's records (its expected reads, and its neighbours' edges)
    gather  the VCF and BAM concatenation's buffers

A task killed for memory is retried once with RETRY_FACTOR times the memory (master.engine).
"""
FIXED_MB = {"index": 0, "split": 400, "align": 900, "call": 450, "gather": 600}
PER_THREAD_MB = {"align": 150, "call": 100}
CALL_BYTES_PER_READ = 600          # a record's bytes, its columns and the sort's copies
CALL_EDGE = 1.15                   # the neighbours' edges read with a shard
HEADROOM = 1.25
RETRY_FACTOR = 2.0


def node_memory_mb(settings):
    """The most memory a task may ask for: the setting, else this machine's."""
    if settings.node_memory_mb:
        return int(settings.node_memory_mb)
    try:
        with open("/proc/meminfo") as f:
            for ln in f:
                if ln.startswith("MemTotal:"):
                    return int(ln.split()[1]) // 1024
    except OSError:
        pass
    return 16384


def stage_memory_mb(stage, threads=1, genome_bases=0, pairs=0.0):
    """The memory a task of this stage asks for (MB)."""
    if stage == "index":
        from kernels.index import need_mb
        base = need_mb(max(genome_bases, 1))
    elif stage == "call":
        base = FIXED_MB["call"] + 2 * pairs * CALL_EDGE * CALL_BYTES_PER_READ / 1e6
    else:
        base = FIXED_MB[stage]
    base += PER_THREAD_MB.get(stage, 0) * max(0, threads - 1)
    return int(base * HEADROOM) + 1


def for_task(stage, threads, genome_bases=0, pairs=0.0, ranks=1):
    """resources of one task: cpus (threads per rank), ranks, memory_mb (per rank)."""
    return {"cpus": int(threads), "ranks": int(ranks),
            "memory_mb": stage_memory_mb(stage, threads, genome_bases, pairs)}


def for_plan(plan, settings, genome_bases):
    """{stage: {memory_mb: the largest request of its tasks, cpus}} for a plan."""
    t = settings.threads
    return {
        "index": {"memory_mb": stage_memory_mb("index", 2, genome_bases), "cpus": 2},
        "split": {"memory_mb": stage_memory_mb("split"), "cpus": 1},
        "align": {"memory_mb": stage_memory_mb("align", t), "cpus": t},
        "call": {"memory_mb": max(stage_memory_mb("call", t, pairs=s.pairs) for s in plan.shards), "cpus": t},
        "gather": {"memory_mb": stage_memory_mb("gather", t), "cpus": t},
    }


def check(res, settings):
    """None when every stage fits on a node, else what does not and what to change."""
    cap = node_memory_mb(settings)
    over = [(st, r["memory_mb"]) for st, r in res.items() if r["memory_mb"] > cap]
    if not over:
        return None
    st, mb = max(over, key=lambda x: x[1])
    hint = "ask for more regions (--regions), or use nodes with more memory" if st == "call" else \
        "use nodes with more memory, or fewer threads per task"
    return f"a {st} task would need {mb:,} MB, more than the {cap:,} MB a node gives (node_memory_mb): {hint}"
