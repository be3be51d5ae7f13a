//===- kiln-translate.cpp - Kiln's translation driver ---------------------===//
//
// mlir-translate with Kiln's translations, for lit tests of code generation:
//   kiln-translate --tile-to-plan step.mlir
//
//===----------------------------------------------------------------------===//

#include "compiler/translate/Plan.h"

#include "mlir/Tools/mlir-translate/MlirTranslateMain.h"

int main(int argc, char **argv) {
  kiln::registerTileToPlanTranslation();
  return mlir::failed(
      mlir::mlirTranslateMain(argc, argv, "Kiln translation driver\n"));
}
