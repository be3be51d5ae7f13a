//===- kiln.cpp - The Kiln driver -----------------------------------------===//
//
//   kiln inspect [--json] <config.json>     parameters, counts, shapes
//   kiln compile <config.json> --emit=nn|train   the IR after each stage
//
//===----------------------------------------------------------------------===//

#include "compiler/frontend/BuildModel.h"
#include "dialects/nn/NNDialect.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"

using namespace mlir;
using namespace kiln;
namespace cl = llvm::cl;

namespace {

cl::SubCommand inspectCommand("inspect",
                              "Print a model's parameters (Hugging Face "
                              "names, shapes) and their count");
cl::SubCommand compileCommand("compile",
                              "Compile a model's training step and print the "
                              "IR of a stage");

cl::opt<std::string> configPath(cl::Positional, cl::desc("<config.json>"),
                                cl::Required, cl::sub(inspectCommand),
                                cl::sub(compileCommand));
cl::opt<bool> jsonOutput("json", cl::desc("Print JSON"),
                         cl::sub(inspectCommand));
cl::opt<int64_t> batchSize("batch", cl::desc("Sequences per step"), cl::init(1),
                           cl::sub(inspectCommand), cl::sub(compileCommand));
cl::opt<int64_t> seqLen("seq-len", cl::desc("Tokens per sequence"),
                        cl::init(256), cl::sub(inspectCommand),
                        cl::sub(compileCommand));

enum class Stage { NN, Train };
cl::opt<Stage>
    emitStage("emit", cl::desc("Stage to print"), cl::init(Stage::Train),
              cl::values(clEnumValN(Stage::NN, "nn", "the forward pass in nn"),
                         clEnumValN(Stage::Train, "train",
                                    "the training step after nn-autodiff")),
              cl::sub(compileCommand));
cl::opt<std::string>
    precision("precision",
              cl::desc("Compute precision: bf16 (default) or fp32"),
              cl::init("bf16"), cl::sub(compileCommand));
cl::opt<std::string> outputPath("o", cl::desc("Output file (default stdout)"),
                                cl::init("-"), cl::sub(compileCommand));

int fail(const llvm::Twine &message) {
  llvm::WithColor::error(llvm::errs(), "kiln") << message << "\n";
  return 1;
}

int fail(llvm::Error error) { return fail(llvm::toString(std::move(error))); }

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
  for (const ParameterInfo &p : params) {
    std::string dims;
    llvm::raw_string_ostream dimsStream(dims);
    llvm::interleave(p.shape, dimsStream, "x");
    os << llvm::formatv("  {0,-56} {1,-14} {2,14:N}\n", p.name, dims,
                        p.numElements());
  }
  return 0;
}

int runCompile(MLIRContext &context) {
  llvm::Expected<ModelConfig> config = readModelConfig(configPath);
  if (!config)
    return fail(config.takeError());
  if (precision != "bf16" && precision != "fp32")
    return fail("--precision must be bf16 or fp32, got '" + precision + "'");
  BatchShape shape{batchSize, seqLen,
                   precision == "fp32" ? Precision::FP32 : Precision::BF16};
  auto module = buildForward(context, *config, shape);
  if (!module)
    return fail(module.takeError());
  if (emitStage == Stage::Train) {
    PassManager pm(&context);
    pm.addPass(createNNAutodiffPass());
    if (failed(pm.run(**module)))
      return fail("compilation failed (see the diagnostics above)");
  }
  std::string error;
  auto output = openOutputFile(outputPath, &error);
  if (!output)
    return fail(error);
  (*module)->print(output->os());
  output->keep();
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::ParseCommandLineOptions(
      argc, argv,
      "kiln: a JIT-compiling graph compiler for transformer training\n");
  MLIRContext context;
  context.loadDialect<kiln::nn::NNDialect, func::FuncDialect,
                      arith::ArithDialect>();
  if (inspectCommand)
    return runInspect(context);
  if (compileCommand)
    return runCompile(context);
  cl::PrintHelpMessage();
  return 1;
}
