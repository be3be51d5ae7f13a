//===- Nccl.cpp - Collectives between GPUs through NCCL -------------------===//

#include "runtime/cuda/Nccl.h"

#include "runtime/Error.h"
#include "runtime/cuda/CudaApi.h"
#include "runtime/plan/Schema.h"

#include <fmt/format.h>

#include <functional>
#include <thread>

namespace kiln::rt::cuda {

namespace {

#define KILN_NCCL_LOAD_FUNCTION(fn)                                            \
  api.fn = reinterpret_cast<decltype(api.fn)>(library.symbol(#fn));

NcclApi loadNcclApi(const Library &library) {
  NcclApi api;
  KILN_NCCL_FUNCTIONS(KILN_NCCL_LOAD_FUNCTION)
  return api;
}
#undef KILN_NCCL_LOAD_FUNCTION

/// The library and its table, or why they did not load.
struct LoadedNccl {
  std::unique_ptr<Library> library;
  NcclApi api;
  std::string error;
};

LoadedNccl &loaded() {
  static LoadedNccl *result = [] {
    auto *loaded = new LoadedNccl; // intentionally never freed
    std::vector<std::string> candidates =
        toolkitLibraryCandidates("libnccl.so.2");
    try {
      loaded->library = std::make_unique<Library>(candidates);
      loaded->api = loadNcclApi(*loaded->library);
    } catch (const Error &error) {
      loaded->library.reset();
      loaded->error = fmt::format(
          "NCCL not found or unusable: {}; install NCCL (libnccl2, or the "
          "nvidia-nccl wheel) to train on several GPUs",
          error.what());
    }
    return loaded;
  }();
  return *result;
}

std::string ncclText(ncclResult_t result) {
  return fmt::format("{} ({})", nccl().ncclGetErrorString(result),
                     static_cast<int>(result));
}

} // namespace

const NcclApi &nccl() {
  LoadedNccl &l = loaded();
  if (!l.library)
    throw Error(l.error);
  return l.api;
}

NcclGroup::NcclGroup(Communicator &comm) : comm(comm), timeout(commTimeout()) {
  const NcclApi &api = nccl();
  ncclUniqueId id{};
  if (comm.rank() == 0)
    if (ncclResult_t r = api.ncclGetUniqueId(&id); r != ncclSuccess)
      throw Error("ncclGetUniqueId failed: " + ncclText(r));
  comm.broadcast(std::as_writable_bytes(std::span(&id, 1)), 0);
  if (ncclResult_t r =
          api.ncclCommInitRank(&handle, comm.size(), id, comm.rank());
      r != ncclSuccess)
    throw Error(fmt::format("rank {}: ncclCommInitRank over {} ranks "
                            "failed: {}",
                            comm.rank(), comm.size(), ncclText(r)));
}

NcclGroup::~NcclGroup() {
  if (handle)
    nccl().ncclCommDestroy(handle);
}

void NcclGroup::check(ncclResult_t result, const char *call) {
  if (result != ncclSuccess)
    fail(fmt::format("{} failed: {}", call, ncclText(result)));
}

void NcclGroup::allReduceSum(
    CUstream stream,
    std::span<const std::pair<CUdeviceptr, std::size_t>> buffers) {
  const NcclApi &api = nccl();
  check(api.ncclGroupStart(), "ncclGroupStart");
  for (auto [address, elements] : buffers) {
    void *data = reinterpret_cast<void *>(address);
    check(api.ncclAllReduce(data, data, elements, ncclFloat32, ncclSum, handle,
                            reinterpret_cast<cudaStream_t>(stream)),
          "ncclAllReduce");
  }
  check(api.ncclGroupEnd(), "ncclGroupEnd");
}

void NcclGroup::forEachShard(
    std::span<const std::pair<CUdeviceptr, std::size_t>> buffers,
    std::size_t elementBytes,
    const std::function<void(void *data, std::size_t count, int root)> &call) {
  check(nccl().ncclGroupStart(), "ncclGroupStart");
  for (auto [address, elements] : buffers)
    for (int root = 0; root < comm.size(); ++root) {
      plan::Shard shard =
          plan::shardOf(static_cast<int64_t>(elements), comm.size(), root);
      if (shard.count > 0)
        call(reinterpret_cast<std::byte *>(address) +
                 shard.offset * elementBytes,
             static_cast<std::size_t>(shard.count), root);
    }
  check(nccl().ncclGroupEnd(), "ncclGroupEnd");
}

void NcclGroup::reduceScatterSum(
    CUstream stream,
    std::span<const std::pair<CUdeviceptr, std::size_t>> buffers) {
  forEachShard(
      buffers, sizeof(float), [&](void *data, std::size_t count, int root) {
        check(nccl().ncclReduce(data, data, count, ncclFloat32, ncclSum, root,
                                handle, reinterpret_cast<cudaStream_t>(stream)),
              "ncclReduce");
      });
}

void NcclGroup::allGatherShards(
    CUstream stream,
    std::span<const std::pair<CUdeviceptr, std::size_t>> buffers,
    ncclDataType_t type) {
  forEachShard(
      buffers, type == ncclBfloat16 ? 2 : 4,
      [&](void *data, std::size_t count, int root) {
        check(nccl().ncclBroadcast(data, data, count, type, root, handle,
                                   reinterpret_cast<cudaStream_t>(stream)),
              "ncclBroadcast");
      });
}

void NcclGroup::synchronize(CUstream stream, const char *what) {
  const DriverApi &cu = driver();
  auto start = std::chrono::steady_clock::now();
  auto pause = std::chrono::microseconds(10);
  for (;;) {
    CUresult status = cu.cuStreamQuery(stream);
    if (status == CUDA_SUCCESS)
      return;
    if (status != CUDA_ERROR_NOT_READY)
      KILN_CUDA_CHECK(status);
    ncclResult_t async = ncclSuccess;
    if (ncclResult_t r = nccl().ncclCommGetAsyncError(handle, &async);
        r != ncclSuccess || async != ncclSuccess)
      fail(fmt::format("{}: NCCL reports {}", what,
                       ncclText(r != ncclSuccess ? r : async)));
    if (std::chrono::steady_clock::now() - start > timeout)
      fail(fmt::format(
          "{}: waited {} s for the other ranks' collectives: a rank died or "
          "hangs (KILN_COMM_TIMEOUT sets the wait)",
          what,
          std::chrono::duration_cast<std::chrono::seconds>(timeout).count()));
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(1000));
  }
}

void NcclGroup::fail(const std::string &why) {
  // The communicator is unusable after an error: abort it, so that its
  // kernels stop waiting for the other ranks.
  if (handle) {
    nccl().ncclCommAbort(handle);
    handle = nullptr;
  }
  throw Error(fmt::format("rank {}: {}", comm.rank(), why));
}

std::string NcclGroup::describe() const {
  int version = 0;
  nccl().ncclGetVersion(&version);
  // NCCL_VERSION(X, Y, Z) = X * 10000 + Y * 100 + Z since 2.9.
  return fmt::format("NCCL {}.{}.{}, {} ranks", version / 10000,
                     version / 100 % 100, version % 100, comm.size());
}

} // namespace kiln::rt::cuda
