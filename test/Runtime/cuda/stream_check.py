#!/usr/bin/env python3
"""Source check: no race between a non-blocking stream and the legacy
default stream (ctest cuda-stream-check; no GPU needed).

A stream created with CU_STREAM_NON_BLOCKING does not wait for work on the
legacy default stream, where the synchronous cuMemcpyHtoD/DtoH/DtoD and
cuMemsetD8/D16/D32 run: a poison memset or an upload could land after the
kernel that was meant to see it. So
  1. only the runtime (runtime/) creates non-blocking streams, and a file
     that does calls none of the synchronous copies or memsets (it uses the
     *Async(stream) forms);
  2. tests and benchmarks (test/, bench/), whose helpers copy
     synchronously, create their streams with CU_STREAM_DEFAULT, which
     synchronizes with the legacy default stream.

    stream_check.py <source root>
"""

import pathlib
import re
import sys

SYNC_CALL = re.compile(r"\b(cuMemcpy(HtoD|DtoH|DtoD)|cuMemsetD(8|16|32))\s*\(")
CREATE = re.compile(r"cuStreamCreate\s*\(([^;]*)\)\s*\)?;", re.S)
SUFFIXES = {".cpp", ".h", ".cu", ".cuh"}


def main():
    root = pathlib.Path(sys.argv[1])
    problems, creators = [], 0
    for top in ("runtime", "test", "bench"):
        for path in sorted((root / top).rglob("*")):
            if path.suffix not in SUFFIXES or "Fuzz" in path.parts:
                continue
            text = path.read_text(errors="replace")
            rel = path.relative_to(root)
            for match in CREATE.finditer(text):
                creators += 1
                line = text.count("\n", 0, match.start()) + 1
                flags = match.group(1)
                if "CU_STREAM_NON_BLOCKING" in flags:
                    if top != "runtime":
                        problems.append(
                            f"{rel}:{line}: creates a non-blocking stream; "
                            "tests and benchmarks copy synchronously, so use "
                            "CU_STREAM_DEFAULT")
                    for call in SYNC_CALL.finditer(text):
                        cline = text.count("\n", 0, call.start()) + 1
                        problems.append(
                            f"{rel}:{cline}: {call.group(1)} runs on the legacy "
                            f"default stream, which the non-blocking stream "
                            f"created at line {line} does not wait for; use "
                            f"{call.group(1)}Async(..., stream)")
                elif "CU_STREAM_DEFAULT" not in flags:
                    problems.append(f"{rel}:{line}: cuStreamCreate with flags "
                                    f"'{flags.split(',')[-1].strip()}': name "
                                    "CU_STREAM_DEFAULT or "
                                    "CU_STREAM_NON_BLOCKING")
    for problem in problems:
        print(problem)
    if creators == 0:
        print("stream_check: no cuStreamCreate found: wrong source root?")
        return 1
    print(f"stream_check: {creators} streams created, "
          f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
