//===- Communicator.cpp - The ranks of a training job ---------------------===//

#include "runtime/dist/Communicator.h"

#include "runtime/Error.h"
#include "runtime/plan/Schema.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>

#if KILN_ENABLE_MPI
// The C API only (not Open MPI's or MPICH's deprecated C++ bindings).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace kiln::rt {

namespace {

/// An environment variable as a non-negative int, if set.
std::optional<int> envInt(const char *name) {
  const char *text = std::getenv(name);
  if (!text || !*text)
    return std::nullopt;
  char *end = nullptr;
  long value = std::strtol(text, &end, 10);
  if (*end != '\0' || value < 0 || value > INT_MAX)
    throw Error(fmt::format("the launcher set {}={}, which is not a rank or "
                            "a count",
                            name, text));
  return static_cast<int>(value);
}

/// One process: every collective is the identity.
class SelfCommunicator final : public Communicator {
public:
  using Communicator::allGatherShards;
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int localRank() const override { return 0; }
  std::string describe() const override { return "one process"; }
  void allReduceSum(std::span<const std::span<float>>) override {}
  void allReduceSum(std::span<double>) override {}
  void reduceScatterSum(std::span<const std::span<float>>) override {}
  void allGatherShards(std::span<const std::span<std::byte>>,
                       std::size_t) override {}
  void broadcast(std::span<std::byte>, int) override {}
  std::vector<std::vector<std::byte>>
  allGather(std::span<const std::byte> mine) override {
    return {std::vector<std::byte>(mine.begin(), mine.end())};
  }
  void barrier(std::chrono::milliseconds) override {}
  [[noreturn]] void abort(int status) override { std::_Exit(status); }
};

#if KILN_ENABLE_MPI
/// MPI's largest count per call; bigger buffers go in pieces.
constexpr std::size_t kMaxCount = INT_MAX / 2;

class MpiCommunicator final : public Communicator {
public:
  using Communicator::allGatherShards;
  explicit MpiCommunicator(const LaunchInfo &launch)
      : local(launch.localRank), timeout(commTimeout()) {
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) !=
        MPI_SUCCESS)
      throw Error("MPI_Init_thread failed: the launcher started this "
                  "process, but MPI cannot reach the others");
    // Errors come back as codes (reported with the call), not as aborts.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &count);
    if (me != launch.rank || count != launch.size)
      throw Error(fmt::format("MPI says this is rank {} of {}, the "
                              "launcher's environment says {} of {}",
                              me, count, launch.rank, launch.size));
    char version[MPI_MAX_LIBRARY_VERSION_STRING] = {};
    int length = 0;
    MPI_Get_library_version(version, &length);
    library = std::string(version, strnlen(version, length));
    if (auto comma = library.find(','); comma != std::string::npos)
      library.resize(comma);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized)
      MPI_Finalize();
  }

  int rank() const override { return me; }
  int size() const override { return count; }
  int localRank() const override { return local; }
  std::string describe() const override {
    return fmt::format("MPI ({}), {} ranks", library, count);
  }

  void allReduceSum(std::span<const std::span<float>> buffers) override {
    std::vector<MPI_Request> requests;
    for (std::span<float> buffer : buffers)
      for (std::size_t at = 0; at < buffer.size(); at += kMaxCount) {
        int n = static_cast<int>(std::min(kMaxCount, buffer.size() - at));
        requests.emplace_back();
        check(MPI_Iallreduce(MPI_IN_PLACE, buffer.data() + at, n, MPI_FLOAT,
                             MPI_SUM, MPI_COMM_WORLD, &requests.back()),
              "MPI_Iallreduce");
      }
    wait(requests, "the gradient all-reduce");
  }
  void allReduceSum(std::span<double> data) override {
    std::vector<MPI_Request> requests(1);
    check(MPI_Iallreduce(MPI_IN_PLACE, data.data(),
                         static_cast<int>(data.size()), MPI_DOUBLE, MPI_SUM,
                         MPI_COMM_WORLD, &requests[0]),
          "MPI_Iallreduce");
    wait(requests, "an all-reduce");
  }
  // Shard r goes to (comes from) rank r: one reduce (broadcast) per rank
  // and piece, in place, for shards of any size.
  void reduceScatterSum(std::span<const std::span<float>> buffers) override {
    std::vector<MPI_Request> requests;
    for (std::span<float> buffer : buffers)
      forEachShardPiece(buffer.data(), buffer.size(), sizeof(float),
                        sizeof(float), [&](std::byte *data, int n, int root) {
                          auto *floats = reinterpret_cast<float *>(data);
                          requests.emplace_back();
                          check(MPI_Ireduce(root == me ? MPI_IN_PLACE : floats,
                                            floats, n, MPI_FLOAT, MPI_SUM, root,
                                            MPI_COMM_WORLD, &requests.back()),
                                "MPI_Ireduce");
                        });
    wait(requests, "the gradient reduce-scatter");
  }
  void allGatherShards(std::span<const std::span<std::byte>> buffers,
                       std::size_t elementBytes) override {
    // (A copy, not a reduction: the elements travel as bytes.)
    std::vector<MPI_Request> requests;
    for (std::span<std::byte> buffer : buffers)
      forEachShardPiece(buffer.data(), buffer.size() / elementBytes,
                        elementBytes, 1, [&](std::byte *data, int n, int root) {
                          requests.emplace_back();
                          check(MPI_Ibcast(data, n, MPI_BYTE, root,
                                           MPI_COMM_WORLD, &requests.back()),
                                "MPI_Ibcast");
                        });
    wait(requests, "the parameter all-gather");
  }
  void broadcast(std::span<std::byte> data, int root) override {
    std::vector<MPI_Request> requests(1);
    check(MPI_Ibcast(data.data(), static_cast<int>(data.size()), MPI_BYTE, root,
                     MPI_COMM_WORLD, &requests[0]),
          "MPI_Ibcast");
    wait(requests, "a broadcast");
  }
  std::vector<std::vector<std::byte>>
  allGather(std::span<const std::byte> mine) override {
    std::vector<std::byte> all(mine.size() * count);
    std::vector<MPI_Request> requests(1);
    check(MPI_Iallgather(mine.data(), static_cast<int>(mine.size()), MPI_BYTE,
                         all.data(), static_cast<int>(mine.size()), MPI_BYTE,
                         MPI_COMM_WORLD, &requests[0]),
          "MPI_Iallgather");
    wait(requests, "an all-gather");
    std::vector<std::vector<std::byte>> ranks;
    for (int r = 0; r < count; ++r)
      ranks.emplace_back(all.begin() + r * mine.size(),
                         all.begin() + (r + 1) * mine.size());
    return ranks;
  }
  void barrier(std::chrono::milliseconds patience) override {
    std::vector<MPI_Request> requests(1);
    check(MPI_Ibarrier(MPI_COMM_WORLD, &requests[0]), "MPI_Ibarrier");
    wait(requests, "a barrier", patience);
  }
  [[noreturn]] void abort(int status) override {
    MPI_Abort(MPI_COMM_WORLD, status);
    std::_Exit(status);
  }

