"""The tiny workflow through profiles/slurm on a real single-node SLURM that the test starts itself
(Debian's slurm-wlm and munge: munged, slurmctld and slurmd on this host, no accounting), then a
changed script reruns only its rule. Opt-in: `pytest -m slurm` (`make test-slurm`); .ci/run runs it.
Every daemon it started is stopped."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, tiny_config

pytestmark = pytest.mark.slurm
DAEMONS = ("munged", "slurmctld", "slurmd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(root: Path) -> str:
    host = socket.gethostname()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 * 8 // 10
    return f"""ClusterName=tlmtest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# squeue (no accounting) must still see a job when the executor checks its status
MinJobAge=3600
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
NodeName={host} CPUs={os.cpu_count()} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running single-node cluster: the environment that points clients (sbatch, squeue) at it."""
    missing = [d for d in (*DAEMONS, "sbatch", "squeue") if not shutil.which(d)]
    if missing or os.geteuid() != 0:
        pytest.skip(
            f"needs root and Debian's slurm-wlm and munge (missing: {missing or 'root'}); .ci/run installs them"
        )
    # the job step's nested srun drops SLURM_CONF (snakemake-executor-plugin-slurm-jobstep keeps only a
    # job's identity): the configuration must be where clients look by default
    conf = Path("/etc/slurm/slurm.conf")
    if conf.exists():
        pytest.skip(f"{conf} exists: this host has a SLURM of its own, which the test leaves alone")
    root = tmp_path_factory.mktemp("slurm")
    for d in ("state", "spool"):
        (root / d).mkdir()
    (root / "munge.key").write_bytes(os.urandom(1024))
    os.chmod(root / "munge.key", 0o400)
    conf.parent.mkdir(exist_ok=True)
    conf.write_text(slurm_conf(root))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    pids = {}
    try:
        subprocess.run(
            [
                "munged",
                "--force",
                "-S",
                str(root / "munge.socket"),
                "--key-file",
                str(root / "munge.key"),
                "--pid-file",
                str(root / "munged.pid"),
                "--log-file",
                str(root / "munged.log"),
                "--seed-file",
                str(root / "munge.seed"),
            ],
            check=True,
            env=env,
        )
        pids["munged"] = root / "munged.pid"
        subprocess.run(["slurmctld", "-c", "-f", str(conf)], check=True, env=env)
        pids["slurmctld"] = root / "slurmctld.pid"
        subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env)
        pids["slurmd"] = root / "slurmd.pid"
        for _ in range(60):
            state = subprocess.run(
                ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env
            ).stdout.strip()
            if state == "idle":
                break
            time.sleep(1)
        else:
            pytest.fail(
                f"the node never came up (sinfo: {state!r}):\n{(root / 'slurmctld.log').read_text()[-2000:]}"
            )
        yield env
    finally:
        subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True)
        for pidfile in reversed(pids.values()):
            with contextlib.suppress(
                OSError, ValueError
            ):  # already gone (scontrol shutdown stops slurmctld and slurmd)
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
        for _ in range(30):
            alive = [n for n, p in pids.items() if p.exists() and _alive(p)]
            if not alive:
                break
            time.sleep(1)
        conf.unlink(missing_ok=True)
        assert not alive, f"daemons still running: {alive}"


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text()), 0)
        return True
    except (OSError, ValueError):
        return False


def test_tiny_workflow_through_the_slurm_profile_and_a_changed_script(slurm, tmp_path):
    # a copy of the workflow, so that the test can change one of its scripts
    work = tmp_path / "workflow"
    work.mkdir()
    for part in ("Snakefile", "rules", "workflow", "src", "config", "profiles", "envs", "report"):
        (shutil.copytree if (ROOT / part).is_dir() else shutil.copy)(ROOT / part, work / part)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = tiny_config(run_dir)
    cfg["runs"] = {"tlm": {"external": "bm25"}, "tfidf": {"kind": "tfidf"}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    debug = [
        f"{rule}:slurm_partition=debug"
        for rule in ("train_stage1", "train_stage2", "finetune_plm", "evaluate", "predict")
    ]
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(work / "Snakefile"),
        "--profile",
        str(work / "profiles/slurm"),
        "--directory",
        str(run_dir),
        "--jobs",
        "4",
        "--default-resources",
        "slurm_partition=debug",
        "mem_mb=1000",
        "--set-resources",
        *debug,
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--latency-wait",
        "10",
    ]
    start = time.time()
    proc = subprocess.run(
        [*cmd, "--configfile", str(run_dir / "config.yaml")],
        capture_output=True,
        text=True,
        env=slurm,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert (run_dir / "results/summary.md").exists() and (
        run_dir / "results/export/demo/model.safetensors"
    ).exists()
    jobs = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%j %T"], capture_output=True, text=True, env=slurm
    ).stdout.split("\n")
    done = [line for line in jobs if line.strip().endswith("COMPLETED")]
    assert len(done) >= 20, jobs  # every job but the local ones went through SLURM
    print(f"{len(done)} SLURM jobs in {time.time() - start:.0f} s")

    def planned():
        out = subprocess.run(
            [*cmd, "-n", "--configfile", str(run_dir / "config.yaml")],
            capture_output=True,
            text=True,
            env=slurm,
        )
        lines = [
            line.strip() for line in out.stdout.splitlines()
        ]  # a group job's rules are indented
        return {
            line.split()[-1].rstrip(":")
            for line in lines
            if line.startswith(("rule ", "localrule "))
        } - {"all"}

    assert planned() == set(), "a second run has nothing to do"
    script = work / "workflow/scripts/summarize.py"
    script.write_text(script.read_text() + "# changed\n")
    assert planned() == {"summarize"}, (
        "a changed script reruns its rule only (nothing reads the summary)"
    )
