//===- CudaBackend.cpp - Runs a plan on an NVIDIA GPU ---------------------===//

#include "runtime/cuda/CudaBackend.h"

#include "runtime/Error.h"
#include "runtime/Storage.h"
#include "runtime/cuda/CublasLt.h"
#include "runtime/cuda/CudaApi.h"
#include "runtime/cuda/Device.h"
#include "runtime/cuda/DeviceHeader.h"
#include "runtime/cuda/KernelCache.h"
#include "runtime/cuda/Nccl.h"
#include "runtime/cuda/Nvrtc.h"

#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <thread>

namespace kiln::rt::cuda {

namespace {

/// cuBLASLt's workspace: enough for its split-K and stream-K algorithms.
constexpr std::size_t kGemmWorkspaceBytes = 32u << 20;

/// KILN_CUDA_SYNC=1: wait for every launch, so that a fault names its
/// kernel (and, through Backend::run, its step).
bool syncEachLaunch() {
  const char *value = std::getenv("KILN_CUDA_SYNC");
  return value && std::string_view(value) == "1";
}

class CudaBackend final : public Backend {
public:
  CudaBackend(const Plan &plan, Communicator *comm);
  ~CudaBackend() override;

  const Plan &plan() const override { return planRef; }
  std::string describe() const override {
    return fmt::format("cuda ({}, {}{})", device.name, device.arch(),
                       group ? ", " + group->describe() : std::string());
  }
  std::vector<float> read(int64_t value) override;
  void write(int64_t value, std::span<const float> data) override;
  void writeInt32(int64_t value, std::span<const int32_t> data) override;
  const std::map<std::string, double> &kernelSeconds() const override {
    return seconds;
  }

protected:
  /// Queues the step's launches (or its cuBLASLt GEMM) on the stream.
  void runStep(std::size_t index, const Step &step) override;
  /// Waits for the stream, then reports a bad token id a kernel flagged.
  void finishRun() override;

private:
  void loadKernels();
  /// Under KILN_CUDA_SYNC=1, waits for the launch of `kernel` just queued
  /// and names it in the error if it faulted.
  void checkLaunch(const std::string &kernel);
  /// Waits for the stream; a fault of an earlier launch says how to find it.
  void synchronize();
  /// A GEMM through cuBLASLt.
  void runGemm(const Step &step, const GemmStep &gemm);
  void runLinearCrossEntropy(const Step &step,
                             const LinearCrossEntropyStep &op);
  void launchOne(const CudaLaunch &launch);
  /// Queues a collective (all_reduce, reduce_scatter, all_gather) on the
  /// collectives' stream, after the work queued so far on the compute
  /// stream.
  void runCollective(const Step &step);
  /// ZeRO-1's global_norm: the rank's sum of squares (every launch but the
  /// last), summed over the ranks, then its square root (the last launch).
  void runShardedNorm(const Step &step);
  /// Orders the collectives' stream after the work queued so far on the
  /// compute stream.
  void afterCompute();
  /// Makes the compute stream wait for the collectives in flight if `step`
  /// reads or writes a buffer they reduce.
  void awaitCollectives(const Step &step);
  /// The step's kernel launches, in order.
  void launchKernels(const Step &step);
  CUdeviceptr address(int64_t value) const {
    return arena + planRef.values.at(value).offset;
  }