private:
  /// Calls `piece(data, n, root)` for every rank's shard of a buffer of
  /// `elements` elements of `elementBytes` bytes each, in pieces of at most
  /// kMaxCount units of the MPI datatype's `unit` bytes (`n` counts them);
  /// empty shards are skipped, the same on every rank.
  template <typename Piece>
  void forEachShardPiece(void *buffer, std::size_t elements,
                         std::size_t elementBytes, std::size_t unit,
                         Piece piece) {
    auto *base = static_cast<std::byte *>(buffer);
    for (int root = 0; root < count; ++root) {
      plan::Shard shard =
          plan::shardOf(static_cast<int64_t>(elements), count, root);
      const int64_t units =
          shard.count * static_cast<int64_t>(elementBytes / unit);
      std::byte *start = base + shard.offset * elementBytes;
      for (int64_t at = 0; at < units; at += static_cast<int64_t>(kMaxCount))
        piece(start + at * unit,
              static_cast<int>(std::min<int64_t>(
                  static_cast<int64_t>(kMaxCount), units - at)),
              root);
    }
  }
  void check(int code, const char *call) const {
    if (code == MPI_SUCCESS)
      return;
    char text[MPI_MAX_ERROR_STRING] = {};
    int length = 0;
    MPI_Error_string(code, text, &length);
    throw Error(fmt::format("rank {}: {} failed: {}", me, call,
                            std::string(text, strnlen(text, length))));
  }
  /// Completes `requests`, polling (so that a rank that died or hangs
  /// ends this one with an error instead of a hang) and sleeping between
  /// polls (so that a waiting rank leaves the cores to the others). Every
  /// rank also tells rank 0 that it arrived (a message per collective), so
  /// that rank 0 can name the ranks that never did.
  void wait(std::vector<MPI_Request> &requests, const char *what,
            std::optional<std::chrono::milliseconds> patience = {}) {
    const std::chrono::milliseconds limit = patience.value_or(timeout);
    ++sequence;
    std::vector<MPI_Request> arrivals;
    if (me == 0) {
      arrived.assign(count, 0);
      arrivals.resize(count - 1);
      for (int r = 1; r < count; ++r)
        check(MPI_Irecv(&arrived[r], 1, MPI_INT64_T, r, kArrivalTag,
                        MPI_COMM_WORLD, &arrivals[r - 1]),
              "MPI_Irecv");
    } else {
      arrival = sequence;
      requests.emplace_back();
      check(MPI_Isend(&arrival, 1, MPI_INT64_T, 0, kArrivalTag, MPI_COMM_WORLD,
                      &requests.back()),
            "MPI_Isend");
    }
    auto start = std::chrono::steady_clock::now();
    auto pause = std::chrono::microseconds(20);
    auto complete = [&](std::vector<MPI_Request> &pending) {
      int done = 0;
      check(MPI_Testall(static_cast<int>(pending.size()), pending.data(), &done,
                        MPI_STATUSES_IGNORE),
            "MPI_Testall");
      return done != 0;
    };
    for (;;) {
      // (Both tested each time: completing one must not wait for the
      // other.)
      bool finished = complete(requests);
      if (complete(arrivals) && finished)
        return;
      if (std::chrono::steady_clock::now() - start > limit)
        throw Error(timeoutMessage(arrivals, what, limit));
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
  }
  std::string timeoutMessage(std::vector<MPI_Request> &arrivals,
                             const char *what,
                             std::chrono::milliseconds limit) {
    auto seconds =
        std::chrono::duration_cast<std::chrono::seconds>(limit).count();
    std::vector<int> missing;
    for (int r = 1; r < count && me == 0; ++r) {
      int done = 0;
      check(MPI_Test(&arrivals[r - 1], &done, MPI_STATUS_IGNORE), "MPI_Test");
      if (!done)
        missing.push_back(r);
    }
    std::string why;
    if (!missing.empty())
      why = fmt::format("rank{} {} never reached it: {} died or hang{}",
                        missing.size() > 1 ? "s" : "", fmt::join(missing, ", "),
                        missing.size() > 1 ? "they" : "it",
                        missing.size() > 1 ? "" : "s");
    else if (me == 0)
      why = "every rank reached it, and one of them died or hangs in it";
    else
      why = "another rank died or hangs (rank 0 names it, unless it is the "
            "one)";
    return fmt::format("rank {} waited {} s in {} (collective {}) for the "
                       "other ranks: {} (KILN_COMM_TIMEOUT sets the wait)",
                       me, seconds, what, sequence, why);
  }

  /// The tag of the arrival messages (collectives use none).
  static constexpr int kArrivalTag = 0x4b4c;
  int64_t sequence = 0, arrival = 0;
  std::vector<int64_t> arrived;
  int me = 0, count = 1, local = 0;
  std::chrono::milliseconds timeout;
  std::string library;
};
#endif

} // namespace

