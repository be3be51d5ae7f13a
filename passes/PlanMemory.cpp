//===- PlanMemory.cpp - tile-plan-memory ----------------------------------===//
//
// Gives every tensor of the training step an offset in one arena: arguments
// in a persistent region, temporaries best-fit in program order and freed
// after their last use, AdamW and gradient-accumulation results in place.
//
//===----------------------------------------------------------------------===//

#include "dialects/nn/PassAttrs.h"
#include "dialects/tile/TileOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/Support/CheckedArithmetic.h"
#include "llvm/Support/FormatVariadic.h"

#include <map>

namespace kiln {
#define GEN_PASS_DEF_TILEPLANMEMORYPASS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

/// Bytes of a tensor value in memory, in checked arithmetic: nullopt when
/// they do not fit in int64. The shape must be static.
std::optional<int64_t> byteSize(Value value) {
  auto type = cast<RankedTensorType>(value.getType());
  int64_t bits = type.getElementTypeBitWidth();
  std::optional<int64_t> elements = 1;
  for (int64_t dim : type.getShape())
    if (elements)
      elements = llvm::checkedMul(*elements, dim);
  if (!elements)
    return std::nullopt;
  // Whole bytes per element (all but sub-byte types) need no bit count,
  // which would overflow eight times sooner.
  if (bits % 8 == 0)
    return llvm::checkedMul<int64_t>(*elements, bits / 8);
  std::optional<int64_t> totalBits =
      llvm::checkedMulAdd<int64_t>(*elements, bits, 7);
  return totalBits ? std::optional<int64_t>(*totalBits / 8) : std::nullopt;
}

/// `value` rounded up to a multiple of `alignment`; nullopt on overflow.
std::optional<int64_t> alignTo(int64_t value, int64_t alignment) {
  std::optional<int64_t> padded = llvm::checkedAdd(value, alignment - 1);
  return padded ? std::optional<int64_t>(*padded / alignment * alignment)
                : std::nullopt;
}

/// Best-fit allocator over [base, 2^63) with coalescing free list.
class ArenaAllocator {
public:
  ArenaAllocator(int64_t base, int64_t alignment)
      : alignment(alignment), top(base) {}

  /// The offset of a new block of `bytes`; nullopt when the arena would
  /// pass 2^63 bytes.
  std::optional<int64_t> allocate(int64_t bytes) {
    std::optional<int64_t> aligned =
        alignTo(std::max<int64_t>(bytes, 1), alignment);
    if (!aligned)
      return std::nullopt;
    bytes = *aligned;
    // Best fit: the smallest free block that holds it (the lowest of equal
    // ones), which leaves the large blocks whole for the large tensors.
    auto best = freeBlocks.end();
    for (auto it = freeBlocks.begin(); it != freeBlocks.end(); ++it)
      if (it->second >= bytes &&
          (best == freeBlocks.end() || it->second < best->second))
        best = it;
    if (best != freeBlocks.end()) {
      auto [offset, size] = *best;
      freeBlocks.erase(best);
      if (size > bytes)
        freeBlocks[offset + bytes] = size - bytes;
      return offset;
    }
    std::optional<int64_t> end = llvm::checkedAdd(top, bytes);
    if (!end)
      return std::nullopt;
    int64_t offset = top;
    top = *end;
    return offset;
  }

