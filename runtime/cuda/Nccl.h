//===- Nccl.h - Collectives between GPUs through NCCL -----------*- C++ -*-===//
//
// The cuda backend's communication: NCCL (libnccl.so.2, opened with dlopen
// like the other CUDA libraries), one communicator over the job's ranks,
// its unique id sent from rank 0 over the job's Communicator (MPI).
// Collectives run on a stream of their own; waiting for one polls NCCL's
// asynchronous error and gives up after KILN_COMM_TIMEOUT, so that a rank
// that died or hangs ends the others with an error instead of a hang.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_NCCL_H
#define KILN_RUNTIME_CUDA_NCCL_H

#include "runtime/dist/Communicator.h"

#include <cuda.h>
#include <nccl.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <utility>

namespace kiln::rt::cuda {

/// The NCCL functions the cuda backend uses.
#define KILN_NCCL_FUNCTIONS(X)                                                 \
  X(ncclGetVersion)                                                            \
  X(ncclGetErrorString)                                                        \
  X(ncclGetUniqueId)                                                           \
  X(ncclCommInitRank)                                                          \
  X(ncclCommDestroy)                                                           \
  X(ncclCommAbort)                                                             \
  X(ncclCommGetAsyncError)                                                     \
  X(ncclAllReduce)                                                             \
  X(ncclReduce)                                                                \
  X(ncclBroadcast)                                                             \
  X(ncclGroupStart)                                                            \
  X(ncclGroupEnd)

#define KILN_NCCL_DECLARE_FUNCTION(fn) decltype(&::fn) fn = nullptr;
struct NcclApi {
  KILN_NCCL_FUNCTIONS(KILN_NCCL_DECLARE_FUNCTION)
};
#undef KILN_NCCL_DECLARE_FUNCTION

/// libnccl.so.2, first where the dynamic linker looks, then in the CUDA
/// toolkit's and the pip wheels' library directories; opened on first use
/// and never closed. Throws Error saying why it does not load.
const NcclApi &nccl();

/// One NCCL communicator over the ranks of a job, on the current device.
class NcclGroup {
public:
  /// Creates the communicator: rank 0 makes the unique id and sends it to
  /// the others over `comm`. Every rank must call this together.
  explicit NcclGroup(Communicator &comm);
  ~NcclGroup();
  NcclGroup(const NcclGroup &) = delete;
  NcclGroup &operator=(const NcclGroup &) = delete;

  /// Sums each FP32 buffer (device address, elements) in place over the
  /// ranks, queued on `stream` as one NCCL group.
  void
  allReduceSum(CUstream stream,
               std::span<const std::pair<CUdeviceptr, std::size_t>> buffers);

  /// ZeRO-1's reduction, in place: in each FP32 buffer (device address,
  /// elements), shard r (plan::shardOf over the ranks) becomes the sum on
  /// rank r; one NCCL group of one reduce per shard, as the host's MPI
  /// (ncclReduceScatter would need every buffer padded to whole shards).
  void reduceScatterSum(
      CUstream stream,
      std::span<const std::pair<CUdeviceptr, std::size_t>> buffers);
  /// ZeRO-1's gather, in place: shard r of each buffer (device address,
  /// elements of `type`) from rank r; one NCCL group of broadcasts.
  void
  allGatherShards(CUstream stream,
                  std::span<const std::pair<CUdeviceptr, std::size_t>> buffers,
                  ncclDataType_t type);

  /// Waits for `stream`, checking NCCL's asynchronous error and the
  /// timeout; on either aborts the communicator and throws Error naming
  /// `what`.
  void synchronize(CUstream stream, const char *what);

  /// "NCCL 2.28.3, 8 ranks".
  std::string describe() const;

private:
  [[noreturn]] void fail(const std::string &why);
  /// Fails naming `call` unless `result` is ncclSuccess.
  void check(ncclResult_t result, const char *call);
  /// Calls `call` for shard r (plan::shardOf) of each buffer (elements of
  /// `elementBytes`) with root r, inside one NCCL group.
  void forEachShard(
      std::span<const std::pair<CUdeviceptr, std::size_t>> buffers,
      std::size_t elementBytes,
      const std::function<void(void *data, std::size_t count, int root)> &call);

  Communicator &comm;
  ncclComm_t handle = nullptr;
  std::chrono::milliseconds timeout;
};

} // namespace kiln::rt::cuda

#endif // KILN_RUNTIME_CUDA_NCCL_H
