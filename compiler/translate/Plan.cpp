//===- Plan.cpp - tile IR to the runtime's plan ---------------------------===//

#include "compiler/translate/Plan.h"
#include "compiler/translate/CudaEmitter.h"

#include "dialects/dist/DistOps.h"
#include "dialects/nn/NNDialect.h"
#include "dialects/nn/PassAttrs.h"
#include "dialects/tile/TileOps.h"
#include "runtime/plan/Schema.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Tools/mlir-translate/Translation.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/CheckedArithmetic.h"
#include "llvm/Support/JSON.h"

#include <cmath>
#include <optional>

using namespace mlir;
using namespace kiln;
namespace json = llvm::json;

namespace {
std::optional<plan::ElemType> planDtype(Type type) {
  if (type.isF32())
    return plan::ElemType::F32;
  if (type.isBF16())
    return plan::ElemType::BF16;
  if (type.isInteger(32))
    return plan::ElemType::I32;
  if (type.isInteger(64))
    return plan::ElemType::I64;
  if (isa<Float8E4M3FNType>(type))
    return plan::ElemType::F8E4M3;
  if (isa<Float8E5M2Type>(type))
    return plan::ElemType::F8E5M2;
  return std::nullopt;
}
} // namespace

std::string kiln::planDtypeName(Type type) {
  if (std::optional<plan::ElemType> dtype = planDtype(type))
    return std::string(plan::dtypeName(*dtype));
  std::string name;
  llvm::raw_string_ostream os(name);
  os << type;
  return name;
}

namespace {

/// The largest value a plan holds: 2^56 bytes (64 PiB) is past any
/// device's memory, and leaves the kernels' size arithmetic (FP32 scratch
/// per element, byte addresses) 7 bits of headroom in int64.
constexpr int64_t kMaxValueBytes = int64_t(1) << 56;

json::Object tensorJson(Type type) {
  auto tensor = cast<RankedTensorType>(type);
  json::Array shape;
  for (int64_t d : tensor.getShape())
    shape.push_back(d);
  return json::Object{
      {plan::key::kDtype, planDtypeName(tensor.getElementType())},
      {plan::key::kShape, std::move(shape)}};
}

/// The softmax scale of a flash attention op: its `scale`, or the nn
/// default 1/sqrt(head_dim).
template <typename AttentionOp> double attentionScale(AttentionOp op) {
  if (op.getScale())
    return op.getScale()->convertToDouble();
  auto shape = cast<RankedTensorType>(op.getQuery().getType()).getShape();
  return 1.0 / std::sqrt(double(shape[2] / op.getNumHeads()));
}

/// The op's own attributes as JSON (Kiln's bookkeeping `kiln.*` attributes
/// are left out; they appear in their own fields). Every attribute the
/// runtime reads is written: absent unit attributes as false, an absent
/// attention scale as its default (defaulted attributes are set at
/// creation).
json::Object attrsJson(Operation *op) {
  json::Object attrs;
  if (std::optional<RegisteredOperationName> info = op->getRegisteredInfo())
    for (StringAttr name : info->getAttributeNames())
      for (std::string_view flag : plan::kFlagAttrs)
        if (name.getValue() == llvm::StringRef(flag) && !op->hasAttr(name))
          attrs[name.getValue()] = false;
  auto attention = [&](auto flash) {
    attrs[plan::attr::kScale] = attentionScale(flash);
    attrs[plan::attr::kRope] = static_cast<bool>(flash.getRope());
  };
  if (auto fwd = dyn_cast<tile::FlashAttentionFwdOp>(op))
    attention(fwd);
  if (auto bwd = dyn_cast<tile::FlashAttentionBwdOp>(op))
    attention(bwd);
  if (auto gemm = dyn_cast<tile::GemmOp>(op))
    attrs[plan::attr::kEpilogue] = gemm.getEpilogue();
  // The optimizer's ZeRO-1 shards: 1 (none) unless the op says.
  if (isa<tile::AdamWOp, tile::GlobalNormOp>(op))
    attrs[plan::attr::kShards] = int64_t(1);
  for (NamedAttribute named : op->getAttrs()) {
    StringRef name = named.getName().getValue();
    if (name.starts_with(attrs::kPrefix))
      continue;
    Attribute attr = named.getValue();
    // A BoolAttr is an i1 IntegerAttr: test for it first.
    if (auto flag = dyn_cast<BoolAttr>(attr)) {
      attrs[name] = flag.getValue();
    } else if (auto integer = dyn_cast<IntegerAttr>(attr)) {
      attrs[name] = integer.getInt();
    } else if (auto number = dyn_cast<FloatAttr>(attr)) {
      attrs[name] = number.getValueAsDouble();
    } else if (isa<UnitAttr>(attr)) {
      attrs[name] = true;
    } else if (auto text = dyn_cast<StringAttr>(attr)) {
      attrs[name] = text.getValue();
    } else if (auto array = dyn_cast<DenseI64ArrayAttr>(attr)) {
      json::Array values;
      for (int64_t v : array.asArrayRef())
        values.push_back(v);
      attrs[name] = std::move(values);
    } else {
      // Enums and the rest: their printed value (`tanh`).
      std::string text;
      llvm::raw_string_ostream os(text);
      attr.print(os, /*elideType=*/true);
      StringRef value(text);
      if (value.starts_with("#") && value.contains('<'))
        value = value.drop_until([](char c) { return c == '<'; })
                    .drop_front()
                    .drop_back()
                    .rsplit(' ')
                    .second;
      attrs[name] = value.str();
    }
  }
  return attrs;
}

/// The kernel name of an op: its name without the dialect prefix.
std::string kernelName(Operation *op) {
  return op->getName().stripDialect().str();
}

class PlanWriter {
public:
  explicit PlanWriter(func::FuncOp func) : func(func) {}
  FailureOr<json::Object> build();

private:
  int64_t idOf(Value v) { return ids.lookup(v); }
  FailureOr<int64_t> addValue(Value v, int64_t offset, Location loc);
  FailureOr<json::Object> fusedStep(tile::FusedOp fused);

