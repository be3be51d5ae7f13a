//===- PlanMemory.cpp - tile-plan-memory ----------------------------------===//
//
// Gives every tensor of the training step an offset in one arena: arguments
// in a persistent region, temporaries first-fit in program order and freed
// after their last use, AdamW results in place.
//
//===----------------------------------------------------------------------===//

#include "dialects/tile/TileOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/FormatVariadic.h"

#include <map>

namespace kiln {
#define GEN_PASS_DEF_TILEPLANMEMORYPASS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

/// Bytes of a tensor value in memory.
int64_t byteSize(Value value) {
  auto type = cast<RankedTensorType>(value.getType());
  int64_t bits = type.getElementTypeBitWidth();
  return (type.getNumElements() * bits + 7) / 8;
}

int64_t alignTo(int64_t value, int64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

/// First-fit allocator over [base, infinity) with coalescing free list.
class ArenaAllocator {
public:
  ArenaAllocator(int64_t base, int64_t alignment)
      : alignment(alignment), top(base) {}

  int64_t allocate(int64_t bytes) {
    bytes = alignTo(std::max<int64_t>(bytes, 1), alignment);
    for (auto it = freeBlocks.begin(); it != freeBlocks.end(); ++it) {
      auto [offset, size] = *it;
      if (size < bytes)
        continue;
      freeBlocks.erase(it);
      if (size > bytes)
        freeBlocks[offset + bytes] = size - bytes;
      return offset;
    }
    int64_t offset = top;
    top += bytes;
    return offset;
  }

  void release(int64_t offset, int64_t bytes) {
    bytes = alignTo(std::max<int64_t>(bytes, 1), alignment);
    auto [it, inserted] = freeBlocks.emplace(offset, bytes);
    (void)inserted;
    // Merge with the following and the preceding free block.
    if (auto next = std::next(it);
        next != freeBlocks.end() && it->first + it->second == next->first) {
      it->second += next->second;
      freeBlocks.erase(next);
    }
    if (it != freeBlocks.begin()) {
      auto prev = std::prev(it);
      if (prev->first + prev->second == it->first) {
        prev->second += it->second;
        freeBlocks.erase(it);
      }
    }
  }

  int64_t peak() const { return top; }

private:
  int64_t alignment;
  int64_t top;
  std::map<int64_t, int64_t> freeBlocks; // offset -> size
};

struct TilePlanMemoryPass
    : kiln::impl::TilePlanMemoryPassBase<TilePlanMemoryPass> {
  using Base::Base;
  void runOnOperation() final;
};

void TilePlanMemoryPass::runOnOperation() {
  ModuleOp module = getOperation();
  auto func = module.lookupSymbol<func::FuncOp>(function);
  if (!func) {
    module.emitError() << "tile-plan-memory: no function @" << function;
    return signalPassFailure();
  }
  if (alignment <= 0 || (alignment & (alignment - 1)) != 0) {
    module.emitError() << "tile-plan-memory: alignment must be a power of "
                          "two, got "
                       << alignment;
    return signalPassFailure();
  }
  Block &body = func.getBody().front();
  Builder b(&getContext());

  // Persistent region: every argument, in order.
  llvm::DenseMap<Value, int64_t> offsets;
  int64_t persistent = 0;
  for (BlockArgument arg : body.getArguments()) {
    offsets[arg] = persistent;
    func.setArgAttr(arg.getArgNumber(), "kiln.offset",
                    b.getI64IntegerAttr(persistent));
    persistent = alignTo(persistent + byteSize(arg), alignment);
  }

  // Last use of every value in program order; returned values live to the
  // end.
  llvm::DenseMap<Operation *, unsigned> position;
  for (auto [index, op] : llvm::enumerate(body.getOperations()))
    position[&op] = index;
  llvm::DenseMap<Value, unsigned> lastUse;
  for (Operation &op : body.getOperations())
    for (Value operand : op.getOperands())
      lastUse[operand] = position[&op];

  ArenaAllocator arena(persistent, alignment);
  int64_t largest = 0;
  Value largestValue;
  for (Operation &op : body.getOperations()) {
    if (op.getNumResults() == 0)
      continue;
    SmallVector<int64_t> resultOffsets;
    auto adamw = dyn_cast<tile::AdamWOp>(op);
    for (auto [index, result] : llvm::enumerate(op.getResults())) {
      int64_t offset;
      if (adamw) {
        // In place: new_param, new_exp_avg, new_exp_avg_sq overwrite
        // param, exp_avg, exp_avg_sq.
        Value replaced = index == 0   ? adamw.getParam()
                         : index == 1 ? adamw.getExpAvg()
                                      : adamw.getExpAvgSq();
        offset = offsets.lookup(replaced);
      } else {
        offset = arena.allocate(byteSize(result));
      }
      offsets[result] = offset;
      resultOffsets.push_back(offset);
      if (byteSize(result) > largest) {
        largest = byteSize(result);
        largestValue = result;
      }
    }
    op.setAttr("kiln.offsets", b.getDenseI64ArrayAttr(resultOffsets));
    // Free what this op used for the last time (arguments and in-place
    // results stay).
    for (Value operand : op.getOperands()) {
      if (isa<BlockArgument>(operand) ||
          lastUse.lookup(operand) != position[&op])
        continue;
      if (isa_and_nonnull<tile::AdamWOp>(operand.getDefiningOp()))
        continue;
      arena.release(offsets.lookup(operand), byteSize(operand));
    }
    // A result nobody uses is dead at once.
    for (Value result : op.getResults())
      if (result.use_empty() && !adamw)
        arena.release(offsets.lookup(result), byteSize(result));
  }

  func->setAttr("kiln.arena_bytes", b.getI64IntegerAttr(arena.peak()));
  func->setAttr("kiln.persistent_bytes", b.getI64IntegerAttr(persistent));
  func->setAttr("kiln.largest_buffer_bytes", b.getI64IntegerAttr(largest));
  if (report) {
    llvm::errs() << llvm::formatv(
        "tile-plan-memory: @{0}: arena {1} bytes = {2} persistent "
        "(parameters, optimizer state, inputs) + {3} peak temporaries\n",
        function, arena.peak(), persistent, arena.peak() - persistent);
    if (largestValue)
      llvm::errs() << llvm::formatv(
          "tile-plan-memory: largest buffer {0} bytes ({1}), from {2}\n",
          largest, largestValue.getType(),
          largestValue.getDefiningOp()
              ? largestValue.getDefiningOp()->getName().getStringRef()
              : StringRef("an argument"));
  }
}

} // namespace
