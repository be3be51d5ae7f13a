#!/usr/bin/env python3
"""Source check of the layering docs/architecture.md draws (lit:
test/Tools/layering.test). The compiler and the runtime meet only in the
plan:
  1. the compiler's libraries (dialects/, passes/, compiler/frontend,
     compiler/translate) include from the runtime only runtime/plan/ (the
     plan's schema);
  2. the runtime (runtime/) includes nothing of the compiler (compiler/,
     dialects/, passes/) and nothing of LLVM or MLIR.
The runtime's own layers are enforced by CMake (runtime/CMakeLists.txt:
each layer's library exports only its own headers). The drivers in
compiler/tools/ use both sides and are not checked.

    layering_check.py <source root>
"""

import pathlib
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^">]+)[">]', re.M)
SUFFIXES = {".cpp", ".h", ".td", ".cuh", ".inc"}


def sources(root, *tops):
    for top in tops:
        for path in sorted((root / top).rglob("*")):
            if path.suffix in SUFFIXES and path.is_file():
                yield path


def main():
    root = pathlib.Path(sys.argv[1])
    problems, files = [], 0
    for path in sources(root, "dialects", "passes", "compiler/frontend",
                        "compiler/translate"):
        files += 1
        for match in INCLUDE.finditer(path.read_text(errors="replace")):
            name = match.group(1)
            if name.startswith("runtime/") and not name.startswith(
                    "runtime/plan/"):
                problems.append(f"{path.relative_to(root)}: includes {name}; "
                                "the compiler's libraries see only "
                                "runtime/plan/")
    for path in sources(root, "runtime"):
        files += 1
        for match in INCLUDE.finditer(path.read_text(errors="replace")):
            name = match.group(1)
            if name.split("/")[0] in ("compiler", "dialects", "passes", "mlir",
                                      "llvm"):
                problems.append(f"{path.relative_to(root)}: includes {name}; "
                                "the runtime never includes the compiler, "
                                "LLVM or MLIR")
    for problem in problems:
        print(problem)
    print(f"layering_check: {files} files, {len(problems)} problems")
    return 1 if problems or files == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