  /// Frees a block allocate() returned (so its aligned end fits).
  void release(int64_t offset, int64_t bytes) {
    bytes = *alignTo(std::max<int64_t>(bytes, 1), alignment);
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

  // The size of every value, each error at its own location.
  llvm::DenseMap<Value, int64_t> sizes;
  bool badSize = false;
  auto measure = [&](Value value, InFlightDiagnostic (*emit)(Value),
                     const llvm::Twine &what) {
    auto type = dyn_cast<RankedTensorType>(value.getType());
    if (!type || !type.hasStaticShape()) {
      emit(value) << "tile-plan-memory: " << what
                  << " must be a tensor of static shape, got "
                  << value.getType();
      badSize = true;
    } else if (std::optional<int64_t> bytes = byteSize(value)) {
      sizes[value] = *bytes;
    } else {
      emit(value) << "tile-plan-memory: " << what << " (" << type
                  << ") takes more than 2^63 bytes";
      badSize = true;
    }
  };
  auto atArgument = [](Value value) { return emitError(value.getLoc()); };
  auto atOp = [](Value value) { return value.getDefiningOp()->emitOpError(); };
  for (BlockArgument arg : body.getArguments())
    measure(arg, atArgument, "argument #" + llvm::Twine(arg.getArgNumber()));
  for (Operation &op : body.getOperations())
    for (OpResult result : op.getResults())
      measure(result, atOp, "result #" + llvm::Twine(result.getResultNumber()));
  if (badSize)
    return signalPassFailure();
  auto sizeOf = [&](Value value) { return sizes.lookup(value); };

  // Persistent region: every argument, in order; the arguments a
  // tile.concat places side by side (a packed weight) back to back from the
  // first of them, so that the concat is their buffer.
  // The argument attributes are set all at once: setArgAttr per argument
  // rebuilds the whole array each time (quadratic in the parameters).
  llvm::DenseMap<Value, int64_t> offsets;
  SmallVector<DictionaryAttr> argAttrs;
  int64_t persistent = 0;
  llvm::SmallDenseSet<Value> persistentRoots;
  auto place = [&](BlockArgument arg, int64_t bytes, bool pad) {
    offsets[arg] = persistent;
    std::optional<int64_t> end = llvm::checkedAdd(persistent, bytes);
    if (end && pad)
      end = alignTo(*end, alignment);
    if (!end) {
      emitError(arg.getLoc())
          << "tile-plan-memory: argument #" << arg.getArgNumber() << " ("
          << bytes << " bytes at offset " << persistent
          << ") makes the arena larger than 2^63 bytes";
      return false;
    }
    persistent = *end;
    return true;
  };
  for (BlockArgument arg : body.getArguments()) {
    if (offsets.count(arg))
      continue;
    tile::ConcatOp concat = tile::concatUser(arg);
    if (!concat) {
      if (!place(arg, sizeOf(arg), /*pad=*/true))
        return signalPassFailure();
      continue;
    }
    offsets[concat.getResult()] = persistent;
    persistentRoots.insert(concat.getResult());
    for (auto [index, input] : llvm::enumerate(concat.getInputs()))
      if (!place(cast<BlockArgument>(input), sizeOf(input),
                 /*pad=*/index + 1 == concat.getInputs().size()))
        return signalPassFailure();
  }
  for (BlockArgument arg : body.getArguments()) {
    NamedAttrList dict(func.getArgAttrDict(arg.getArgNumber()));
    dict.set(attrs::kOffset, b.getI64IntegerAttr(offsets.lookup(arg)));
    argAttrs.push_back(dict.getDictionary(&getContext()));
  }
  func.setAllArgAttrs(argAttrs);

  // Views and the inputs of a tile.concat live in the buffer of their
  // root (tile::placement): it is allocated when the first of them is
  // defined and lives to the last use of any. Returned values live to the
  // end.
  llvm::DenseMap<Operation *, unsigned> position;
  for (auto [index, op] : llvm::enumerate(body.getOperations()))
    position[&op] = index;
  auto rootOf = [](Value value) { return tile::placement(value).root; };
  llvm::DenseMap<Value, unsigned> lastUse;
  for (Operation &op : body.getOperations())
    for (Value operand : op.getOperands())
      lastUse[rootOf(operand)] = position[&op];
  auto elementBytes = [](Value value) {
    return cast<RankedTensorType>(value.getType()).getElementTypeBitWidth() / 8;
  };

  ArenaAllocator arena(persistent, alignment);
  int64_t largest = 0;
  Value largestValue;
  for (Operation &op : body.getOperations()) {
    if (op.getNumResults() == 0)
      continue;
    SmallVector<int64_t> resultOffsets;
    auto adamw = dyn_cast<tile::AdamWOp>(op);
    auto accumulate = dyn_cast<tile::GradAccumulateOp>(op);
    bool inPlace = adamw || accumulate;
    for (auto [index, result] : llvm::enumerate(op.getResults())) {
      tile::Placement placed = tile::placement(result);
      int64_t offset;
      if (adamw) {
        // In place: the new params and moments overwrite the old.
        offset = offsets.lookup(adamw.getReplaced(index));
      } else if (accumulate) {
        offset = offsets.lookup(accumulate.getAccumulator(index));
      } else if (auto found = offsets.find(placed.root);
                 found != offsets.end()) {
        // A view, or a part of a buffer a sibling part already allocated.
        offset = found->second + placed.elementOffset * elementBytes(result);
      } else {
        Value root = placed.root;
        std::optional<int64_t> allocated = arena.allocate(sizeOf(root));
        if (!allocated) {
          op.emitOpError() << "tile-plan-memory: result #" << index << " ("
                           << sizeOf(root) << " bytes, with " << arena.peak()
                           << " allocated) makes the arena larger than 2^63 "
                              "bytes";
          return signalPassFailure();
        }
        offsets[root] = *allocated;
        offset = *allocated + placed.elementOffset * elementBytes(result);
        if (sizeOf(root) > largest) {
          largest = sizeOf(root);
          largestValue = root;
        }
      }
      offsets[result] = offset;
      resultOffsets.push_back(offset);
    }
    attrs::kOffsets.set(&op, b.getDenseI64ArrayAttr(resultOffsets));
    // Free the buffers this op used for the last time (arguments and
    // in-place results stay).
    auto releaseRoot = [&](Value root) {
      if (isa<BlockArgument>(root) || persistentRoots.count(root) ||
          isa_and_nonnull<tile::AdamWOp, tile::GradAccumulateOp>(
              root.getDefiningOp()) ||
          !offsets.count(root))
        return;
      arena.release(offsets.lookup(root), sizeOf(root));
      offsets.erase(root);
    };
    llvm::SmallDenseSet<Value> released;
    for (Value operand : op.getOperands()) {
      Value root = rootOf(operand);
      if (lastUse.lookup(root) == position[&op] && released.insert(root).second)
        releaseRoot(root);
    }
    // A result nobody uses is dead at once.
    for (Value result : op.getResults()) {
      Value root = rootOf(result);
      if (!inPlace && !lastUse.count(root) && released.insert(root).second)
        releaseRoot(root);
    }
  }

  attrs::kArenaBytes.set(func, b.getI64IntegerAttr(arena.peak()));
  attrs::kPersistentBytes.set(func, b.getI64IntegerAttr(persistent));
  attrs::kLargestBufferBytes.set(func, b.getI64IntegerAttr(largest));
  if (report) {
    // At the function's location, not the op: a remark on the op would
    // print the whole function with it.
    InFlightDiagnostic remark =
        emitRemark(func.getLoc()) << llvm::formatv(
            "tile-plan-memory: @{0}: arena {1} bytes = {2} persistent "
            "(parameters, optimizer state, inputs) + {3} peak temporaries",
            function, arena.peak(), persistent, arena.peak() - persistent);
    if (largestValue)
      remark.attachNote(largestValue.getLoc()) << llvm::formatv(
          "largest buffer {0} bytes ({1}), from {2}", largest,
          largestValue.getType(),
          largestValue.getDefiningOp()
              ? largestValue.getDefiningOp()->getName().getStringRef()
              : StringRef("an argument"));
  }
}

} // namespace
