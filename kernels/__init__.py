"""genefarm kernels: compute only (index, align, sort/markdup, pileup, call).

No database, scheduler or network here. Entry points run as plain processes or as MPI ranks:
`python -m kernels.index REF.fa PREFIX`, `python -m kernels.align PREFIX R1 R2 -o OUT.bam`.
"""
__version__ = "0.1.0"
