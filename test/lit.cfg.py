# -*- Python -*-
# lit configuration for Kiln's FileCheck tests.

import os

import lit.formats
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "Kiln"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.kiln_obj_root, "test")
# GoogleTest sources live beside the lit tests; ctest runs those.
config.excludes = ["Runtime", "Inputs", "CMakeLists.txt", "lit.cfg.py",
                   "lit.site.cfg.py"]

config.substitutions.append(("%PATH%", config.environment["PATH"]))
llvm_config.with_system_environment(["HOME", "INCLUDE", "LIB", "TMP", "TEMP"])
llvm_config.use_default_substitutions()

tool_dirs = [config.kiln_tools_dir, config.llvm_tools_dir]
# `not` and `count` at the start of a RUN line are found through PATH.
llvm_config.with_environment("PATH", tool_dirs, append_path=True)
llvm_config.add_tool_substitutions(
    [ToolSubst(tool, unresolved="fatal") for tool in ["kiln", "kiln-opt", "kiln-translate", "kiln-run"]],
    tool_dirs)

# Python with PyTorch (Debian's python3-torch) for the comparisons with an
# independent implementation; tests that need it say `REQUIRES: torch`.
import subprocess

python = "/usr/bin/python3"
config.substitutions.append(("%python", python))
config.substitutions.append(("%kiln_src", os.path.dirname(config.test_source_root)))
config.substitutions.append(("%kiln_obj", config.kiln_obj_root))
try:
    subprocess.run([python, "-c", "import torch, numpy"], check=True,
                   capture_output=True)
    config.available_features.add("torch")
except (OSError, subprocess.CalledProcessError):
    lit_config.note("PyTorch not found: the comparisons with PyTorch are "
                    "skipped (install python3-torch)")

# NVRTC (the CUDA toolkit) in a runtime built with CUDA support: the
# CPU-only checks of generated CUDA code.
import glob

cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
if config.kiln_enable_cuda in ("1", "ON", "TRUE") and glob.glob(
        os.path.join(cuda_home, "lib64", "libnvrtc.so*")):
    config.available_features.add("nvrtc")
else:
    lit_config.note("NVRTC or CUDA support missing: the CUDA compile checks "
                    "are skipped")
# MPI (OpenMPI's mpirun) and a runtime built with it: the data-parallel
# tests, which launch several ranks on this machine.
import shutil

if config.kiln_enable_mpi in ("1", "ON", "TRUE") and shutil.which("mpirun"):
    config.available_features.add("mpi")
    # As root OpenMPI needs --allow-run-as-root, and --oversubscribe for
    # more ranks than cores.
    config.substitutions.append(
        ("%mpirun", "mpirun --allow-run-as-root --oversubscribe"))
else:
    lit_config.note("mpirun or MPI support missing: the data-parallel tests "
                    "are skipped (install openmpi-bin and libopenmpi-dev)")
# GPUs (nvidia-smi's list) in a runtime built with CUDA support: `gpu` for
# one, `multi-gpu` for two or more (ZeRO-1 and data parallelism over NCCL,
# one GPU per rank). Tests that need them are UNSUPPORTED elsewhere.
gpus = 0
if config.kiln_enable_cuda in ("1", "ON", "TRUE") and shutil.which("nvidia-smi"):
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True,
                                 text=True, timeout=60).stdout
        gpus = sum(line.startswith("GPU ") for line in listing.splitlines())
    except (OSError, subprocess.SubprocessError):
        gpus = 0
if gpus >= 1:
    config.available_features.add("gpu")
if gpus >= 2:
    config.available_features.add("multi-gpu")
else:
    lit_config.note(f"{gpus} GPU(s): the tests of NCCL between GPUs are "
                    "skipped (they need two)")
# A KILN_SANITIZE build: the sanitizer settings ctest uses too
# (CMakeLists.txt), unless the environment sets them.
# (Feature `sanitizer`: tests of release artefacts, such as the GPU bundle's
# size, are UNSUPPORTED there.)
if config.kiln_sanitizer_env:
    config.available_features.add("sanitizer")
for setting in filter(None, config.kiln_sanitizer_env.split(";")):
    name, value = setting.split("=", 1)
    config.environment[name] = os.environ.get(name, value)
# Tests compile into a kernel cache in the build tree, never ~/.cache.
config.environment["KILN_CACHE_DIR"] = os.path.join(config.test_exec_root,
                                                    "kernel-cache")
