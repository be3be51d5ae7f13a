//===- BackendFactory.h - The backend a run gets ----------------*- C++ -*-===//
//
// Above both backends: picks the host or the cuda backend for a plan, so
// that neither backend knows of the other.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_BACKENDFACTORY_H
#define KILN_RUNTIME_BACKENDFACTORY_H

#include "runtime/Backend.h"
#include "runtime/dist/Communicator.h"

#include <memory>
#include <string>

namespace kiln::rt {

/// Which backend `--backend auto|host|cuda` selects: auto is cuda when the
/// runtime was built with CUDA support, the plan has CUDA kernels and a
/// usable GPU exists, host otherwise. Throws Error when cuda is asked for and
/// cannot be had, saying why. `comm` (may be null for one process) runs
/// the plan's collectives: it must span the ranks the plan was compiled for.
std::unique_ptr<Backend> createBackend(const Plan &plan,
                                       const std::string &choice,
                                       Communicator *comm = nullptr);

/// Whether a usable GPU exists; `why` says why not.
bool cudaUsable(std::string *why);

} // namespace kiln::rt

#endif // KILN_RUNTIME_BACKENDFACTORY_H