  func::FuncOp func;
  llvm::DenseMap<Value, int64_t> ids;
  json::Array values;
  CudaEmitter cuda{ids};
};

/// Numbers `v` and records it at `offset`, which must leave its bytes inside
/// the arena (the runtime refuses a plan where they are not); errors at
/// `loc`.
FailureOr<int64_t> PlanWriter::addValue(Value v, int64_t offset, Location loc) {
  auto type = dyn_cast<RankedTensorType>(v.getType());
  if (!type || !type.hasStaticShape())
    return emitError(loc) << "plan: value " << values.size()
                          << " must be a tensor of static shape, got "
                          << v.getType();
  std::optional<int64_t> bytes = 1;
  for (int64_t dim : type.getShape())
    if (bytes)
      bytes = llvm::checkedMul(*bytes, dim);
  if (bytes)
    bytes = llvm::checkedMul<int64_t>(
        *bytes, llvm::divideCeil(type.getElementTypeBitWidth(), 8));
  if (!bytes || *bytes > kMaxValueBytes)
    return emitError(loc) << "plan: value " << values.size() << " (" << type
                          << ") takes more than 2^56 bytes, more than any "
                             "device holds";
  if (*bytes == 0)
    return emitError(loc) << "plan: value " << values.size() << " (" << type
                          << ") is empty; the kernels need at least one "
                             "element";
  // A row-strided view spans its rows' pitch.
  int64_t last = type.getRank() ? type.getShape().back() : 1;
  int64_t pitch = tile::rowPitch(v);
  if (pitch != last) {
    int64_t rows = type.getNumElements() / last;
    bytes = llvm::checkedMulAdd<int64_t>(rows - 1, pitch, last);
    if (bytes)
      bytes = llvm::checkedMul<int64_t>(
          *bytes, llvm::divideCeil(type.getElementTypeBitWidth(), 8));
    if (!bytes)
      return emitError(loc)
             << "plan: value " << values.size() << " (" << type << ", rows "
             << pitch << " elements apart) spans more than 2^63 bytes";
  }
  auto arena = func->getAttrOfType<IntegerAttr>(attrs::kArenaBytes);
  std::optional<int64_t> end = llvm::checkedAdd(offset, *bytes);
  if (offset < 0 || !end || (arena && *end > arena.getInt()))
    return emitError(loc) << "plan: value " << values.size() << " (" << type
                          << ", " << *bytes << " bytes at offset " << offset
                          << ") lies outside the arena ("
                          << (arena ? arena.getInt() : 0) << " bytes)";
  int64_t id = values.size();
  ids[v] = id;
  json::Object value = tensorJson(v.getType());
  value[plan::key::kId] = id;
  value[plan::key::kOffset] = offset;
  if (pitch != last)
    value[plan::key::kRowStride] = pitch;
  values.push_back(std::move(value));
  return id;
}

FailureOr<json::Object> PlanWriter::fusedStep(tile::FusedOp fused) {
  // Body values are numbered: block arguments first, then each result.
  Block &block = fused.getBody().front();
  llvm::DenseMap<Value, int64_t> local;
  json::Array temps;
  for (BlockArgument arg : block.getArguments())
    local[arg] = local.size();
  json::Array body;
  for (Operation &op : block.without_terminator()) {
    json::Array operands, results;
    for (Value operand : op.getOperands())
      operands.push_back(local.lookup(operand));
    for (Value result : op.getResults()) {
      int64_t index = local.size();
      local[result] = index;
      results.push_back(index);
      json::Object temp = tensorJson(result.getType());
      temp[plan::key::kIndex] = index;
      temps.push_back(std::move(temp));
    }
    body.push_back(json::Object{{plan::key::kOp, kernelName(&op)},
                                {plan::key::kOperands, std::move(operands)},
                                {plan::key::kResults, std::move(results)},
                                {plan::key::kAttrs, attrsJson(&op)}});
  }
  json::Array yields;
  for (Value v : block.getTerminator()->getOperands())
    yields.push_back(local.lookup(v));
  return json::Object{{plan::key::kBody, std::move(body)},
                      {plan::key::kTemporaries, std::move(temps)},
                      {plan::key::kYield, std::move(yields)}};
}

FailureOr<json::Object> PlanWriter::build() {
  Block &block = func.getBody().front();
  json::Array inputs, parameters, outputs, steps;
  llvm::StringMap<size_t> paramIndex;
  int64_t maxScratch = 0;

  for (BlockArgument arg : block.getArguments()) {
    auto offset =
        func.getArgAttrOfType<IntegerAttr>(arg.getArgNumber(), attrs::kOffset);
    if (!offset)
      return func.emitError("plan: argument #")
             << arg.getArgNumber()
             << " has no kiln.offset; run tile-plan-memory first";
    FailureOr<int64_t> added = addValue(arg, offset.getInt(), arg.getLoc());
    if (failed(added))
      return failure();
    int64_t id = *added;
    auto attr = [&](StringRef name) {
      return func.getArgAttrOfType<StringAttr>(arg.getArgNumber(), name);
    };
    if (StringAttr name = attr(attrs::kInput)) {
      inputs.push_back(json::Object{{plan::key::kName, name.str()},
                                    {plan::key::kValue, id}});
    } else if (StringAttr name = attr(attrs::kParam)) {
      StringAttr init = attr(attrs::kInit);
      paramIndex[name.getValue()] = parameters.size();
      parameters.push_back(json::Object{
          {plan::key::kName, name.str()},
          {plan::key::kValue, id},
          {plan::key::kInit, init ? init.str() : std::string("zeros")}});
    } else if (StringAttr name = attr(attrs::kExpAvg)) {
      (*parameters[paramIndex.lookup(name.getValue())]
            .getAsObject())[plan::key::kExpAvg] = id;
    } else if (StringAttr name = attr(attrs::kExpAvgSq)) {
      (*parameters[paramIndex.lookup(name.getValue())]
            .getAsObject())[plan::key::kExpAvgSq] = id;
    } else if (StringAttr name = attr(attrs::kComputeCopy)) {
      (*parameters[paramIndex.lookup(name.getValue())]
            .getAsObject())[plan::key::kComputeCopy] = id;
    } else if (attr(attrs::kGradAccumulator)) {
      // Persistent memory the parameter's `grad` (the accumulate step's
      // result, which the optimizer reads) lies in.
    } else {
      return func.emitError("plan: argument #")
             << arg.getArgNumber()
             << " is neither an input, a parameter, optimizer state, a "
                "compute copy nor a gradient accumulator";
    }
  }

  for (Operation &op : block.without_terminator()) {
    auto offsets = op.getAttrOfType<DenseI64ArrayAttr>(attrs::kOffsets);
    if (!offsets || offsets.size() != static_cast<int64_t>(op.getNumResults()))
      return op.emitOpError("has no kiln.offsets; run tile-plan-memory first");
    json::Array in, out;
    for (Value operand : op.getOperands())
      in.push_back(idOf(operand));
    for (auto [result, offset] :
         llvm::zip_equal(op.getResults(), offsets.asArrayRef())) {
      FailureOr<int64_t> added = addValue(result, offset, op.getLoc());
      if (failed(added))
        return failure();
      out.push_back(*added);
    }
    // Views and in-place concatenations are memory, not kernels.
    if (isa<tile::ViewOp, tile::ConcatOp>(op))
      continue;
    auto chunk = op.getAttrOfType<StringAttr>(attrs::kChunk);
    json::Object step{
        {plan::key::kKernel, kernelName(&op)},
        {plan::key::kChunk, chunk ? chunk.str() : std::string("F")},
        {plan::key::kInputs, std::move(in)},
        {plan::key::kOutputs, std::move(out)}};
    if (auto constant = dyn_cast<arith::ConstantOp>(op)) {
      auto splat = dyn_cast<SplatElementsAttr>(constant.getValue());
      if (!splat || !isa<FloatType>(splat.getElementType()))
        return op.emitOpError("plan: only splat float constants are "
                              "supported");
      step[plan::key::kKernel] =
          llvm::StringRef(plan::stepKindName(plan::StepKind::Fill));
      step[plan::key::kAttrs] =
          json::Object{{plan::attr::kValue,
                        splat.getSplatValue<APFloat>().convertToDouble()}};
    } else if (auto fused = dyn_cast<tile::FusedOp>(op)) {
      FailureOr<json::Object> region = fusedStep(fused);
      if (failed(region))
        return failure();
      for (auto &entry : *region)
        step[entry.first] = std::move(entry.second);
    } else if (isa<dist::AllReduceOp, dist::ReduceScatterOp>(op)) {
      auto reduction = op.getAttrOfType<dist::ReductionAttr>("reduction");
      auto group = op.getAttrOfType<dist::GroupAttr>("group");
      step[plan::key::kAttrs] = json::Object{
          {plan::attr::kReduction,
           dist::stringifyReduction(reduction.getValue()).str()},
          {plan::attr::kGroup, group.getName().str()},
          {plan::attr::kGroupSize, group.getSize()},
          {plan::attr::kLastMicroStep, op.hasAttr("last_micro_step")}};
    } else if (isa<dist::AllGatherOp, dist::AllGatherIntoOp>(op)) {
      // (The gather into destinations is the plan's all_gather with 2N
      // inputs: the shards, then the destinations.)
      step[plan::key::kKernel] =
          llvm::StringRef(plan::stepKindName(plan::StepKind::AllGather));
      auto group = op.getAttrOfType<dist::GroupAttr>("group");
      step[plan::key::kAttrs] =
          json::Object{{plan::attr::kGroup, group.getName().str()},
                       {plan::attr::kGroupSize, group.getSize()}};
    } else if (op.getDialect() && op.getDialect()->getNamespace() == "tile") {
      step[plan::key::kAttrs] = attrsJson(&op);
      if (auto adamw = dyn_cast<tile::AdamWOp>(op))
        for (unsigned i = 0; i < adamw.getNumParams(); ++i) {
          auto param = dyn_cast<BlockArgument>(adamw.getParam(i));
          StringAttr name = param ? func.getArgAttrOfType<StringAttr>(
                                        param.getArgNumber(), attrs::kParam)
                                  : StringAttr();
          if (!name)
            return op.emitOpError("plan: updates a value that is not a "
                                  "parameter argument");
          (*parameters[paramIndex.lookup(name.getValue())]
                .getAsObject())[plan::key::kGrad] = idOf(adamw.getGrad(i));
        }
    } else {
      return op.emitOpError("plan: not a kernel (lower to tile first)");
    }
    FailureOr<CudaStep> launches = cuda.emit(&op);
    if (failed(launches))
      return failure();
    maxScratch = std::max(maxScratch, launches->scratchBytes);
    json::Object cudaStep{
        {plan::key::kLaunches, std::move(launches->launches)}};
    if (!launches->library.empty())
      cudaStep[plan::key::kLibrary] = launches->library;
    if (launches->scratchBytes)
      cudaStep[plan::key::kScratchBytes] = launches->scratchBytes;
    if (launches->usesErrorFlag)
      cudaStep[plan::key::kErrorFlag] = true;
    step[plan::key::kCuda] = std::move(cudaStep);
    steps.push_back(std::move(step));
  }

  json::Array kernels;
  for (const auto &[name, source] : cuda.kernels())
    kernels.push_back(
        json::Object{{plan::key::kName, name}, {plan::key::kSource, source}});

  auto results = func.getBody().front().getTerminator()->getOperands();
  for (auto [index, result] : llvm::enumerate(results))
    if (auto name = func.getResultAttrOfType<StringAttr>(index, attrs::kOutput))
      outputs.push_back(json::Object{{plan::key::kName, name.str()},
                                     {plan::key::kValue, idOf(result)}});

  auto intAttr = [&](StringRef name) -> int64_t {
    auto attr = func->getAttrOfType<IntegerAttr>(name);
    return attr ? attr.getInt() : 0;
  };
  json::Object root{
      {plan::key::kFormat, llvm::StringRef(plan::kFormat)},
      {plan::key::kVersion, plan::kVersion},
      {plan::key::kFunction, func.getSymName().str()},
      {plan::key::kArenaBytes, intAttr(attrs::kArenaBytes)},
      {plan::key::kPersistentBytes, intAttr(attrs::kPersistentBytes)},
      {plan::key::kLargestBufferBytes, intAttr(attrs::kLargestBufferBytes)},
      {plan::key::kValues, std::move(values)},
      {plan::key::kInputs, std::move(inputs)},
      {plan::key::kParameters, std::move(parameters)},
      {plan::key::kOutputs, std::move(outputs)},
      {plan::key::kSteps, std::move(steps)},
      {plan::key::kCuda,
       json::Object{{plan::key::kHeader, kDeviceHeader},
                    {plan::key::kScratchBytes, maxScratch},
                    {plan::key::kKernels, std::move(kernels)}}}};
  return root;
}

/// Module-level facts the front end recorded (`kiln.model`), as JSON.
json::Object modelJson(ModuleOp module) {
  json::Object model;
  if (auto dict = module->getAttrOfType<DictionaryAttr>(attrs::kModel))
    for (NamedAttribute named : dict) {
      Attribute attr = named.getValue();
      StringRef name = named.getName().getValue();
      // A BoolAttr is an i1 IntegerAttr: test for it first.
      if (auto flag = dyn_cast<BoolAttr>(attr))
        model[name] = flag.getValue();
      else if (auto integer = dyn_cast<IntegerAttr>(attr))
        model[name] = integer.getInt();
      else if (auto number = dyn_cast<FloatAttr>(attr))
        model[name] = number.getValueAsDouble();
      else if (auto text = dyn_cast<StringAttr>(attr))
        model[name] = text.str();
    }
  return model;
}

} // namespace

