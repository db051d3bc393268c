"""Schedulers' own words, translated at the edge into one enum; anything unknown is UNKNOWN, never a crash."""
import pytest

from master.backends import sge, slurm
from master.states import JobState


@pytest.mark.parametrize("raw,want", [("qw", "queued"), ("hqw", "queued"), ("r", "running"), ("t", "running"),
                                      ("Rr", "running"), ("dr", "cancelled"), ("Eqw", "failed"), ("", "unknown"),
                                      ("zz", "unknown"), ("weird state", "unknown")])
def test_sge_states(raw, want):
    assert sge.translate(raw) == JobState(want)


@pytest.mark.parametrize("raw,want", [("PENDING", "queued"), ("RUNNING", "running"), ("COMPLETED", "done"),
                                      ("CANCELLED by 0", "cancelled"), ("CANCELLED+", "cancelled"),
                                      ("TIMEOUT", "failed"), ("OUT_OF_MEMORY", "failed"), ("PREEMPTED", "failed"),
                                      ("", "unknown"), ("SOMETHING_NEW", "unknown")])
def test_slurm_states(raw, want):
    assert slurm.translate(raw) == JobState(want)


def test_slurm_exit_codes_and_preemption():
    assert slurm._exit("FAILED", "3:0") == (3, None)
    assert slurm._exit("FAILED", "0:9") == (0, 9)
    assert slurm._exit("PREEMPTED", "0:0") == (0, 15)
    assert slurm._exit("FAILED", "garbage") == (None, None)


def test_sge_qstat_xml_expands_task_ranges_and_survives_odd_records():
    xml = """<?xml version='1.0'?><job_info><queue_info>
      <job_list state="running"><JB_job_number>7</JB_job_number><state>r</state>
        <queue_name>q@node1</queue_name><tasks>1</tasks></job_list></queue_info>
      <job_info><job_list state="pending"><JB_job_number>7</JB_job_number><state>qw</state>
        <queue_name></queue_name><tasks>2-6:2</tasks></job_list>
      <job_list state="pending"><JB_job_number>8</JB_job_number><state>zq</state></job_list></job_info></job_info>"""
    got = sge.parse_qstat_xml(xml)
    assert got == {"7.1": ("r", "q@node1"), "7.2": ("qw", ""), "7.4": ("qw", ""), "7.6": ("qw", ""),
                   "8.1": ("zq", "")}
    assert sge.translate(got["8.1"][0]) == JobState.UNKNOWN


def test_sge_qacct_records():
    text = """==============================================================
qname        genefarm.q
hostname     node1
taskid       2
failed       0
exit_status  137
cpu          1.500s
maxvmem      2.000G
==============================================================
qname        genefarm.q
hostname     node1
taskid       3
failed       0
exit_status  0
cpu          0.010s
maxvmem      512.000M
"""
    recs = sge.parse_qacct(text)
    a, b = sge.status_of_qacct(recs["2"]), sge.status_of_qacct(recs["3"])
    assert (a.state, a.exit_code, a.signal, a.cpu_seconds, a.peak_mb) == (JobState.FAILED, 137, 9, 1.5, 2048.0)
    assert (b.state, b.exit_code, b.signal, b.peak_mb) == (JobState.DONE, 0, None, 512.0)


def test_slurm_scontrol_records_with_pending_ranges():
    text = ("JobId=11 ArrayJobId=10 ArrayTaskId=1 JobState=COMPLETED ExitCode=0:0 NodeList=n1\n"
            "JobId=10 ArrayJobId=10 ArrayTaskId=2-4%2 JobState=PENDING ExitCode=0:0 NodeList=(null)\n"
            "JobId=12 ArrayJobId=12 ArrayTaskId=4294967294 JobState=CANCELLED ExitCode=0:0\n"
            "garbage line\n")
    got = slurm.parse_scontrol(text)
    assert set(got) == {"10_1", "10_2", "10_3", "10_4", "12_*"}
    assert got["10_3"]["JobState"] == "PENDING"
