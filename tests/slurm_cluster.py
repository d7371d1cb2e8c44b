"""A real single-node SLURM cluster on localhost for the tests: munged, slurmctld and slurmd
started in a temporary folder (their own key, socket, ports, state and logs, nothing in
/etc touched), and stopped by PID afterwards.

Job credentials expire after 10 s instead of 120, which is also how long SLURM holds a
requeued job back. Debian's slurm-wlm and munge are installed with apt-get when missing; without root or
apt-get the tests that need the cluster skip, saying why.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
_CONF = """\
ClusterName=wavediff-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.socket,cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=600
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def ensure_installed() -> None:
    """Install slurm-wlm and munge when missing, or skip the test with the reason."""
    if all(shutil.which(d) for d in DAEMONS):
        return
    if os.geteuid() != 0:
        pytest.skip("SLURM (slurm-wlm, munge) is not installed, and installing it needs root")
    if not shutil.which("apt-get"):
        pytest.skip("SLURM (slurm-wlm, munge) is not installed, and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"]
    done = subprocess.run(install, env=env, capture_output=True, text=True)
    if done.returncode != 0:  # a fresh machine may need its package lists first
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not all(shutil.which(d) for d in DAEMONS):
        pytest.fail(f"apt-get could not install slurm-wlm and munge: {done.stderr.strip()[-500:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """The running cluster: submit jobs, read their state, signal them."""

    def __init__(self) -> None:
        # its own folder under /tmp: munged wants every folder above its socket reachable by all
        self.root = root = Path(tempfile.mkdtemp(prefix="wavediff-slurm-"))
        self.env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
        self.daemons: list[subprocess.Popen] = []
        self._log = None

    def start(self, timeout: float = 60) -> None:
        root = self.root
        root.chmod(0o755)
        key = root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for name in ("state", "spool"):
            (root / name).mkdir()
        host = socket.gethostname().split(".")[0]
        conf = _CONF.format(host=host, root=root, cpus=os.cpu_count(), ctld_port=_free_port(), slurmd_port=_free_port())
        (root / "slurm.conf").write_text(conf)
        self._log = logs = (root / "daemons.log").open("ab")
        munge = [
            f"--key-file={key}",
            f"--socket={root}/munge.socket",
            f"--pid-file={root}/munged.pid",
            f"--log-file={root}/munged.log",
            f"--seed-file={root}/munged.seed",
        ]
        for cmd in (["munged", "-F", *munge], ["slurmctld", "-D", "-i"], ["slurmd", "-D"]):
            self.daemons.append(subprocess.Popen(cmd, env=self.env, stdout=logs, stderr=logs, cwd=root))
            time.sleep(0.5)
        deadline = time.monotonic() + timeout
        while self.run(["sinfo", "-h", "-o", "%T"], check=False).stdout.strip() != "idle":
            for daemon in self.daemons:
                if daemon.poll() is not None:
                    raise RuntimeError(f"{daemon.args[0]} exited with {daemon.returncode}: {self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the SLURM node did not come up within {timeout:.0f} s: {self.logs()}")
            time.sleep(0.3)

    def stop(self) -> None:
        """Cancel what is left, stop slurmd, slurmctld and munged by PID, remove the folder."""
        if self.daemons:
            self.run(["scancel", "--user", "root"], check=False)
        for daemon in reversed(self.daemons):
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
        self.daemons = []
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def logs(self) -> str:
        parts = [(self.root / n) for n in ("daemons.log", "slurmctld.log", "slurmd.log")]
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in parts if p.exists())

    def run(self, cmd: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        done = subprocess.run(
            cmd, env={**self.env, **kwargs.pop("env", {})}, capture_output=True, text=True, timeout=60, **kwargs
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}")
        return done

    def submit(self, args: list[str], env: dict[str, str], cwd: Path) -> str:
        """sbatch; returns the job id (of the array, for an array)."""
        return self.run(["sbatch", "--parsable", *args], env=env, cwd=cwd).stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...); an array gives its first task."""
        out = self.run(["scontrol", "show", "job", "-o", job_id]).stdout.splitlines()[0]
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def states(self, job_id: str) -> list[str]:
        """The state of every task of a job (one for a plain job)."""
        out = self.run(["scontrol", "show", "job", "-o", job_id]).stdout
        return re.findall(r"JobState=(\S+)", out)

    def wait(self, job_id: str, timeout: float, done: tuple[str, ...] = ("COMPLETED",)) -> dict[str, str]:
        """Wait until every task of the job has ended; fail unless all ended in one of `done`."""
        ended = {
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
            "BOOT_FAIL",
            "DEADLINE",
            "PREEMPTED",
        }
        deadline = time.monotonic() + timeout
        while not set(states := self.states(job_id)) <= ended:
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {states} after {timeout:.0f} s")
            time.sleep(0.5)
        assert set(states) <= set(done), f"job {job_id} ended {states}: {self.job(job_id)}\n{self.logs()}"
        return self.job(job_id)