LogicalResult kiln::writePlan(ModuleOp module, llvm::raw_ostream &os,
                              StringRef function) {
  auto func = module.lookupSymbol<func::FuncOp>(function);
  if (!func)
    return module.emitError("plan: no function @") << function;
  FailureOr<json::Object> written = PlanWriter(func).build();
  if (failed(written))
    return failure();
  json::Object model = modelJson(module);
  // One micro-batch per step unless nn-accumulate-gradients said otherwise.
  if (!model.get(plan::model::kMicroBatches))
    model[plan::model::kMicroBatches] = 1;
  (*written)[plan::key::kModel] = std::move(model);
  os << llvm::formatv("{0:1}", json::Value(std::move(*written))) << "\n";
  return success();
}

LogicalResult kiln::writeCudaSources(ModuleOp module, llvm::raw_ostream &os,
                                     StringRef function) {
  auto func = module.lookupSymbol<func::FuncOp>(function);
  if (!func)
    return module.emitError("cuda: no function @") << function;
  llvm::DenseMap<Value, int64_t> ids;
  for (BlockArgument arg : func.getArguments())
    ids[arg] = ids.size();
  CudaEmitter emitter(ids);
  for (Operation &op : func.getBody().front().without_terminator()) {
    for (Value result : op.getResults())
      ids[result] = ids.size();
    if (isa<tile::ViewOp, tile::ConcatOp>(op))
      continue; // memory, not kernels
    if (failed(emitter.emit(&op)))
      return failure();
  }
  for (const auto &[name, source] : emitter.kernels())
    os << "// ----- kernel " << name << "\n" << source << "\n";
  return success();
}

void kiln::registerTileToPlanTranslation() {
  TranslateFromMLIRRegistration registration(
      "tile-to-plan", "Write the runtime plan of a memory-planned tile module",
      [](Operation *op, llvm::raw_ostream &os) -> LogicalResult {
        auto module = dyn_cast<ModuleOp>(op);
        if (!module)
          return op->emitError("plan: expects a module");
        return writePlan(module, os);
      },
      [](DialectRegistry &registry) {
        registry.insert<kiln::dist::DistDialect, kiln::nn::NNDialect,
                        kiln::tile::TileDialect, arith::ArithDialect,
                        func::FuncDialect>();
      });
  TranslateFromMLIRRegistration cuda(
      "tile-to-cuda",
      "Write the CUDA C++ source of every kernel of a tile module",
      [](Operation *op, llvm::raw_ostream &os) -> LogicalResult {
        auto module = dyn_cast<ModuleOp>(op);
        if (!module)
          return op->emitError("cuda: expects a module");
        return writeCudaSources(module, os);
      },
      [](DialectRegistry &registry) {
        registry.insert<kiln::dist::DistDialect, kiln::nn::NNDialect,
                        kiln::tile::TileDialect, arith::ArithDialect,
                        func::FuncDialect>();
      });
}
