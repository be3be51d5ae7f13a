//===- kiln-translate.cpp - Kiln's translation driver ---------------------===//
//
// mlir-translate with Kiln's translations, for lit tests of code generation:
//   kiln-translate --tile-to-plan step.mlir
//   kiln-translate --tile-to-ptxas-report --cuda-arch=sm_90a step.mlir
// The last compiles every kernel of a memory-planned module with NVRTC, as
// `kiln compile --target cuda:<arch>` does for a model, and prints ptxas'
// registers and spills per kernel: the compile check of hand-written tile
// IR (test/Translate/tile-to-cuda-compile.mlir).
//
//===----------------------------------------------------------------------===//

#include "compiler/translate/Plan.h"
#include "dialects/dist/DistDialect.h"
#include "dialects/nn/NNDialect.h"
#include "dialects/tile/TileDialect.h"
#include "runtime/cuda/Precompile.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Tools/mlir-translate/MlirTranslateMain.h"
#include "mlir/Tools/mlir-translate/Translation.h"
#include "llvm/Support/CommandLine.h"

using namespace mlir;

namespace {

llvm::cl::opt<std::string>
    cudaArch("cuda-arch",
             llvm::cl::desc("--tile-to-ptxas-report: the architecture to "
                            "compile for (sm_80, sm_90a, ...)"),
             llvm::cl::init("sm_90a"));
llvm::cl::opt<bool> failOnSpills(
    "fail-on-spills",
    llvm::cl::desc("--tile-to-ptxas-report: fail when a kernel spills"));

/// Registers `--tile-to-ptxas-report`.
void registerPtxasReportTranslation() {
  TranslateFromMLIRRegistration report(
      "tile-to-ptxas-report",
      "Compile every CUDA kernel of a memory-planned tile module with NVRTC "
      "and print ptxas' registers and spills",
      [](Operation *op, llvm::raw_ostream &os) -> LogicalResult {
        auto module = dyn_cast<ModuleOp>(op);
        if (!module)
          return op->emitError("cuda: expects a module");
        std::string plan;
        llvm::raw_string_ostream planStream(plan);
        if (failed(kiln::writePlan(module, planStream)))
          return failure();
        kiln::rt::PrecompileResult result;
        std::string error;
        if (!kiln::rt::precompileCuda(plan, cudaArch, result, error))
          return module.emitError("cuda: ") << cudaArch << ": " << error;
        os << result.report;
        if (failOnSpills && result.spillingKernels > 0)
          return module.emitError("cuda: ")
                 << result.spillingKernels << " kernels spill registers";
        return success();
      },
      [](DialectRegistry &registry) {
        registry.insert<kiln::dist::DistDialect, kiln::nn::NNDialect,
                        kiln::tile::TileDialect, arith::ArithDialect,
                        func::FuncDialect>();
      });
}

} // namespace

int main(int argc, char **argv) {
  kiln::registerTileToPlanTranslation();
  registerPtxasReportTranslation();
  return failed(mlirTranslateMain(argc, argv, "Kiln translation driver\n"));
}
