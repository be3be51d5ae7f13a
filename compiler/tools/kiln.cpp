//===- kiln.cpp - The Kiln driver -----------------------------------------===//
//
//   kiln train <config.json> --data <files>  compile and train
//   kiln compile <config.json> --emit=...     the IR or plan of a stage
//   kiln inspect [--json] <config.json>     parameters, counts, memory
//   kiln tokenize <text files> -o <shard>   byte-level llm.c token shards
//
//===----------------------------------------------------------------------===//

#include "compiler/frontend/BuildModel.h"
#include "compiler/translate/Plan.h"
#include "dialects/dist/DistDialect.h"
#include "dialects/dist/DistOps.h"
#include "dialects/nn/NNDialect.h"
#include "dialects/nn/PassAttrs.h"
#include "dialects/tile/TileDialect.h"
#include "dialects/tile/TileOps.h"
#include "passes/CostModel.h"
#include "passes/Passes.h"
#include "passes/Report.h"
#include "runtime/cuda/Device.h"
#include "runtime/cuda/Precompile.h"
#include "runtime/dist/Communicator.h"
#include "runtime/io/Tokenize.h"
#include "runtime/plan/Schema.h"
#include "runtime/train/Trainer.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"

#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

using namespace mlir;
using namespace kiln;
namespace cl = llvm::cl;

