//===- Report.cpp - Pass remarks grouped across layers --------------------===//

#include "passes/Report.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Diagnostics.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
using namespace kiln;

std::optional<int64_t> kiln::layerOf(Location loc) {
  std::optional<int64_t> layer;
  loc->walk([&](Location inner) {
    auto name = dyn_cast<NameLoc>(inner);
    if (!name)
      return WalkResult::advance();
    SmallVector<StringRef> parts;
    name.getName().getValue().split(parts, '.');
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      int64_t index;
      if ((parts[i] == "layers" || parts[i] == "h") &&
          !parts[i + 1].getAsInteger(10, index)) {
        layer = index;
        return WalkResult::interrupt();
      }
    }
    return WalkResult::advance();
  });
  return layer;
}

std::string kiln::layerRanges(ArrayRef<int64_t> layers) {
  std::string text;
  llvm::raw_string_ostream os(text);
  for (size_t i = 0; i < layers.size();) {
    size_t j = i;
    while (j + 1 < layers.size() && layers[j + 1] == layers[j] + 1)
      ++j;
    os << (i ? ", " : "") << layers[i];
    if (j > i)
      os << "-" << layers[j];
    i = j + 1;
  }
  return text;
}

void kiln::emitGroupedRemarks(StringRef pass, StringRef noun,
                              MutableArrayRef<Decision> decisions) {
  llvm::stable_sort(decisions, [](const Decision &a, const Decision &b) {
    return a.position < b.position;
  });
  llvm::MapVector<StringRef, llvm::SetVector<Location>> groups;
  for (const Decision &decision : decisions)
    groups[decision.text].insert(decision.loc);
  for (auto &[text, locations] : groups) {
    auto [direction, rest] = text.split(": ");
    SmallVector<std::pair<int64_t, Location>> layers;
    for (Location loc : locations)
      if (std::optional<int64_t> layer = layerOf(loc))
        layers.push_back({*layer, loc});
    llvm::sort(layers, [](auto &a, auto &b) { return a.first < b.first; });
    // Layers are listed by range; locations that name no layer (the LM
    // head, the loss) are counted and each gets a note.
    SmallVector<Location> others;
    for (Location loc : locations)
      if (!layerOf(loc))
        others.push_back(loc);
    std::string label;
    if (!layers.empty()) {
      SmallVector<int64_t> indices;
      for (auto &[layer, loc] : layers)
        if (indices.empty() || indices.back() != layer)
          indices.push_back(layer);
      label = (indices.size() > 1 ? ", layers " : ", layer ") +
              layerRanges(indices);
      if (!others.empty())
        label += (" and " + Twine(others.size()) + " more").str();
    } else if (locations.size() > 1) {
      label = (", " + Twine(locations.size()) + " " + noun + "s").str();
    }
    Location first = layers.empty() ? others.front() : layers.front().second;
    InFlightDiagnostic remark = emitRemark(first) << pass << ": " << direction
                                                  << label << ": " << rest;
    for (Location loc : others)
      if (loc != first)
        remark.attachNote(loc) << "the same for this " << noun;
  }
}
