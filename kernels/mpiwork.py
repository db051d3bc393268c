"""Batches of read pairs shared out among MPI ranks: read once, handed to whichever rank asks.

A gzip FASTQ can only be read from its start. If every rank read the whole input and kept its
share, each would pay for reading all of it (on the 400k-pair bench: 1.7 s of 10 per rank with 2
ranks). Instead a thread of rank 0 (the dispatcher) reads the batches, in order, and answers
requests: a rank asks for its next batch while it aligns the current one, and gets
(number, batch), an error to raise (bad input: every rank stops with the same message), or the
end. Rank 0's own main thread takes batches from the dispatcher like the others, so work goes
wherever a core is free: the rank that also reads simply aligns fewer batches. Batch numbers
decide where each batch's records go, so the output does not depend on who aligned what.

Each rank keeps exactly one batch in reserve (asked for when it starts aligning the previous
one): enough to hide the transfer, and no more, so that when the input runs out the ranks
finish within one batch of each other. (With two in reserve on rank 1 and a deeper queue on rank
0, the first rank to finish waited 1.1 s of a 10 s run for the other.)
"""
import os
import queue
import threading
import time

from kernels.errors import InputError

TAG_ASK, TAG_BATCH = 11, 12
POLL_S = 0.001


def world():
    """(comm, rank, size): mpi4py's world when started by mpiexec/srun, else a single rank
    (mpi4py is not even imported then)."""
    launched = any(v in os.environ for v in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_SIZE"))
    if not launched:
        return None, 0, 1
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    return comm, comm.Get_rank(), comm.Get_size()


def batches(open_reader, comm, rank, size):
    """(number, ReadBatch) for this rank, until the input is exhausted. open_reader() makes the
    PairedReader; only rank 0 calls it (so an unreadable input stops every rank alike)."""
    if size == 1:
        with open_reader() as reader:
            yield from reader.batches()
        return
    from mpi4py.util import pkl5
    big = pkl5.Intracomm(comm)    # batches go as pickle-5 out-of-band buffers: the arrays are not copied into a pickle
    if rank == 0:
        local = queue.Queue(maxsize=1)
        disp = threading.Thread(target=_dispatch, args=(open_reader, comm, big, size, local), daemon=True)
        disp.start()
        try:
            while True:
                item = local.get()
                if item is None:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            disp.join()
    else:
        yield from _receive(comm, big)


def _dispatch(open_reader, comm, big, size, local):
    """Rank 0's reader thread: hand each batch to the first consumer ready for one (rank 0's own
    main thread through `local`, or a remote rank that asked), then give every consumer the end
    (None, or the exception that stopped the reading). Each remote rank has exactly one ask
    outstanding at a time, so one end per remote rank closes the exchange."""
    try:
        with open_reader() as reader:
            for item in reader.batches():
                while True:
                    if comm.Iprobe(source=_any(), tag=TAG_ASK):
                        st = _status()
                        comm.recv(source=_any(), tag=TAG_ASK, status=st)
                        big.send(item, dest=st.Get_source(), tag=TAG_BATCH)
                        break
                    try:
                        local.put(item, timeout=0.002)
                        break
                    except queue.Full:
                        continue
        end = None
    except InputError as e:
        end = e
    except BaseException as e:  # noqa: BLE001  (every rank raises it)
        end = RuntimeError(f"reading the input failed on rank 0: {type(e).__name__}: {e}")
    local.put(end)
    for _ in range(size - 1):
        st = _status()
        comm.recv(source=_any(), tag=TAG_ASK, status=st)
        big.send(("end", end), dest=st.Get_source(), tag=TAG_BATCH)


def _receive(comm, big):
    """A rank other than 0: a thread asks for the next batch as soon as this rank starts on the
    current one, and queues it; yield the batches, then stop at the end (raising what stopped
    rank 0, if anything)."""
    got = queue.Queue()
    may_ask = threading.Semaphore(1)

    def fetch():
        while True:
            may_ask.acquire()
            comm.send(None, dest=0, tag=TAG_ASK)
            # not a blocking recv: MPICH's spins (sched_yield) and would share this rank's core
            # with the main thread while rank 0 reads the next batch
            while not comm.Iprobe(source=0, tag=TAG_BATCH):
                time.sleep(POLL_S)
            item = big.recv(source=0, tag=TAG_BATCH)
            got.put(item)
            if _is_end(item):
                return

    t = threading.Thread(target=fetch, daemon=True)
    t.start()
    while True:
        item = got.get()
        if _is_end(item):
            t.join()
            if item[1] is not None:
                raise item[1] if isinstance(item[1], InputError) else RuntimeError(str(item[1]))
            return
        may_ask.release()
        yield item


def _is_end(item):
    return isinstance(item, tuple) and len(item) == 2 and item[0] == "end"


def _status():
    from mpi4py import MPI
    return MPI.Status()


def _any():
    from mpi4py import MPI
    return MPI.ANY_SOURCE         # not -1: that is MPI_PROC_NULL in MPICH
