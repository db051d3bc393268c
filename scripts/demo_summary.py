"""Print the demo's mapping summary: the aligner's counts and, since the sample is simulated,
how many reads were placed where the simulator took them from (within 10 bp)."""
import gzip
import json
import sys

import pysam


def main(summary_json, bam, truth_tsv):
    s = json.load(open(summary_json))
    truth = {}
    with gzip.open(truth_tsv, "rt") as f:
        for line in f:
            if not line.startswith("#"):
                q, mate, chrom, start, end = line.split("\t")[:5]
                truth[(q, int(mate))] = (chrom, int(start), int(end))
    correct = 0
    with pysam.AlignmentFile(bam) as f:
        for r in f:
            t = truth.get((r.query_name, 2 if r.is_read2 else 1))
            if r.is_unmapped or t is None or r.reference_name != t[0]:
                continue
            cig = r.cigartuples
            lclip = cig[0][1] if cig[0][0] == 4 else 0
            rclip = cig[-1][1] if cig[-1][0] == 4 else 0
            if abs(r.reference_start + 1 - lclip - t[1]) <= 10 or abs(r.reference_end + rclip - t[2]) <= 10:
                correct += 1
    n = s["reads"]
    rows = [
        ("reads", f"{n:,}"),
        ("mapped", f"{s['mapped']:,} ({100 * s['frac_mapped']:.2f}%)"),
        ("properly paired", f"{s['proper']:,} ({100 * s['frac_proper']:.2f}%)"),
        ("MAPQ >= 20", f"{s['mapq20']:,} ({100 * s['frac_mapq20']:.2f}%)"),
        ("insert size", f"{s.get('insert_mean', 0):.0f} +- {s.get('insert_std', 0):.0f} bp"),
        ("at the simulated position (+-10 bp)", f"{correct:,} ({100 * correct / n:.2f}%)"),
        ("alignment time", f"{s['seconds']:.1f} s on {s['threads']} thread(s)"),
        ("BAM", s["bam"]),
    ]
    w = max(len(k) for k, _ in rows)
    print("\nmapping summary")
    for k, v in rows:
        print(f"  {k:<{w}}  {v}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
