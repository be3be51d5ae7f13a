"""A rank that dies or hangs must end a data-parallel run with an error.

usage: data_parallel_faults.py KILN CONFIG DATA WORKDIR kill|hang

Starts `mpirun -np 2 kiln train` (checkpoints every 5 steps), waits for the
checkpoint of step 10, then kills rank 1 with SIGKILL (kill) or stops it
with SIGSTOP (hang, with KILN_COMM_TIMEOUT=10). The job must end with a
non-zero status within 60 s, and what it printed is echoed for FileCheck.
Then the newest checkpoint must resume (two ranks, one more step): the
fault left it intact. Standard library only.
"""

import json
import os
import signal
import subprocess
import sys
import time

MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe"]


def rank_pid(rank, parent_cmd="kiln"):
    """The pid of the kiln process mpirun started as `rank`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if (cmdline and cmdline[0].endswith(parent_cmd.encode()) and
                f"OMPI_COMM_WORLD_RANK={rank}".encode() in environ):
            return int(pid)
    return None


def main():
    kiln, config, data, workdir, fault = sys.argv[1:6]
    out = os.path.join(workdir, fault)
    env = dict(os.environ, OMP_NUM_THREADS="1", KILN_COMM_TIMEOUT="10")
    job = subprocess.Popen(
        MPIRUN + ["-np", "2", kiln, "train", config, "--data", data,
                  "--steps", "100000", "--save-every", "5", "--batch", "4",
                  "--seq-len", "16", "--out", out, "--overwrite"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    while not os.path.isdir(os.path.join(out, "checkpoint-000010")):
        if time.time() > deadline or job.poll() is not None:
            job.kill()
            sys.exit("the run never reached its checkpoint of step 10:\n" +
                     job.communicate()[0])
        time.sleep(0.1)
    pid = rank_pid(1)
    if pid is None:
        job.kill()
        sys.exit("no process of rank 1 found")
    os.kill(pid, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
    start = time.time()
    try:
        output, _ = job.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        job.kill()
        os.kill(pid, signal.SIGKILL)
        sys.exit(f"FAIL the job still runs 60 s after the {fault} of rank 1")
    elapsed = time.time() - start
    print("\n".join(line for line in output.splitlines()
                    if "Read -1" not in line))
    print(f"exit status {job.returncode} "
          f"{'within' if elapsed < 60 else 'after'} 60 s of the {fault}")
    if job.returncode == 0:
        sys.exit("FAIL the job ended with status 0")

    latest = open(os.path.join(out, "latest")).read().strip()
    step = int(latest.split("-")[1])
    resume = subprocess.run(
        MPIRUN + ["-np", "2", kiln, "train", config, "--resume", out,
                  "--steps", str(step + 1), "--warmup", "1"],
        capture_output=True, text=True, env=env)
    if resume.returncode != 0:
        sys.exit(f"FAIL {latest} does not resume:\n{resume.stderr}")
    steps = [json.loads(line)["step"]
             for line in open(os.path.join(out, "metrics.jsonl"))]
    print(f"{latest} resumed to step {steps[-1]}")
    print("PASS")


if __name__ == "__main__":
    main()