  const Plan &planRef;
  DeviceInfo device;
  CUcontext context = nullptr;
  CUstream stream = nullptr;
  CUdeviceptr arena = 0, scratch = 0, errorFlag = 0, workspace = 0;
  const bool syncLaunches = syncEachLaunch();
  std::vector<CUmodule> modules;
  std::map<std::string, CUfunction> functions;
  std::unique_ptr<LtGemm> gemm;
  std::map<std::string, double> seconds;
  // Data parallelism: the NCCL communicator, the stream its collectives run
  // on (ordered after the compute stream by `computed`, before it by
  // `reduced`), and the arena ranges of the collectives in flight.
  std::unique_ptr<Communicator> ownComm;
  std::unique_ptr<NcclGroup> group;
  CUstream commStream = nullptr;
  CUevent computed = nullptr, reduced = nullptr;
  std::vector<std::pair<int64_t, int64_t>> inFlight;
  /// This process's data-parallel rank: the `rank` launch argument.
  int rank = 0;
};

CudaBackend::CudaBackend(const Plan &plan, Communicator *comm) : planRef(plan) {
  requireRanks(plan.dataParallel, comm);
  rank = comm ? comm->rank() : 0;
  std::string why;
  std::optional<DeviceInfo> info = probeDevice(&why);
  if (!info)
    throw Error("--backend cuda: no usable GPU: " + why);
  const DriverApi &cu = driver();
  // The ranks on one node take its GPUs in turn, by local rank.
  if (comm && comm->localRank() > 0) {
    int count = 0;
    KILN_CUDA_CHECK(cu.cuDeviceGetCount(&count));
    info = probeDevice(&why, comm->localRank() % std::max(count, 1));
    if (!info)
      throw Error(fmt::format("--backend cuda: local rank {} has no usable "
                              "GPU: {}",
                              comm->localRank(), why));
  }
  device = *info;
  CUdevice handle;
  KILN_CUDA_CHECK(cu.cuDeviceGet(&handle, device.ordinal));
  KILN_CUDA_CHECK(cu.cuDevicePrimaryCtxRetain(&context, handle));
  KILN_CUDA_CHECK(cu.cuCtxSetCurrent(context));
  // A non-blocking stream does not wait for the legacy default stream, so
  // every copy and memset below goes to this stream (the *Async calls):
  // a synchronous cuMemcpyHtoD or cuMemsetD8 could land after a launch.
  KILN_CUDA_CHECK(cu.cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  KILN_CUDA_CHECK(
      cu.cuMemAlloc(&arena, std::max<int64_t>(plan.arenaBytes, 256)));
  KILN_CUDA_CHECK(cu.cuMemsetD8Async(
      arena, 0, std::max<int64_t>(plan.arenaBytes, 256), stream));
  KILN_CUDA_CHECK(
      cu.cuMemAlloc(&scratch, std::max<int64_t>(plan.cudaScratchBytes, 256)));
  KILN_CUDA_CHECK(cu.cuMemAlloc(&errorFlag, sizeof(int)));
  KILN_CUDA_CHECK(cu.cuMemsetD8Async(errorFlag, 0, sizeof(int), stream));
  KILN_CUDA_CHECK(cu.cuMemAlloc(&workspace, kGemmWorkspaceBytes));
  gemm = std::make_unique<LtGemm>();
  loadKernels();
  bool collectives = false;
  for (const Step &step : plan.steps)
    collectives |= step.cuda.library == plan::kNccl;
  if (collectives) {
    // (One rank with collectives, --force-collectives: NCCL over a world
    // of one, each reduction the identity.)
    if (!comm) {
      ownComm = createCommunicator();
      comm = ownComm.get();
    }
    group = std::make_unique<NcclGroup>(*comm);
    KILN_CUDA_CHECK(cu.cuStreamCreate(&commStream, CU_STREAM_NON_BLOCKING));
    KILN_CUDA_CHECK(cu.cuEventCreate(&computed, CU_EVENT_DISABLE_TIMING));
    KILN_CUDA_CHECK(cu.cuEventCreate(&reduced, CU_EVENT_DISABLE_TIMING));
  }
}

CudaBackend::~CudaBackend() {
  const DriverApi &cu = driver();
  // Teardown errors are not actionable; release what can be released.
  if (stream)
    cu.cuStreamSynchronize(stream);
  if (commStream)
    cu.cuStreamSynchronize(commStream);
  group.reset();
  for (CUevent event : {computed, reduced})
    if (event)
      cu.cuEventDestroy(event);
  if (commStream)
    cu.cuStreamDestroy(commStream);
  gemm.reset();
  for (CUmodule module : modules)
    cu.cuModuleUnload(module);
  for (CUdeviceptr p : {arena, scratch, errorFlag, workspace})
    if (p)
      cu.cuMemFree(p);
  if (stream)
    cu.cuStreamDestroy(stream);
  if (context) {
    CUdevice handle;
    if (cu.cuDeviceGet(&handle, device.ordinal) == CUDA_SUCCESS)
      cu.cuDevicePrimaryCtxRelease(handle);
  }
}

void CudaBackend::loadKernels() {
  // What the kernels need of the device: tensor cores for BF16 (the flash
  // attention kernels) and the dynamic shared memory of each launch.
  std::map<std::string, unsigned> sharedBytes;
  for (const Step &step : planRef.steps)
    for (const CudaLaunch &launch : step.cuda.launches) {
      if (device.major * 10 + device.minor < launch.minComputeCapability)
        throw Error(fmt::format(
            "kernel {} needs compute capability {}.{} or newer (BF16 tensor "
            "cores); {} is {}.{}: train with --precision fp32 on this GPU",
            launch.kernel, launch.minComputeCapability / 10,
            launch.minComputeCapability % 10, device.name, device.major,
            device.minor));
      if (launch.sharedBytes >
          static_cast<unsigned>(device.sharedMemoryPerBlockOptin))
        throw Error(fmt::format(
            "kernel {} needs {} KiB of shared memory per block; {} allows "
            "{} KiB: recompile the plan for this GPU (kiln compile --target "
            "cuda:{})",
            launch.kernel, launch.sharedBytes / 1024, device.name,
            device.sharedMemoryPerBlockOptin / 1024, device.arch()));
      unsigned &most = sharedBytes[launch.kernel];
      most = std::max(most, launch.sharedBytes);
    }
  // Cubins precompiled into the plan for this architecture are used as they
  // are; the rest compile with NVRTC (in parallel, through the cache).
  const auto precompiled = planRef.cudaCubins.find(device.arch());
  std::vector<CompileRequest> requests;
  std::map<std::string, std::vector<std::byte>> cubins;
  for (const auto &[name, source] : planRef.cudaKernels) {
    if (precompiled != planRef.cudaCubins.end() &&
        precompiled->second.count(name)) {
      cubins[name] = precompiled->second.at(name);
      continue;
    }
    requests.push_back(
        CompileRequest{name,
                       source,
                       device.arch(),
                       {},
                       {{planRef.cudaHeader, deviceHeaderSource()}}});
  }
  if (!requests.empty()) {
    // Without a cache directory (no KILN_CACHE_DIR, XDG_CACHE_HOME or HOME)
    // kernels compile every run.
    std::optional<KernelCache> cache;
    try {
      cache.emplace();
    } catch (const Error &) {
    }
    int threads = std::max(1u, std::thread::hardware_concurrency());
    for (CompiledKernel &kernel :
         compileKernels(requests, cache ? &*cache : nullptr, threads))
      cubins[kernel.name] = std::move(kernel.cubin);
  }
  const DriverApi &cu = driver();
  for (const auto &[name, cubin] : cubins) {
    CUmodule module;
    KILN_CUDA_CHECK(cu.cuModuleLoadData(&module, cubin.data()));
    modules.push_back(module);
    CUfunction function;
    KILN_CUDA_CHECK(cu.cuModuleGetFunction(&function, module, name.c_str()));
    functions[name] = function;
    // Above 48 KiB a kernel must opt in to its dynamic shared memory.
    if (unsigned bytes = sharedBytes[name]; bytes > 48 * 1024)
      KILN_CUDA_CHECK(cu.cuFuncSetAttribute(
          function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
          static_cast<int>(bytes)));
  }
}

std::vector<float> CudaBackend::read(int64_t value) {
  const ValueInfo &info = planRef.values.at(value);
  std::vector<std::byte> bytes(info.bytes());
  const DriverApi &cu = driver();
  KILN_CUDA_CHECK(
      cu.cuMemcpyDtoHAsync(bytes.data(), address(value), bytes.size(), stream));
  synchronize();
  std::vector<float> data(info.numElements());
  widenToFloat(info.dtype, bytes.data(), data.data(), data.size());
  return data;
}

void CudaBackend::write(int64_t value, std::span<const float> data) {
  const ValueInfo &info = checkWrite(planRef, value, data.size());
  std::vector<std::byte> bytes(info.bytes());
  narrowFromFloat(info.dtype, data.data(), bytes.data(), data.size());
  const DriverApi &cu = driver();
  // Queued after every launch that reads the value; waited for before
  // `bytes` goes.
  KILN_CUDA_CHECK(
      cu.cuMemcpyHtoDAsync(address(value), bytes.data(), bytes.size(), stream));
  synchronize();
}

void CudaBackend::writeInt32(int64_t value, std::span<const int32_t> data) {
  checkWrite(planRef, value, data.size(), /*int32=*/true);
  const DriverApi &cu = driver();
  KILN_CUDA_CHECK(cu.cuMemcpyHtoDAsync(address(value), data.data(),
                                       data.size_bytes(), stream));
  synchronize();
}

void CudaBackend::checkLaunch(const std::string &kernel) {
  if (!syncLaunches)
    return;
  try {
    KILN_CUDA_CHECK(driver().cuStreamSynchronize(stream));
  } catch (const Error &error) {
    throw Error(fmt::format("kernel {} failed (KILN_CUDA_SYNC=1): {}", kernel,
                            error.what()));
  }
}

void CudaBackend::synchronize() {
  try {
    // With collectives, the wait watches NCCL's errors and the timeout.
    if (group)
      group->synchronize(stream, "the step's kernels and collectives");
    else
      KILN_CUDA_CHECK(driver().cuStreamSynchronize(stream));
  } catch (const Error &error) {
    if (syncLaunches)
      throw;
    throw Error(fmt::format("{}\n(a kernel launched earlier failed; rerun "
                            "with KILN_CUDA_SYNC=1 to name it and its step)",
                            error.what()));
  }
}

void CudaBackend::runStep(std::size_t, const Step &step) {
  if (!inFlight.empty())
    awaitCollectives(step);
  std::visit(
      [&](const auto &op) {
        using T = std::decay_t<decltype(op)>;
        if constexpr (std::is_same_v<T, AllReduceStep> ||
                      std::is_same_v<T, ReduceScatterStep> ||
                      std::is_same_v<T, AllGatherStep>)
          runCollective(step);
        else if constexpr (std::is_same_v<T, GlobalNormStep>)
          op.shards > 1 ? runShardedNorm(step) : launchKernels(step);
        else if constexpr (std::is_same_v<T, GemmStep>)
          runGemm(step, op);
        else if constexpr (std::is_same_v<T, LinearCrossEntropyStep>)
          runLinearCrossEntropy(step, op);
        else
          launchKernels(step);
      },
      step.op);
}

void CudaBackend::afterCompute() {
  const DriverApi &cu = driver();
  KILN_CUDA_CHECK(cu.cuEventRecord(computed, stream));
  KILN_CUDA_CHECK(cu.cuStreamWaitEvent(commStream, computed, 0));
}

void CudaBackend::runCollective(const Step &step) {
  // (Plan::parse checked: tensors gathered or reduced in place, f32 but for
  // the BF16 compute copies an all_gather fills, over the plan's ranks,
  // which the constructor checked this run has.)
  const DriverApi &cu = driver();
  afterCompute();
  // The compute stream must not touch what the collective reads or writes
  // until it is done (awaitCollectives).
  for (const auto *ids : {&step.inputs, &step.outputs})
    for (int64_t id : *ids) {
      const ValueInfo &value = planRef.values.at(id);
      inFlight.emplace_back(value.offset, value.offset + value.bytes());
    }
  // The buffers, in place: the outputs, at their inputs' or (N shards into
  // N destinations) their destinations' offsets.
  auto buffersOf = [&](std::optional<ElemType> dtype) {
    std::vector<std::pair<CUdeviceptr, std::size_t>> buffers;
    for (int64_t id : step.outputs) {
      const ValueInfo &value = planRef.values.at(id);
      if (!dtype || value.dtype == *dtype)
        buffers.emplace_back(address(id),
                             static_cast<std::size_t>(value.numElements()));
    }
    return buffers;
  };
  const char *call = "ncclAllReduce";
  if (step.kind() == plan::StepKind::AllReduce) {
    group->allReduceSum(commStream, buffersOf(std::nullopt));
  } else if (step.kind() == plan::StepKind::ReduceScatter) {
    call = "ncclReduce (reduce_scatter)";
    group->reduceScatterSum(commStream, buffersOf(std::nullopt));
  } else {
    call = "ncclBroadcast (all_gather)";
    std::size_t n = step.outputs.size();
    if (step.inputs.size() == 2 * n) {
      // This rank's shard into its place in each destination first.
      for (std::size_t i = 0; i < n; ++i) {
        const ValueInfo &dest = planRef.values.at(step.inputs[n + i]);
        std::size_t bytes = plan::dtypeBytes(dest.dtype);
        plan::Shard shard =
            plan::shardOf(dest.numElements(), planRef.dataParallel, rank);
        if (shard.count > 0)
          KILN_CUDA_CHECK(cu.cuMemcpyDtoDAsync(
              address(step.inputs[n + i]) + shard.offset * bytes,
              address(step.inputs[i]), shard.count * bytes, commStream));
      }
    }
    // One group per element type, in the same order on every rank.
    for (ElemType dtype : {ElemType::F32, ElemType::BF16})
      if (auto buffers = buffersOf(dtype); !buffers.empty())
        group->allGatherShards(commStream, buffers,
                               dtype == ElemType::BF16 ? ncclBfloat16
                                                       : ncclFloat32);
  }
  KILN_CUDA_CHECK(cu.cuEventRecord(reduced, commStream));
  checkLaunch(call);
}

void CudaBackend::runShardedNorm(const Step &step) {
  const std::vector<CudaLaunch> &launches = step.cuda.launches;
  if (launches.size() < 2 || !group)
    throw Error("a sharded global_norm needs its partial, sum and square-root "
                "launches and the job's collectives");
  for (std::size_t i = 0; i + 1 < launches.size(); ++i)
    launchOne(launches[i]);
  // The ranks' sums of squares, summed; the compute stream waits for it
  // (and with it for every collective queued before).
  const DriverApi &cu = driver();
  afterCompute();
  std::pair<CUdeviceptr, std::size_t> sum{address(step.outputs[0]), 1};
  group->allReduceSum(commStream, std::span(&sum, 1));
  KILN_CUDA_CHECK(cu.cuEventRecord(reduced, commStream));
  KILN_CUDA_CHECK(cu.cuStreamWaitEvent(stream, reduced, 0));
  inFlight.clear();
  checkLaunch("ncclAllReduce (global_norm)");
  launchOne(launches.back());
}

void CudaBackend::awaitCollectives(const Step &step) {
  auto touches = [&](int64_t id) {
    const ValueInfo &value = planRef.values.at(id);
    int64_t begin = value.offset, end = value.offset + value.extentBytes();
    for (auto [b, e] : inFlight)
      if (begin < e && b < end)
        return true;
    return false;
  };
  bool wait = false;
  for (const auto *ids : {&step.inputs, &step.outputs})
    for (int64_t id : *ids)
      wait |= touches(id);
  if (!wait)
    return;
  // (`reduced` is the last collective's: it follows all the earlier ones
  // on their stream.)
  KILN_CUDA_CHECK(driver().cuStreamWaitEvent(stream, reduced, 0));
  inFlight.clear();
}

void CudaBackend::runGemm(const Step &step, const GemmStep &g) {
  if (step.cuda.library != plan::kCublasLt) {
    launchKernels(step);
    return;
  }
  // The epilogue's buffers (docs/plan.md); cuBLASLt's aux pointer is the
  // pre-activation dgelu_tanh reads or gelu_tanh writes.
  GemmOperands operands = gemmOperands(step, g);
  auto pointer = [&](int64_t id) {
    return id < 0 ? nullptr : reinterpret_cast<void *>(address(id));
  };
  LtGemm::Epilogue epilogue;
  epilogue.kind = g.epilogue;
  epilogue.bias = pointer(operands.bias);
  epilogue.aux =
      pointer(operands.aux >= 0 ? operands.aux : operands.preActivation);
  epilogue.biasGrad = pointer(operands.biasGrad);
  gemm->run(stream, planRef.values.at(step.inputs[0]).dtype,
            planRef.values.at(step.outputs[0]).dtype, g.batch, g.m, g.n, g.k,
            g.transposeA, g.transposeB,
            reinterpret_cast<const void *>(address(step.inputs[0])),
            reinterpret_cast<const void *>(address(step.inputs[1])),
            reinterpret_cast<void *>(address(step.outputs[0])), epilogue,
            reinterpret_cast<void *>(workspace), kGemmWorkspaceBytes);
  checkLaunch("cublasLtMatmul");
}

/// Per chunk: the logits GEMM into the FP32 scratch value, the row kernel
/// (launch 1, its last argument the chunk index), the input-gradient GEMM
/// and the weight-gradient GEMM added to the FP32 accumulator; around
/// them launch 0 (count the valid targets) and launch 2 (the mean loss).
/// The gradient the GEMMs read: the scratch value (FP32) or the step's
/// scratch at plan::linearCrossEntropyScratch's offset (BF16). An
/// evaluation skips the two gradient GEMMs.
void CudaBackend::runLinearCrossEntropy(const Step &step,
                                        const LinearCrossEntropyStep &op) {
  const auto &values = planRef.values;
  const ValueInfo &x = values.at(step.inputs[0]);
  const ValueInfo &w = values.at(step.inputs[1]);
  int64_t hidden = x.shape.back(), vocab = w.shape[0];
  int64_t rows = x.numElements() / hidden;
  bool bf16 = x.dtype == ElemType::BF16;
  plan::LinearCrossEntropyScratch layout =
      plan::linearCrossEntropyScratch(rows, op.chunkRows, vocab, bf16);
  CUdeviceptr logits = address(step.outputs[3]);
  CUdeviceptr dlogits = bf16 ? scratch + layout.dlogits : logits;
  int64_t elem = static_cast<int64_t>(elemSize(x.dtype));
  auto *ws = reinterpret_cast<void *>(workspace);
  launchOne(step.cuda.launches[0]);
  CudaLaunch rowKernel = step.cuda.launches[1];
  for (int64_t chunk = 0, begin = 0; begin < rows;
       ++chunk, begin += op.chunkRows) {
    int64_t n = std::min(op.chunkRows, rows - begin);
    auto xChunk = reinterpret_cast<const void *>(address(step.inputs[0]) +
                                                 begin * hidden * elem);
    gemm->run(stream, x.dtype, ElemType::F32, 1, n, vocab, hidden, false, true,
              xChunk, reinterpret_cast<const void *>(address(step.inputs[1])),
              reinterpret_cast<void *>(logits), nullptr, ws,
              kGemmWorkspaceBytes);
    checkLaunch("cublasLtMatmul (linear_cross_entropy logits)");
    rowKernel.args.back().integer = chunk;
    launchOne(rowKernel);
    if (evaluating())
      continue; // the loss alone: no gradient GEMMs
    gemm->run(stream, x.dtype, x.dtype, 1, n, hidden, vocab, false, false,
              reinterpret_cast<const void *>(dlogits),
              reinterpret_cast<const void *>(address(step.inputs[1])),
              reinterpret_cast<void *>(address(step.outputs[1]) +
                                       begin * hidden * elem),
              nullptr, ws, kGemmWorkspaceBytes);
    checkLaunch("cublasLtMatmul (linear_cross_entropy input gradient)");
    gemm->run(stream, x.dtype, ElemType::F32, 1, vocab, hidden, n, true, false,
              reinterpret_cast<const void *>(dlogits), xChunk,
              reinterpret_cast<void *>(address(step.outputs[2])), nullptr, ws,
              kGemmWorkspaceBytes, /*accumulate=*/chunk > 0);
    checkLaunch("cublasLtMatmul (linear_cross_entropy weight gradient)");
  }
  launchOne(step.cuda.launches[2]);
}

void CudaBackend::launchKernels(const Step &step) {
  if (!step.cuda.library.empty())
    throw Error("a '" + step.cuda.library + "' step that is not a gemm");
  for (const CudaLaunch &launch : step.cuda.launches)
    launchOne(launch);
}

void CudaBackend::launchOne(const CudaLaunch &launch) {
  const DriverApi &cu = driver();
  // Argument storage: every parameter is 8 bytes (a pointer or a long
  // long) or 4 (a float); cuLaunchKernel takes their addresses.
  std::vector<uint64_t> words(launch.args.size());
  std::vector<float> floats(launch.args.size());
  std::vector<void *> params(launch.args.size());
  for (std::size_t i = 0; i < launch.args.size(); ++i) {
    const CudaArg &arg = launch.args[i];
    switch (arg.kind) {
    case CudaArg::Kind::Value:
      words[i] = address(arg.integer);
      break;
    case CudaArg::Kind::Null:
      words[i] = 0;
      break;
    case CudaArg::Kind::Scratch:
      words[i] = scratch + arg.integer;
      break;
    case CudaArg::Kind::ErrorFlag:
      words[i] = errorFlag;
      break;
    case CudaArg::Kind::Int:
      words[i] = static_cast<uint64_t>(arg.integer);
      break;
    case CudaArg::Kind::Float:
      floats[i] = static_cast<float>(arg.number);
      params[i] = &floats[i];
      continue;
    case CudaArg::Kind::Double:
      std::memcpy(&words[i], &arg.number, sizeof(double));
      break;
    case CudaArg::Kind::Rank:
      words[i] = static_cast<uint64_t>(rank);
      break;
    }
    params[i] = &words[i];
  }
  KILN_CUDA_CHECK(cu.cuLaunchKernel(
      functions.at(launch.kernel), launch.grid[0], launch.grid[1],
      launch.grid[2], launch.block[0], launch.block[1], launch.block[2],
      launch.sharedBytes, stream, params.data(), nullptr));
  checkLaunch(launch.kernel);
}

void CudaBackend::finishRun() {
  const DriverApi &cu = driver();
  if (!inFlight.empty()) {
    KILN_CUDA_CHECK(cu.cuStreamWaitEvent(stream, reduced, 0));
    inFlight.clear();
  }
  int flag = 0;
  KILN_CUDA_CHECK(cu.cuMemcpyDtoHAsync(&flag, errorFlag, sizeof(flag), stream));
  synchronize();
  if (flag != 0) {
    KILN_CUDA_CHECK(cu.cuMemsetD8Async(errorFlag, 0, sizeof(int), stream));
    throw Error(fmt::format("a token id or target outside the vocabulary "
                            "(vocab_size {}) at flat position {} of the "
                            "batch",
                            planRef.model.value("vocab_size", int64_t(0)),
                            flag - 1));
  }
}

} // namespace

std::unique_ptr<Backend> createCudaBackend(const Plan &plan,
                                           Communicator *comm) {
  if (!plan.hasCuda)
    throw Error("--backend cuda: the plan has no CUDA kernels; recompile it");

  return std::make_unique<CudaBackend>(plan, comm);
}

} // namespace kiln::rt::cuda
