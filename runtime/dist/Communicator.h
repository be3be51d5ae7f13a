//===- Communicator.h - The ranks of a training job -------------*- C++ -*-===//
//
// One interface to the other processes of a job: MPI between host
// processes (here), NCCL between GPUs (the cuda backend, whose unique id
// goes over this). A process that no launcher started is a world of one and
// needs no MPI at all.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_DIST_COMMUNICATOR_H
#define KILN_RUNTIME_DIST_COMMUNICATOR_H

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace kiln::rt {

/// Where this process is in its job, as the launcher says: mpirun
/// (OMPI_COMM_WORLD_*), srun (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID) or
/// a PMI launcher (PMI_RANK, PMI_SIZE); one process of one otherwise.
struct LaunchInfo {
  int rank = 0, size = 1;
  int localRank = 0;    ///< among the job's processes on this node
  std::string launcher; ///< "mpirun", "srun", "pmi" or empty
};
LaunchInfo detectLaunch();
/// detectLaunch for callers built without exceptions (the compiler's
/// driver): false with the reason in `error` when the environment is bad.
bool detectLaunch(LaunchInfo &info, std::string &error) noexcept;

/// How long a rank waits in one collective for the others before it gives
/// up with an error (a rank that died or hangs): KILN_COMM_TIMEOUT seconds,
/// default 60.
std::chrono::milliseconds commTimeout();

class Communicator {
public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int localRank() const = 0;
  /// For logs: "MPI (Open MPI v4.1.4), 2 ranks" or "one process".
  virtual std::string describe() const = 0;

  /// Sums `data` over the ranks, in place, on every rank. The requests of
  /// one call complete together (a bucket).
  virtual void allReduceSum(std::span<const std::span<float>> buffers) = 0;
  virtual void allReduceSum(std::span<double> data) = 0;
  /// ZeRO-1's reduction, in place: in each buffer, this rank's shard
  /// (plan::shardOf over size() ranks) becomes the sum over the ranks; the
  /// rest keeps its value. One bucket per call, as allReduceSum.
  virtual void reduceScatterSum(std::span<const std::span<float>> buffers) = 0;
  /// ZeRO-1's gather, in place: shard r of each buffer (of elements of
  /// `elementBytes` bytes) from rank r.
  virtual void allGatherShards(std::span<const std::span<std::byte>> buffers,
                               std::size_t elementBytes) = 0;
  void allGatherShards(std::span<const std::span<float>> buffers);
  /// Rank `root`'s bytes to every rank.
  virtual void broadcast(std::span<std::byte> data, int root) = 0;
  /// Every rank's `mine` (the same size on all), in rank order.
  virtual std::vector<std::vector<std::byte>>
  allGather(std::span<const std::byte> mine) = 0;
  /// Waits for every rank; `patience` replaces the collective timeout
  /// (ranks waiting while rank 0 writes a checkpoint).
  virtual void barrier(std::chrono::milliseconds patience) = 0;
  void barrier() { barrier(commTimeout()); }
  /// Ends every process of the job (after an error that leaves the others
  /// waiting in a collective).
  [[noreturn]] virtual void abort(int status) = 0;
};

/// Throws Error unless `comm` (null: one process) spans `ranks` ranks, the
/// data-parallel ranks a plan was compiled for (the backends' check).
void requireRanks(int64_t ranks, const Communicator *comm);

/// The communicator of the job this process was launched in: MPI when a
/// launcher started more than one process (Error when this Kiln was built
/// without MPI), else a world of one.
std::unique_ptr<Communicator> createCommunicator();

} // namespace kiln::rt

#endif // KILN_RUNTIME_DIST_COMMUNICATOR_H