namespace {

cl::SubCommand trainCommand("train",
                            "Compile a model's training step and train it "
                            "on token data");
cl::SubCommand compileCommand("compile",
                              "Compile a model's training step and print the "
                              "IR or the plan of a stage");
cl::SubCommand inspectCommand("inspect",
                              "Print a model's parameters (Hugging Face "
                              "names, shapes), their count and the memory "
                              "of its training step");
cl::SubCommand tokenizeCommand("tokenize",
                               "Turn text files into an llm.c token shard "
                               "(byte-level tokens)");

cl::opt<std::string> configPath(cl::Positional, cl::desc("<config.json>"),
                                cl::Required, cl::sub(inspectCommand),
                                cl::sub(compileCommand), cl::sub(trainCommand));
cl::opt<bool> jsonOutput("json", cl::desc("Print JSON"),
                         cl::sub(inspectCommand));
cl::opt<int64_t> batchSize("batch",
                           cl::desc("Sequences per optimizer step (the "
                                    "global batch)"),
                           cl::init(8), cl::sub(inspectCommand),
                           cl::sub(compileCommand), cl::sub(trainCommand));
cl::opt<int64_t> microBatchSize(
    "micro-batch",
    cl::desc("Sequences per micro-step: the step's gradients are "
             "accumulated over --batch / --micro-batch micro-batches "
             "(default: --batch, one micro-batch)"),
    cl::init(0), cl::sub(inspectCommand), cl::sub(compileCommand),
    cl::sub(trainCommand));
cl::opt<int64_t> microBatchCount(
    "micro-batches",
    cl::desc("Micro-batches per optimizer step, instead of --micro-batch "
             "(--batch must divide by it)"),
    cl::init(0), cl::sub(inspectCommand), cl::sub(compileCommand),
    cl::sub(trainCommand));
cl::opt<int64_t> dataParallelFlag(
    "dp",
    cl::desc("Data-parallel ranks the step is compiled for (default: the "
             "launcher's world size for train, else 1): each rank runs "
             "--batch / dp sequences per step and the gradients are summed "
             "over the ranks"),
    cl::init(1), cl::sub(inspectCommand), cl::sub(compileCommand),
    cl::sub(trainCommand));
cl::opt<double> bucketMiB(
    "bucket-mb",
    cl::desc("MiB of gradients reduced together under data parallelism "
             "(dist-reduce-gradients)"),
    cl::init(25.0), cl::sub(compileCommand), cl::sub(trainCommand));
cl::opt<bool> forceCollectives(
    "force-collectives",
    cl::desc("Reduce the gradients over the ranks even with one rank (each "
             "reduction the identity): runs the communication path, to "
             "measure its cost"),
    cl::init(false), cl::sub(compileCommand), cl::sub(trainCommand));
cl::opt<int64_t> zeroStage(
    "zero",
    cl::desc("ZeRO stage under data parallelism: 0 (every rank keeps the "
             "whole optimizer state) or 1 (AdamW moments sharded over the "
             "ranks, gradients reduce-scattered, parameters all-gathered)"),
    cl::init(0), cl::sub(inspectCommand), cl::sub(compileCommand),
    cl::sub(trainCommand));
cl::opt<int64_t> seqLen("seq-len", cl::desc("Tokens per sequence"),
                        cl::init(128), cl::sub(inspectCommand),
                        cl::sub(compileCommand), cl::sub(trainCommand));
cl::opt<std::string> precision(
    "precision",
    cl::desc("Compute precision: bf16 (default; FP32 master weights and "
             "accumulation) or fp32"),
    cl::init("bf16"), cl::sub(compileCommand), cl::sub(trainCommand),
    cl::sub(inspectCommand));

cl::opt<std::string> packing(
    "packing",
    cl::desc("How the data fills the batch rows: stream (default: contiguous "
             "windows across documents), documents (whole documents packed "
             "into rows, attention and positions per document) or pad (one "
             "document per row, padded)"),
    cl::init("stream"), cl::sub(compileCommand), cl::sub(trainCommand),
    cl::sub(inspectCommand));
cl::opt<int64_t> endOfText(
    "eot",
    cl::desc("The token that ends each document, for --packing documents "
             "and pad (default: 256 for text Kiln tokenizes, else the "
             "config's eos_token_id)"),
    cl::init(-1), cl::sub(compileCommand), cl::sub(trainCommand));

enum class Fusion { On, Off };
cl::opt<Fusion> fusion(
    "fusion",
    cl::desc("Fuse row-wise ops into one kernel per group (nn-fuse): on "
             "(default) or off, the unfused step that computes the same"),
    cl::init(Fusion::On),
    cl::values(clEnumValN(Fusion::On, "on", "fuse"),
               clEnumValN(Fusion::Off, "off", "one kernel per op")),
    cl::sub(compileCommand), cl::sub(trainCommand), cl::sub(inspectCommand));

cl::opt<std::string> fuseOptions(
    "fuse-options",
    cl::desc("nn-fuse's options as kiln-opt --nn-fuse takes them, with "
             "--fusion=on: groups to switch off (\"rope-attention=false "
             "gemm-epilogue=false\"), cross-entropy-chunk-rows=N, ..."),
    cl::value_desc("options"), cl::sub(compileCommand), cl::sub(trainCommand),
    cl::sub(inspectCommand));

enum class Stage { NN, Train, Tile, Plan };
cl::opt<Stage> emitStage(
    "emit", cl::desc("What to print"), cl::init(Stage::Plan),
    cl::values(clEnumValN(Stage::NN, "nn", "the forward pass in nn"),
               clEnumValN(Stage::Train, "train",
                          "the training step after nn-autodiff"),
               clEnumValN(Stage::Tile, "tile",
                          "the step lowered to tile kernels, memory planned"),
               clEnumValN(Stage::Plan, "plan",
                          "the plan the runtime executes (JSON)")),
    cl::sub(compileCommand));
cl::opt<std::string> outputPath("o", cl::desc("Output file (default stdout)"),
                                cl::init("-"), cl::sub(compileCommand),
                                cl::sub(tokenizeCommand));

cl::opt<std::string>
    target("target",
           cl::desc("Precompile the CUDA kernels into the plan: an "
                    "architecture (cuda:sm_90a, cuda:sm_80, ...) or a GPU "
                    "(cuda:a100, cuda:h100, cuda:h200: its architecture, and "
                    "tiles sized for it) (NVRTC, no GPU needed); prints "
                    "ptxas' registers and spills per kernel"),
           cl::sub(compileCommand), cl::sub(inspectCommand));
cl::opt<std::string> tuningDb(
    "tuning-db",
    cl::desc("Tuning database of tile sizes (JSON), before the cost model"),
    cl::sub(compileCommand), cl::sub(trainCommand), cl::sub(inspectCommand));
cl::opt<bool> reportChoices(
    "report", cl::desc("Print what the planning passes chose and why"),
    cl::sub(compileCommand), cl::sub(trainCommand), cl::sub(inspectCommand));

cl::opt<bool> failOnSpills("fail-on-spills",
                           cl::desc("With --target: fail if any kernel "
                                    "spills registers"),
                           cl::sub(compileCommand));

// Optimizer settings, compiled into the step.
cl::opt<double> weightDecay("weight-decay",
                            cl::desc("AdamW weight decay of matrices"),
                            cl::init(0.1), cl::sub(compileCommand),
                            cl::sub(trainCommand));
cl::opt<double> maxGradNorm("grad-clip",
                            cl::desc("Clip gradients to this global norm "
                                     "(0: off)"),
                            cl::init(1.0), cl::sub(compileCommand),
                            cl::sub(trainCommand));
cl::opt<double> adamBeta1("beta1", cl::desc("AdamW's first-moment decay"),
                          cl::init(0.9), cl::sub(compileCommand),
                          cl::sub(trainCommand));
cl::opt<double> adamBeta2("beta2", cl::desc("AdamW's second-moment decay"),
                          cl::init(0.95), cl::sub(compileCommand),
                          cl::sub(trainCommand));
cl::opt<double> adamEps("eps", cl::desc("AdamW's epsilon"), cl::init(1e-8),
                        cl::sub(compileCommand), cl::sub(trainCommand));

// Training.
cl::list<std::string> dataPaths("data",
                                cl::desc("Token shards (.bin), directories "
                                         "of them or of .txt files, text "
                                         "files, or glob patterns; several "
                                         "after one --data, or "
                                         "comma-separated"),
                                cl::CommaSeparated, cl::sub(trainCommand));
cl::list<std::string> valDataPaths(
    "val-data",
    cl::desc("Held-out data to evaluate on, as --data takes it (default: "
             "the *_val* shards of an llm.c directory given to --data)"),
    cl::CommaSeparated, cl::sub(trainCommand));
cl::opt<int64_t> evalEvery("eval-every",
                           cl::desc("Steps between evaluations (default: a "
                                    "tenth of the run's; 0: none)"),
                           cl::sub(trainCommand));
cl::opt<int64_t> evalTokens("eval-tokens",
                            cl::desc("Validation tokens per evaluation "
                                     "(default: 20 batches', at most the "
                                     "data's)"),
                            cl::sub(trainCommand));
cl::opt<int64_t> steps("steps", cl::desc("Optimizer steps"),
                       cl::init(rt::kDefaultSteps), cl::sub(trainCommand));
cl::opt<double> learningRate("lr", cl::desc("Peak learning rate"),
                             cl::init(rt::kDefaultLr), cl::sub(trainCommand));
cl::opt<int64_t> warmup("warmup",
                        cl::desc("Warmup steps (default: a tenth of the "
                                 "steps, at most 100)"),
                        cl::init(-1), cl::sub(trainCommand));
cl::opt<std::string> lrSchedule(
    "lr-schedule",
    cl::desc("The decay after the warmup: cosine (default), linear, "
             "constant, or wsd (warmup-stable-decay: the peak until the last "
             "--decay-fraction of the steps, then linear)"),
    cl::sub(trainCommand));
cl::opt<double> decayFraction(
    "decay-fraction",
    cl::desc("wsd: the share of the steps, at the end, that decay (0.2)"),
    cl::sub(trainCommand));
cl::opt<double> minLr("min-lr",
                      cl::desc("The rate the decay ends at (default: a tenth "
                               "of --lr)"),
                      cl::sub(trainCommand));
cl::opt<uint64_t> seed("seed", cl::desc("Seed of the initialisation"),
                       cl::init(0), cl::sub(trainCommand));
cl::opt<std::string> outDir("out",
                            cl::desc("Output directory (default: out; when "
                                     "resuming, the run's own)"),
                            cl::sub(trainCommand));
cl::opt<std::string> initPath("init",
                              cl::desc("Initial weights (safetensors, "
                                       "Hugging Face names)"),
                              cl::sub(trainCommand));
cl::opt<std::string> saveGrads("save-grads",
                               cl::desc("Write the first step's tokens, loss "
                                        "and gradients (safetensors)"),
                               cl::sub(trainCommand));
cl::opt<std::string> resumeDir("resume",
                               cl::desc("Continue a run from its output "
                                        "directory or a checkpoint"),
                               cl::sub(trainCommand));
cl::opt<int64_t> saveEvery("save-every",
                           cl::desc("Checkpoint every N steps (0: at the "
                                    "end only)"),
                           cl::init(0), cl::sub(trainCommand));
cl::opt<int64_t> keepCheckpoints("keep",
                                 cl::desc("Checkpoints of this run to keep "
                                          "(0: all)"),
                                 cl::init(rt::kDefaultKeep),
                                 cl::sub(trainCommand));
cl::opt<bool> noCheckpoint("no-checkpoint",
                           cl::desc("Write no checkpoint, not even at the end "
                                    "(benchmarks; metrics and the loss curve "
                                    "are still written)"),
                           cl::sub(trainCommand));
cl::opt<bool> logScale("log-scale",
                       cl::desc("loss.svg's loss axis logarithmic"),
                       cl::sub(trainCommand));
cl::opt<bool> overwrite("overwrite",
                        cl::desc("Start a new run in an --out directory that "
                                 "holds an earlier run, deleting its "
                                 "checkpoints and metrics"),
                        cl::sub(trainCommand));

cl::opt<std::string> backendChoice(
    "backend",
    cl::desc("auto (cuda if a usable GPU exists, else host), host or cuda"),
    cl::init("auto"), cl::sub(trainCommand));

/// The target whose memories size the kernels' tiles: that of --target when
/// compiling for a GPU; when training on a GPU (--backend cuda, or auto with
/// a usable GPU), that GPU's; else the host.
std::string tileTarget() {
  llvm::StringRef arch(target);
  if (arch.consume_front("cuda:"))
    return lookupTarget(arch) ? arch.str() : targetForArch(arch);
  if (trainCommand && backendChoice != "host")
    if (std::optional<kiln::rt::cuda::DeviceInfo> device =
            kiln::rt::cuda::probeDevice())
      return targetForDevice(device->name, device->arch(), device->totalMemory);
  return "host";
}

/// The architecture --target names: cuda:sm_XY, or a GPU target's; empty
/// (with the reason in `error`) for anything else.
std::string targetArch(std::string &error) {
  llvm::StringRef arch(target);
  if (arch.consume_front("cuda:")) {
    if (arch.starts_with("sm_"))
      return arch.str();
    llvm::Expected<Target> named = lookupTarget(arch);
    if (named && named->gpu)
      return named->arch;
    if (!named)
      llvm::consumeError(named.takeError());
  }
  error = "--target must be cuda:sm_XY (e.g. cuda:sm_90a), got '" + target +
          "'; or name a GPU: cuda:a100, cuda:h100, cuda:h200";
  return "";
}

cl::list<std::string> tokenizeInputs(cl::Positional, cl::OneOrMore,
                                     cl::desc("<text files>"),
                                     cl::sub(tokenizeCommand));

int fail(const llvm::Twine &message) {
  llvm::WithColor::error(llvm::errs(), "kiln") << message << "\n";
  return 1;
}

int fail(llvm::Error error) { return fail(llvm::toString(std::move(error))); }

/// The micro-batch split of --batch: sequences per micro-step and
/// micro-batches per step, from --micro-batch or --micro-batches.
struct MicroBatching {
  int64_t size = 1, count = 1;
};

/// The data-parallel ranks: --dp, else (kiln train) the launcher's world.
int64_t dataParallel() {
  rt::LaunchInfo launch;
  std::string error;
  if (dataParallelFlag.getNumOccurrences() || !trainCommand ||
      !rt::detectLaunch(launch, error))
    return dataParallelFlag; // (runTrain reports a bad environment)
  return launch.size;
}

FailureOr<MicroBatching> microBatching() {
  if (batchSize < 1) {
    fail("--batch must be positive, got " + llvm::Twine(batchSize.getValue()));
    return failure();
  }
  int64_t ranks = dataParallel();
  if (ranks < 1) {
    fail("--dp must be positive, got " + llvm::Twine(ranks));
    return failure();
  }
  if (zeroStage != 0 && zeroStage != 1) {
    fail("--zero must be 0 or 1 (the ZeRO stage), got " +
         llvm::Twine(zeroStage.getValue()));
    return failure();
  }
  if (microBatchSize.getNumOccurrences() && microBatchSize < 1) {
    fail("--micro-batch must be positive, got " +
         llvm::Twine(microBatchSize.getValue()));
    return failure();
  }
  if (microBatchCount.getNumOccurrences() && microBatchCount < 1) {
    fail("--micro-batches must be positive, got " +
         llvm::Twine(microBatchCount.getValue()));
    return failure();
  }
  if (batchSize % ranks != 0) {
    fail(llvm::formatv("--batch {0} does not divide among {1} data-parallel "
                       "ranks: every rank takes the same number of "
                       "sequences",
                       batchSize.getValue(), ranks));
    return failure();
  }
  // What one rank runs per step, and the words that say so.
  int64_t perRank = batchSize / ranks;
  std::string batch =
      ranks == 1 ? llvm::formatv("--batch {0}", perRank).str()
                 : llvm::formatv("--batch {0} over {1} ranks ({2} each)",
                                 batchSize.getValue(), ranks, perRank)
                       .str();
  MicroBatching split{perRank, 1};
  if (microBatchSize.getNumOccurrences()) {
    if (perRank % microBatchSize != 0) {
      fail(llvm::formatv("{0} is not a multiple of --micro-batch {1}: every "
                         "micro-batch holds the same number of sequences",
                         batch, microBatchSize.getValue()));
      return failure();
    }
    split = {microBatchSize, perRank / microBatchSize};
  }
  if (microBatchCount.getNumOccurrences()) {
    if (perRank % microBatchCount != 0) {
      fail(llvm::formatv("{0} does not divide into --micro-batches {1} "
                         "micro-batches of the same size",
                         batch, microBatchCount.getValue()));
      return failure();
    }
    if (microBatchSize.getNumOccurrences() && split.count != microBatchCount) {
      fail(llvm::formatv("--micro-batch {0} makes {1} micro-batches of {2}, "
                         "but --micro-batches says {3}",
                         microBatchSize.getValue(), split.count, batch,
                         microBatchCount.getValue()));
      return failure();
    }
    split = {perRank / microBatchCount, microBatchCount};
  }
  return split;
}

FailureOr<OwningOpRef<ModuleOp>>
compileModel(MLIRContext &context, const ModelConfig &config, Stage stage);

/// What the planned training step holds: the arena (persistent parameters,
/// optimizer state and inputs plus the peak of the temporaries), its
/// largest single buffer, and its kernels. Every op of the memory-planned
/// step is one plan step, one kernel: counted per decoder layer (the layer
/// its location names) and direction (forward F; backward B and W), the
/// optimizer's (O), and the rest (embedding, RoPE table, final norm, LM
/// head, loss).
struct StepSummary {
  int64_t peak = 0, persistent = 0, largest = 0;
  int64_t kernels = 0, optimizerKernels = 0, outsideLayerKernels = 0;
  /// The most kernels of any one layer.
  int64_t layerForward = 0, layerBackward = 0;
  /// Bytes every kernel reads and writes if it reads each operand once and
  /// writes each result once: a prediction, and a lower bound for GEMMs and
  /// attention, which re-read tiles.
  int64_t bytesMoved = 0;
  /// Per rank, from the step's buffers: the FP32 masters, the gradients the
  /// optimizer reads, the AdamW moments (this rank's shards under ZeRO-1)
  /// and the BF16 compute copies.
  int64_t parameterBytes = 0, gradientBytes = 0, optimizerBytes = 0,
          computeCopyBytes = 0;
  /// Predicted (cost model, on the tile target): the step's kernels one
  /// after another, each a roofline of its FLOPs and bytes, the F/B/W ones
  /// once per micro-batch; and its collectives as rings over the links.
  std::string target;
  double computeSeconds = 0, communicationSeconds = 0;
};

/// The cost model's FLOPs of a tile op: the GEMMs' 2 m n k, attention's,
/// the fused LM head's three GEMMs; 0 for the rest (memory-bound).
double predictedFlops(Operation &op) {
  if (auto gemm = dyn_cast<tile::GemmOp>(op))
    return 2.0 * gemm.getBatch() * gemm.getM() * gemm.getN() * gemm.getK();
  auto attention = [](auto flash, bool backward) {
    auto type = cast<RankedTensorType>(flash.getQuery().getType());
    AttentionShape shape{type.getDimSize(0),
                         type.getDimSize(1),
                         flash.getNumHeads(),
                         flash.getNumKvHeads(),
                         type.getDimSize(2) / flash.getNumHeads(),
                         type.getElementTypeBitWidth() / 8,
                         flash.getCausal()};
    return attentionFlops(shape, backward);
  };
  if (auto fwd = dyn_cast<tile::FlashAttentionFwdOp>(op))
    return attention(fwd, false);
  if (auto bwd = dyn_cast<tile::FlashAttentionBwdOp>(op))
    return attention(bwd, true);
  if (auto head = dyn_cast<tile::LinearCrossEntropyOp>(op)) {
    auto input = cast<RankedTensorType>(head.getInput().getType());
    auto weight = cast<RankedTensorType>(head.getWeight().getType());
    return 6.0 * (input.getNumElements() / input.getShape().back()) *
           weight.getNumElements();
  }
  return 0;
}

/// Micro-batches per optimizer step the passes chose (kiln.model's
/// micro_batches; 1 when absent).
int64_t microBatchesOf(ModuleOp module) {
  if (DictionaryAttr model = attrs::kModel.get(module))
    if (auto count = model.getAs<IntegerAttr>("micro_batches"))
      return count.getInt();
  return 1;
}

/// How often `op` runs in an optimizer step of `microBatches`: once for the
/// optimizer (chunk O) and the ops of the last micro-batch only, else once
/// per micro-batch.
double runsPerStep(Operation &op, int64_t microBatches) {
  auto chunk = op.getAttrOfType<StringAttr>(attrs::kChunk);
  bool once =
      (chunk && chunk.getValue() == "O") || op.hasAttr("last_micro_step");
  return once ? 1.0 : double(microBatches);
}

/// Records in kiln.model what the runtime's MFU needs: the cost model's
/// FLOPs of one optimizer step on one rank (`flops_per_step`: the GEMMs,
/// attention and the fused LM head, each micro-batch's; the memory-bound
/// kernels count none) and the peak rate of the target the tiles are sized
/// for (`peak_flops`, `peak_target`).
LogicalResult recordStepFlops(ModuleOp module) {
  auto step = module.lookupSymbol<func::FuncOp>("train_step");
  if (!step)
    return success();
  int64_t microBatches = microBatchesOf(module);
  double flops = 0;
  for (Operation &op : step.getBody().front().without_terminator())
    flops += runsPerStep(op, microBatches) * predictedFlops(op);
  llvm::Expected<Target> target = lookupTarget(tileTarget());
  if (!target) {
    fail(target.takeError());
    return failure();
  }
  Builder builder(module.getContext());
  attrs::setModelEntry(module, plan::model::kFlopsPerStep,
                       builder.getF64FloatAttr(flops));
  attrs::setModelEntry(module, plan::model::kPeakFlops,
                       builder.getF64FloatAttr(target->peakFlops));
  attrs::setModelEntry(module, plan::model::kPeakTarget,
                       builder.getStringAttr(target->name));
  return success();
}

FailureOr<StepSummary> summarizeStep(MLIRContext &context,
                                     const ModelConfig &config) {
  auto module = compileModel(context, config, Stage::Tile);
  if (failed(module))
    return failure();
  auto step = (*module)->lookupSymbol<func::FuncOp>("train_step");
  auto attr = [&](StringRef name) {
    return step->getAttrOfType<IntegerAttr>(name).getInt();
  };
  StepSummary summary{attr(attrs::kArenaBytes), attr(attrs::kPersistentBytes),
                      attr(attrs::kLargestBufferBytes)};
  llvm::DenseMap<int64_t, std::pair<int64_t, int64_t>> perLayer;
  auto bytes = [](Value v) -> int64_t {
    auto type = dyn_cast<RankedTensorType>(v.getType());
    if (!type)
      return 0;
    unsigned bits = type.getElementType().getIntOrFloatBitWidth();
    return type.getNumElements() * std::max(bits / 8, 1u);
  };
  for (BlockArgument arg : step.getArguments()) {
    unsigned index = arg.getArgNumber();
    if (attrs::kParam.getArg(step, index))
      summary.parameterBytes += bytes(arg);
    else if (attrs::kExpAvg.getArg(step, index) ||
             attrs::kExpAvgSq.getArg(step, index))
      summary.optimizerBytes += bytes(arg);
    else if (attrs::kComputeCopy.getArg(step, index))
      summary.computeCopyBytes += bytes(arg);
  }
  for (tile::AdamWOp adamw : step.getBody().front().getOps<tile::AdamWOp>())
    for (unsigned i = 0; i < adamw.getNumParams(); ++i)
      summary.gradientBytes += bytes(adamw.getGrad(i));
  llvm::Expected<Target> target = lookupTarget(tileTarget());
  if (!target) {
    fail(target.takeError());
    return failure();
  }
  summary.target = target->name;
  int64_t microBatches = microBatchesOf(**module);
  for (Operation &op : step.getBody().front().without_terminator()) {
    // Views and in-place concatenations launch nothing and move nothing.
    if (isa<tile::ViewOp, tile::ConcatOp>(op))
      continue;
    double repeats = runsPerStep(op, microBatches);
    if (isa<dist::AllReduceOp, dist::ReduceScatterOp, dist::AllGatherOp,
            dist::AllGatherIntoOp>(op)) {
      // (Each rank's whole tensors: a gather into destinations moves theirs.)
      double tensors = 0;
      for (Value v : op.getResults())
        tensors += bytes(v);
      auto group = op.getAttrOfType<dist::GroupAttr>("group");
      summary.communicationSeconds +=
          repeats * predictCollectiveSeconds(*target, tensors, group.getSize(),
                                             isa<dist::AllReduceOp>(op));
    } else {
      double moved = 0;
      for (Value v : llvm::concat<Value>(op.getOperands(), op.getResults()))
        moved += bytes(v);
      summary.computeSeconds +=
          repeats * predictSeconds(*target, predictedFlops(op), moved);
    }
    ++summary.kernels;
    for (Value v : llvm::concat<Value>(op.getOperands(), op.getResults()))
      summary.bytesMoved += bytes(v);
    auto chunk = op.getAttrOfType<StringAttr>(attrs::kChunk);
    StringRef direction = chunk ? chunk.getValue() : "F";
    if (direction == "O") {
      ++summary.optimizerKernels;
      continue;
    }
    // A region counts in the layer of its first op: the kernel that ends
    // layer N (its residual add) and starts layer N + 1 (the next norm)
    // counts once, in layer N; the one that gathers the embeddings and
    // normalizes them for layer 0 counts outside the layers.
    auto fused = dyn_cast<tile::FusedOp>(op);
    std::optional<int64_t> layer =
        layerOf(fused ? fused.getBody().front().front().getLoc() : op.getLoc());
    if (!layer) {
      ++summary.outsideLayerKernels;
      continue;
    }
    auto &[forward, backward] = perLayer[*layer];
    ++(direction == "F" ? forward : backward);
  }
  for (auto &[layer, counts] : perLayer) {
    summary.layerForward = std::max(summary.layerForward, counts.first);
    summary.layerBackward = std::max(summary.layerBackward, counts.second);
  }
  return summary;
}

int runInspect(MLIRContext &context) {
  llvm::Expected<ModelConfig> config = readModelConfig(configPath);
  if (!config)
    return fail(config.takeError());
  BatchShape shape{batchSize, seqLen, Precision::BF16};
  auto module = buildForward(context, *config, shape);
  if (!module)
    return fail(module.takeError());
  std::vector<ParameterInfo> params = listParameters(**module);
  int64_t total = 0;
  for (const ParameterInfo &p : params)
    total += p.numElements();
  FailureOr<StepSummary> memory = summarizeStep(context, *config);
  if (failed(memory))
    return 1;
  FailureOr<MicroBatching> split = microBatching();
  if (failed(split))
    return 1;

  llvm::raw_ostream &os = llvm::outs();
  if (jsonOutput) {
    llvm::json::OStream json(os, 2);
    json.object([&] {
      json.attribute("architecture", architectureName(config->architecture));
      json.attribute("num_parameters", total);
      json.attribute("num_layers", config->numLayers);
      json.attribute("hidden_size", config->hiddenSize);
      json.attribute("num_heads", config->numHeads);
      json.attribute("num_kv_heads", config->numKvHeads);
      json.attribute("head_dim", config->headDim);
      json.attribute("vocab_size", config->vocabSize);
      json.attribute("tie_word_embeddings", config->tieEmbeddings);
      json.attribute("batch", static_cast<int64_t>(batchSize));
      json.attribute("micro_batch", split->size);
      json.attribute("micro_batches", split->count);
      json.attribute("data_parallel", dataParallel());
      json.attribute("zero", static_cast<int64_t>(zeroStage));
      // What each rank holds (every rank runs the same step).
      json.attributeObject("per_rank_memory_bytes", [&] {
        json.attribute("parameters", memory->parameterBytes);
        json.attribute("gradients", memory->gradientBytes);
        json.attribute("optimizer_state", memory->optimizerBytes);
        json.attribute("compute_copies", memory->computeCopyBytes);
        json.attribute("persistent", memory->persistent);
        json.attribute("peak", memory->peak);
      });
      json.attribute("seq_len", static_cast<int64_t>(seqLen));
      json.attribute("precision", std::string(precision));
      json.attribute("peak_memory_bytes", memory->peak);
      json.attribute("persistent_memory_bytes", memory->persistent);
      json.attribute("largest_buffer_bytes", memory->largest);
      json.attribute("fusion", fusion == Fusion::On ? "on" : "off");
      json.attribute("kernels_per_step", memory->kernels);
      json.attributeObject("kernels_per_layer", [&] {
        json.attribute("forward", memory->layerForward);
        json.attribute("backward", memory->layerBackward);
      });
      json.attribute("kernels_optimizer", memory->optimizerKernels);
      json.attribute("kernels_outside_layers", memory->outsideLayerKernels);
      json.attribute("predicted_bytes_moved_per_step", memory->bytesMoved);
      json.attributeObject("predicted_step_seconds", [&] {
        json.attribute("target", memory->target);
        json.attribute("kernels", memory->computeSeconds);
        json.attribute("collectives", memory->communicationSeconds);
        json.attribute("without_overlap",
                       memory->computeSeconds + memory->communicationSeconds);
      });
      json.attributeArray("notes", [&] {
        for (const std::string &note : config->notes)
          json.value(note);
      });
      json.attributeArray("parameters", [&] {
        for (const ParameterInfo &p : params)
          json.object([&] {
            json.attribute("name", p.name);
            json.attributeArray("shape", [&] {
              for (int64_t d : p.shape)
                json.value(d);
            });
            json.attribute("dtype", "F32");
            json.attribute("init", p.init);
          });
      });
    });
    os << "\n";
    return 0;
  }
  os << architectureName(config->architecture) << ": "
     << llvm::formatv("{0:N}", total) << " parameters in " << params.size()
     << " tensors\n";
  for (const std::string &note : config->notes)
    os << "note: " << note << "\n";
  os << llvm::formatv(
      "training step (batch {0} x {1} tokens{7}, {2}): {3:N} "
      "bytes planned = {4:N} parameters, optimizer state and "
      "inputs + {5:N} peak temporaries; largest buffer {6:N}\n",
      batchSize, seqLen, precision, memory->peak, memory->persistent,
      memory->peak - memory->persistent, memory->largest,
      split->count > 1 ? llvm::formatv(" in {0} micro-batches of {1}",
                                       split->count, split->size)
                             .str()
                       : std::string());
  os << llvm::formatv(
      "per rank: {0:N} bytes of parameters, {1:N} of gradients, {2:N} of "
      "optimizer state{3}, {4:N} of BF16 compute copies\n",
      memory->parameterBytes, memory->gradientBytes, memory->optimizerBytes,
      zeroStage == 1 && dataParallel() > 1
          ? llvm::formatv(" (ZeRO-1: sharded over {0} ranks)", dataParallel())
                .str()
          : std::string(),
      memory->computeCopyBytes);
  os << llvm::formatv("predicted step on {0} (cost model, rooflines): "
                      "{1:F4} s of kernels + {2:F4} s of collectives\n",
                      memory->target, memory->computeSeconds,
                      memory->communicationSeconds);
  os << llvm::formatv(
      "kernels per step: {0} (per layer {1} forward, {2} backward with "
      "weight gradients; optimizer {3}; embedding, RoPE table, final norm, "
      "LM head and loss {4}), fusion {5}; predicted {6:N} bytes moved per "
      "step\n",
      memory->kernels, memory->layerForward, memory->layerBackward,
      memory->optimizerKernels, memory->outsideLayerKernels,
      fusion == Fusion::On ? "on" : "off", memory->bytesMoved);
  for (const ParameterInfo &p : params) {
    std::string dims;
    llvm::raw_string_ostream dimsStream(dims);
    llvm::interleave(p.shape, dimsStream, "x");
    os << llvm::formatv("  {0,-56} {1,-14} {2,14:N}\n", p.name, dims,
                        p.numElements());
  }
  return 0;
}

/// Builds the model and runs the pipeline up to `stage`.
FailureOr<OwningOpRef<ModuleOp>>
compileModel(MLIRContext &context, const ModelConfig &config, Stage stage) {
  if (precision != "bf16" && precision != "fp32") {
    fail("--precision must be bf16 or fp32, got '" + precision + "'");
    return failure();
  }
  FailureOr<MicroBatching> split = microBatching();
  if (failed(split))
    return failure();
  if (packing != "stream" && packing != "documents" && packing != "pad") {
    fail("--packing must be stream, documents or pad, got '" + packing + "'");
    return failure();
  }
  BatchShape shape{split->size, seqLen,
                   precision == "fp32" ? Precision::FP32 : Precision::BF16};
  shape.packing = packing == "documents" ? Packing::Documents
                  : packing == "pad"     ? Packing::Pad
                                         : Packing::Stream;
  if (endOfText.getNumOccurrences() || endOfText >= 0) {
    if (endOfText < 0 || endOfText >= config.vocabSize) {
      fail(llvm::formatv("--eot {0} is not a token of the model's vocabulary "
                         "(vocab_size {1})",
                         endOfText.getValue(), config.vocabSize));
      return failure();
    }
    shape.endOfText = endOfText;
  }
  auto module = buildForward(context, config, shape);
  if (!module) {
    fail(module.takeError());
    return failure();
  }
  if (stage == Stage::NN)
    return std::move(*module);
  if (fusion == Fusion::Off && !fuseOptions.empty()) {
    llvm::errs() << "kiln: error: --fuse-options configures nn-fuse, which "
                    "--fusion=off leaves out\n";
    return failure();
  }
  PassManager pm(&context);
  if (fusion == Fusion::On) {
    NNPackProjectionsPassOptions pack;
    pack.report = reportChoices;
    pm.addPass(createNNPackProjectionsPass(pack));
  }
  NNAutodiffPassOptions autodiff;
  autodiff.weightDecay = weightDecay;
  autodiff.maxGradNorm = maxGradNorm;
  autodiff.beta1 = adamBeta1;
  autodiff.beta2 = adamBeta2;
  autodiff.epsilon = adamEps;
  pm.addPass(createNNAutodiffPass(autodiff));
  NNAccumulateGradientsPassOptions accumulate;
  accumulate.microBatches = split->count;
  pm.addPass(createNNAccumulateGradientsPass(accumulate));
  DistReduceGradientsPassOptions reduce;
  reduce.dataParallel = dataParallel();
  reduce.bucketMiB = bucketMiB;
  reduce.report = reportChoices;
  reduce.singleRank = forceCollectives;
  reduce.zero = zeroStage;
  pm.addPass(createDistReduceGradientsPass(reduce));
  if (stage != Stage::Train) {
    if (fusion == Fusion::On) {
      NNFusePassOptions fuse;
      fuse.report = reportChoices;
      std::unique_ptr<Pass> pass = createNNFusePass(fuse);
      if (failed(pass->initializeOptions(fuseOptions, [](const Twine &msg) {
            llvm::errs() << "kiln: error: --fuse-options: " << msg << "\n";
            return failure();
          })))
        return failure();
      pm.addPass(std::move(pass));
    }
    NNTileAttentionPassOptions attention;
    attention.target = tileTarget();
    attention.tuningDb = tuningDb;
    attention.report = reportChoices;
    pm.addPass(createNNTileAttentionPass(attention));
    pm.addPass(createNNLowerToTilePass());
    if (fusion == Fusion::On) {
      TileFoldViewsPassOptions views;
      views.report = reportChoices;
      pm.addPass(createTileFoldViewsPass(views));
    }
    TilePlanMemoryPassOptions memory;
    memory.report = reportChoices;
    pm.addPass(createTilePlanMemoryPass(memory));
  }
  if (failed(pm.run(**module))) {
    fail("compilation failed (see the diagnostics above)");
    return failure();
  }
  if (stage == Stage::Tile || stage == Stage::Plan)
    if (failed(recordStepFlops(**module)))
      return failure();
  return std::move(*module);
}

int runCompile(MLIRContext &context) {
  llvm::Expected<ModelConfig> config = readModelConfig(configPath);
  if (!config)
    return fail(config.takeError());
  auto module = compileModel(context, *config, emitStage);
  if (failed(module))
    return 1;
  std::string error;
  auto output = openOutputFile(outputPath, &error);
  if (!output)
    return fail(error);
  if (emitStage == Stage::Plan) {
    std::string plan;
    llvm::raw_string_ostream planStream(plan);
    if (failed(writePlan(**module, planStream)))
      return fail("cannot write the plan (see the diagnostics above)");
    if (!target.empty()) {
      std::string error;
      std::string arch = targetArch(error);
      if (arch.empty())
        return fail(error);
      rt::PrecompileResult result;
      if (!rt::precompileCuda(plan, arch, result, error))
        return fail("--target " + target + ": " + error);
      llvm::errs() << result.report;
      if (failOnSpills && result.spillingKernels > 0)
        return fail(llvm::Twine(result.spillingKernels) +
                    " kernels spill registers (see above)");
      plan = std::move(result.planText);
    }
    output->os() << plan;
  } else {
    (*module)->print(output->os());
  }
  output->keep();
  return 0;
}

/// `value` if its flag was given on the command line, else nothing.
template <typename T> std::optional<T> given(const cl::opt<T> &option) {
  if (option.getNumOccurrences() == 0)
    return std::nullopt;
  return option.getValue();
}

/// A resumed run is recompiled with the batch shape, precision and
/// optimizer settings it was started with, unless a flag says otherwise.
bool applyRecordedSettings() {
  rt::CompiledSettings recorded;
  std::string error;
  if (!rt::readCompiledSettings(resumeDir, recorded, error)) {
    fail("--resume " + resumeDir + ": " + error);
    return false;
  }
  if (!batchSize.getNumOccurrences())
    batchSize = recorded.batch;
  if (!microBatchSize.getNumOccurrences() &&
      !microBatchCount.getNumOccurrences() && recorded.microBatches > 1 &&
      batchSize % (dataParallel() * recorded.microBatches) == 0)
    microBatchCount = recorded.microBatches;
  if (!seqLen.getNumOccurrences())
    seqLen = recorded.seqLen;
  if (recorded.precision && !precision.getNumOccurrences())
    precision = *recorded.precision;
  if (recorded.weightDecay && !weightDecay.getNumOccurrences())
    weightDecay = *recorded.weightDecay;
  if (recorded.gradClip && !maxGradNorm.getNumOccurrences())
    maxGradNorm = *recorded.gradClip;
  for (auto [option, value] : {std::pair{&adamBeta1, recorded.beta1},
                               std::pair{&adamBeta2, recorded.beta2},
                               std::pair{&adamEps, recorded.eps}})
    if (value && !option->getNumOccurrences())
      *option = *value;
  // (Another --zero, or another number of ranks, re-shards the moments.)
  if (!zeroStage.getNumOccurrences())
    zeroStage = recorded.zero;
  if (!packing.getNumOccurrences())
    packing = recorded.packing;
  if (recorded.eot && !endOfText.getNumOccurrences())
    endOfText = *recorded.eot;
  return true;
}

int runTrain(MLIRContext &context) {
  llvm::Expected<ModelConfig> config = readModelConfig(configPath);
  if (!config)
    return fail(config.takeError());
  // Under mpirun or srun every rank compiles the same step for the world it
  // was launched in.
  rt::LaunchInfo launch;
  if (std::string error; !rt::detectLaunch(launch, error))
    return fail(error);
  if (dataParallelFlag.getNumOccurrences() && dataParallelFlag != launch.size)
    return fail(llvm::formatv(
        "--dp {0}, but {1} processes were launched{2}; kiln train runs one "
        "data-parallel rank per process: leave out --dp, or launch {0} "
        "(mpirun -np {0})",
        dataParallelFlag.getValue(), launch.size,
        launch.launcher.empty() ? "" : " (by " + launch.launcher + ")"));
  if (launch.rank == 0)
    for (const std::string &note : config->notes)
      llvm::WithColor::note(llvm::errs(), "kiln") << note << "\n";
  if (!resumeDir.empty() && !applyRecordedSettings())
    return 1;
  auto module = compileModel(context, *config, Stage::Plan);
  if (failed(module))
    return 1;
  rt::TrainOptions options;
  llvm::raw_string_ostream plan(options.planText);
  if (failed(writePlan(**module, plan)))
    return fail("cannot write the plan (see the diagnostics above)");
  auto configText = llvm::MemoryBuffer::getFile(configPath);
  if (configText)
    options.configText = (*configText)->getBuffer().str();
  options.configSource = configPath;
  options.data.assign(dataPaths.begin(), dataPaths.end());
  options.valData.assign(valDataPaths.begin(), valDataPaths.end());
  options.evalEvery = given(evalEvery);
  options.evalTokens = given(evalTokens);
  if (outDir.getNumOccurrences())
    options.outDir = outDir;
  options.steps = given(steps);
  options.lr = given(learningRate);
  options.warmupSteps = given(warmup);
  if (lrSchedule.getNumOccurrences())
    options.lrSchedule = lrSchedule.getValue();
  options.decayFraction = given(decayFraction);
  options.minLr = given(minLr);
  options.seed = given(seed);
  options.initPath = initPath;
  options.saveGradsPath = saveGrads;
  options.resumeDir = resumeDir;
  options.saveEvery = given(saveEvery);
  options.keep = given(keepCheckpoints);
  options.noCheckpoint = noCheckpoint;
  options.logScale = logScale;
  options.overwrite = overwrite;
  options.progressBar = isatty(STDERR_FILENO);
  options.backend = backendChoice;
  options.command = "kiln train " + configPath;
  return rt::runTraining(options);
}

/// Refuses numeric flags out of range, naming the flag, before any work.
/// (kiln train's schedule and checkpoint flags are checked by the runtime,
/// which kiln-run shares.)
bool checkNumericFlags() {
  auto bad = [](const llvm::Twine &message) {
    fail(message);
    return false;
  };
  if (batchSize <= 0)
    return bad("--batch must be positive, got " + llvm::Twine(batchSize));
  if (seqLen <= 0)
    return bad("--seq-len must be positive, got " + llvm::Twine(seqLen));
  if (!(weightDecay >= 0) || !std::isfinite(weightDecay))
    return bad(llvm::formatv("--weight-decay must be a finite number >= 0, "
                             "got {0}",
                             llvm::format("%g", weightDecay.getValue())));
  if (!(maxGradNorm >= 0) || !std::isfinite(maxGradNorm))
    return bad(llvm::formatv("--grad-clip must be a finite number >= 0 (0: "
                             "off), got {0}",
                             llvm::format("%g", maxGradNorm.getValue())));
  for (auto [flag, beta] : {std::pair{"--beta1", adamBeta1.getValue()},
                            std::pair{"--beta2", adamBeta2.getValue()}})
    if (!(beta >= 0 && beta < 1))
      return bad(llvm::formatv("{0} must be in [0, 1), got {1}", flag,
                               llvm::format("%g", beta)));
  if (!(adamEps > 0) || !std::isfinite(adamEps))
    return bad(llvm::formatv("--eps must be a finite number > 0, got {0}",
                             llvm::format("%g", adamEps.getValue())));
  return true;
}

//===----------------------------------------------------------------------===//
// Reports
//===----------------------------------------------------------------------===//

/// Where a diagnostic is, as a user reads it: the Hugging Face module the
/// front end named ("model.layers.3.self_attn"), a file position, or
/// nothing.
std::string describeLocation(Location loc) {
  if (auto name = dyn_cast<NameLoc>(loc))
    return name.getName().str();
  if (auto file = dyn_cast<FileLineColLoc>(loc))
    return llvm::formatv("{0}:{1}:{2}", file.getFilename(), file.getLine(),
                         file.getColumn())
        .str();
  if (auto fused = dyn_cast<FusedLoc>(loc)) {
    std::string text;
    for (Location part : fused.getLocations())
      if (std::string where = describeLocation(part); !where.empty())
        text += (text.empty() ? "" : ", ") + where;
    return text;
  }
  return "";
}

/// Prints the passes' remarks (`--report`) and their notes, each at the
/// module it concerns:
///   model.layers.0.self_attn: remark: nn-tile-attention: forward, layers
///   0-31: ...
/// Errors keep MLIR's default printing.
LogicalResult printRemark(Diagnostic &diag) {
  if (diag.getSeverity() != DiagnosticSeverity::Remark)
    return failure();
  auto print = [](Diagnostic &d,
                  llvm::raw_ostream &(*kind)(llvm::raw_ostream &,
                                             llvm::StringRef, bool)) {
    std::string where = describeLocation(d.getLocation());
    kind(llvm::errs(), where.empty() ? "kiln" : where, false)
        << d.str() << "\n";
  };
  print(diag, llvm::WithColor::remark);
  for (Diagnostic &note : diag.getNotes())
    print(note, llvm::WithColor::note);
  return success();
}

//===----------------------------------------------------------------------===//
// Help, version and command-line errors
//===----------------------------------------------------------------------===//

cl::SubCommand *subcommands[] = {&trainCommand, &compileCommand,
                                 &inspectCommand, &tokenizeCommand};

/// `value` as the help shows a default.
template <typename T> std::string defaultText(cl::opt<T> &option) {
  const T &value = option.getDefault().getValue();
  if constexpr (std::is_same_v<T, std::string>)
    return value;
  else if constexpr (std::is_floating_point_v<T>)
    return llvm::formatv("{0}", llvm::format("%g", value)).str();
  else if constexpr (std::is_enum_v<T>) {
    // The name under which cl::values lists it.
    const auto &parser = option.getParser();
    for (unsigned i = 0, e = parser.getNumOptions(); i != e; ++i)
      if (static_cast<const cl::OptionValue<T> &>(parser.getOptionValue(i))
              .getValue() == value)
        return parser.getOption(i).str();
    return "";
  } else
    return std::to_string(value);
}

/// Appends "(default: X)" to the help of each option whose description does
/// not already say its default. Flags (off unless given) and empty strings
/// have nothing to show.
template <typename... Options> void describeDefaults(Options &...options) {
  static std::vector<std::unique_ptr<std::string>> texts;
  auto describe = [&](auto &option) {
    if (!option.getDefault().hasValue() ||
        llvm::StringRef(option.HelpStr).contains("default"))
      return;
    std::string value = defaultText(option);
    if (value.empty() ||
        (std::is_same_v<std::decay_t<decltype(option)>, cl::opt<bool>> &&
         value == "0"))
      return;
    texts.push_back(std::make_unique<std::string>(
        (option.HelpStr + " (default: " + value + ")").str()));
    option.setDescription(*texts.back());
  };
  (describe(options), ...);
}

/// Kiln's version, then that of the LLVM and MLIR it was built with.
void printVersion(llvm::raw_ostream &os) {
  os << "kiln " KILN_VERSION "\n  built with LLVM and MLIR " LLVM_VERSION_STRING
        "\n";
}

/// Whether `arg` names a model config (a .json file, or a directory that
/// holds a config.json) rather than data.
bool namesConfig(llvm::StringRef arg) {
  return arg.ends_with(".json") ||
         llvm::sys::fs::exists(arg + llvm::Twine("/config.json"));
}

/// `kiln train`'s arguments with the files after --data or --val-data
/// (`--data a.bin b.bin`, as a shell expands `--data shards/*.bin`) made
/// one occurrence each (`--data=a.bin --data=b.bin`), up to the next option
/// or the config.
std::vector<std::string> spreadFileLists(int argc, char **argv) {
  std::vector<std::string> args(argv, argv + argc);
  if (args.size() < 2 || args[1] != "train")
    return args;
  std::vector<std::string> spread;
  for (std::size_t i = 0; i < args.size(); ++i) {
    spread.push_back(args[i]);
    llvm::StringRef arg = args[i];
    if (arg != "--data" && arg != "--val-data" && arg != "-data" &&
        arg != "-val-data")
      continue;
    std::string flag = arg.ltrim('-').str();
    spread.pop_back();
    bool first = true;
    while (i + 1 < args.size() &&
           !llvm::StringRef(args[i + 1]).starts_with("-") &&
           !(namesConfig(args[i + 1]) && !first)) {
      spread.push_back("--" + flag + "=" + args[++i]);
      first = false;
    }
    if (first) // no value: LLVM says so
      spread.push_back(args[i]);
  }
  return spread;
}

/// Parses the command line. On an error, prints LLVM's diagnostics in
/// Kiln's words and names the help of the subcommand at fault:
///   kiln train: unknown option '--foo'; see 'kiln train --help'
bool parseCommandLine(int argc, char **argv) {
  std::string errors;
  llvm::raw_string_ostream errorStream(errors);
  if (cl::ParseCommandLineOptions(
          argc, argv,
          "kiln: a JIT-compiling graph compiler for transformer training\n",
          &errorStream))
    return true;
  cl::SubCommand *active = nullptr;
  for (cl::SubCommand *sub : subcommands)
    if (*sub)
      active = sub;
  std::string command = "kiln";
  if (active)
    command += (" " + active->getName()).str();
  std::string help = "see '" + command + " --help'";
  llvm::SmallVector<llvm::StringRef> lines;
  llvm::StringRef(errors).split(lines, '\n', -1, /*KeepEmpty=*/false);
  bool named = false;
  for (llvm::StringRef line : lines) {
    // LLVM prefixes each line with the program's name, and ends an unknown
    // option with "Try: 'kiln --help'".
    line = line.trim();
    if (size_t colon = line.find(": ");
        colon != llvm::StringRef::npos &&
        line.take_front(colon).starts_with(llvm::sys::path::filename(argv[0])))
      line = line.drop_front(colon + 2);
    line = line.trim();
    std::string message;
    bool unknownOption = line.consume_front("Unknown command line argument ");
    if (unknownOption || line.consume_front("Unknown subcommand ")) {
      // "'--foo'.  Try: 'kiln --help'": keep what is quoted.
      size_t quote = line.find('\'', 1);
      message = ((unknownOption ? "unknown option " : "unknown subcommand ") +
                 line.take_front(quote + 1) + "; " + help)
                    .str();
      named = true;
    } else if (line.consume_front("Did you mean ")) {
      llvm::WithColor::note(llvm::errs(), command)
          << "did you mean " << line << "\n";
      continue;
    } else if (line.starts_with("Not enough positional")) {
      message = "missing";
      for (cl::Option *positional :
           active ? active->PositionalOpts : decltype(active->PositionalOpts)())
        message += (" " + positional->HelpStr).str();
      message += "; " + help;
      named = true;
    } else if (line.starts_with("Must specify at least")) {
      continue; // LLVM's second line of the above, pointing at its help
    } else {
      message = line.str();
      if (!message.empty() && llvm::isUpper(message.front()))
        message.front() = llvm::toLower(message.front());
    }
    if (!message.empty())
      llvm::WithColor::error(llvm::errs(), command) << message << "\n";
  }
  if (!named)
    llvm::errs() << command << ": " << help << "\n";
  return false;
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  // `kiln --help` lists the subcommands and Kiln's options, not the LLVM
  // and MLIR options linked in with the passes.
  cl::HideUnrelatedOptions(llvm::ArrayRef<const cl::OptionCategory *>(),
                           cl::SubCommand::getTopLevel());
  describeDefaults(batchSize, seqLen, precision, emitStage, weightDecay,
                   maxGradNorm, steps, learningRate, seed, saveEvery,
                   keepCheckpoints, backendChoice);
  cl::SetVersionPrinter(printVersion);
  std::vector<std::string> args = spreadFileLists(argc, argv);
  std::vector<char *> spread;
  for (std::string &arg : args)
    spread.push_back(arg.data());
  spread.push_back(nullptr);
  if (!parseCommandLine(static_cast<int>(args.size()), spread.data()))
    return 1;
  MLIRContext context;
  context.loadDialect<kiln::dist::DistDialect, kiln::nn::NNDialect,
                      kiln::tile::TileDialect, func::FuncDialect,
                      arith::ArithDialect>();
  ScopedDiagnosticHandler remarks(&context, printRemark);
  if ((trainCommand || inspectCommand || compileCommand) &&
      !checkNumericFlags())
    return 1;
  if (trainCommand)
    return runTrain(context);
  if (inspectCommand)
    return runInspect(context);
  if (compileCommand)
    return runCompile(context);
  if (tokenizeCommand) {
    if (outputPath == "-")
      return fail("kiln tokenize: give the shard to write with -o <file.bin>");
    return rt::runTokenize({tokenizeInputs.begin(), tokenizeInputs.end()},
                           outputPath);
  }
  cl::PrintHelpMessage();
  return 1;
}