LaunchInfo detectLaunch() {
  struct Scheme {
    const char *launcher, *rank, *size, *local;
  };
  for (Scheme scheme :
       {Scheme{"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
               "OMPI_COMM_WORLD_LOCAL_RANK"},
        Scheme{"srun", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
        Scheme{"pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"}}) {
    std::optional<int> rank = envInt(scheme.rank);
    std::optional<int> size = envInt(scheme.size);
    if (!rank || !size)
      continue;
    if (*size < 1 || *rank >= *size)
      throw Error(fmt::format("the launcher ({}) says rank {} of {}",
                              scheme.launcher, *rank, *size));
    return LaunchInfo{*rank, *size, envInt(scheme.local).value_or(0),
                      scheme.launcher};
  }
  return {};
}

bool detectLaunch(LaunchInfo &info, std::string &error) noexcept {
  try {
    info = detectLaunch();
    return true;
  } catch (const std::exception &failure) {
    error = failure.what();
    return false;
  }
}

std::chrono::milliseconds commTimeout() {
  const char *text = std::getenv("KILN_COMM_TIMEOUT");
  if (!text || !*text)
    return std::chrono::seconds(60);
  char *end = nullptr;
  double seconds = std::strtod(text, &end);
  if (*end != '\0' || !(seconds > 0) || seconds > 1e6)
    throw Error(fmt::format("KILN_COMM_TIMEOUT={}: expected seconds, a "
                            "positive number",
                            text));
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

void Communicator::allGatherShards(std::span<const std::span<float>> buffers) {
  std::vector<std::span<std::byte>> bytes;
  for (std::span<float> buffer : buffers)
    bytes.push_back(std::as_writable_bytes(buffer));
  allGatherShards(bytes, sizeof(float));
}

void requireRanks(int64_t ranks, const Communicator *comm) {
  int have = comm ? comm->size() : 1;
  if (have != ranks)
    throw Error(fmt::format("the plan is compiled for {} data-parallel "
                            "ranks and this run has {}; launch it with "
                            "mpirun -np {} (or compile it with --dp {})",
                            ranks, have, ranks, have));
}

std::unique_ptr<Communicator> createCommunicator() {
  LaunchInfo launch = detectLaunch();
  if (launch.size == 1)
    return std::make_unique<SelfCommunicator>();
#if KILN_ENABLE_MPI
  return std::make_unique<MpiCommunicator>(launch);
#else
  throw Error(fmt::format("{} started {} processes, but this Kiln was built "
                          "without MPI (KILN_ENABLE_MPI=OFF); rebuild with "
                          "OpenMPI (libopenmpi-dev) to train on several "
                          "ranks",
                          launch.launcher, launch.size));
#endif
}

} // namespace kiln::rt
