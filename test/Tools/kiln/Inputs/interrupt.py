"""Interrupts a long `kiln train` run the way a user or a scheduler does.

    interrupt.py once SIGNAL OUT -- kiln train ...
        sends SIGNAL once the first step is logged; the run must finish the
        step, save a checkpoint, the loss curve and the metrics, say how to
        resume, and exit with 128 + SIGNAL.
    interrupt.py twice SIGNAL OUT -- kiln train ...
        sends SIGNAL, waits for the run to acknowledge it, sends it again:
        the run must die of the signal at once.

Prints what it saw (exit status, files) for FileCheck, and fails if the run
outlives the time limit.
"""

import os
import signal
import subprocess
import sys
import time

LIMIT_S = 120


def wait_for(predicate, what):
    deadline = time.time() + LIMIT_S
    while not predicate():
        if time.time() > deadline:
            sys.exit(f"interrupt.py: timed out waiting for {what}")
        time.sleep(0.02)


def main():
    mode, name, out = sys.argv[1:4]
    command = sys.argv[sys.argv.index("--") + 1:]
    signo = getattr(signal, name)
    metrics = os.path.join(out, "metrics.jsonl")
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                               bufsize=1)
    wait_for(lambda: os.path.exists(metrics) and os.path.getsize(metrics) > 0,
             "the first step")
    process.send_signal(signo)
    if mode == "twice":
        # The first signal is acknowledged on stderr; then send another.
        line = ""
        while "finishing this step" not in line:
            line = process.stderr.readline()
            if not line:
                break
        process.send_signal(signo)
    try:
        _, err = process.communicate(timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        sys.exit("interrupt.py: the run did not stop")
    print(err)
    code = process.returncode
    print(f"killed by signal {-code}" if code < 0 else f"exit status {code}")
    with open(metrics) as f:
        steps = [line for line in f if line.strip()]
    print(f"metrics lines: {len(steps)}")
    for entry in sorted(os.listdir(out)):
        print(f"file: {entry}")
    latest = os.path.join(out, "latest")
    if os.path.exists(latest):
        with open(latest) as f:
            print(f"latest: {f.read().strip()}")


if __name__ == "__main__":
    main()
