//===- BuildModel.cpp - Model configs to nn IR ----------------------------===//

#include "compiler/frontend/BuildModel.h"

#include "dialects/nn/NNOps.h"
#include "dialects/nn/PassAttrs.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"
#include "llvm/Support/CheckedArithmetic.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/SaveAndRestore.h"

#include <cmath>
#include <limits>
#include <optional>

using namespace mlir;
using namespace kiln;
using llvm::formatv;

int64_t ParameterInfo::numElements() const {
  std::optional<int64_t> count = 1;
  for (int64_t d : shape)
    if (count)
      count = llvm::checkedMul(*count, d);
  return count.value_or(std::numeric_limits<int64_t>::max());
}

namespace {

/// Checked arithmetic on sizes: nullopt once anything overflowed int64.
using Size = std::optional<int64_t>;
Size operator*(Size a, Size b) {
  return a && b ? llvm::checkedMul(*a, *b) : std::nullopt;
}
Size operator+(Size a, Size b) {
  return a && b ? llvm::checkedAdd(*a, *b) : std::nullopt;
}

/// The bytes of activations the forward pass of one step computes: every
/// result of every op, as ModelBuilder builds them (the backward computes
/// as much again). nullopt when that overflows int64.
Size forwardActivationBytes(const ModelConfig &config,
                            const BatchShape &shape) {
  Size h = config.hiddenSize, inner = config.intermediateSize;
  Size qWidth = Size(config.numHeads) * config.headDim;
  Size kvWidth = Size(config.numKvHeads) * config.headDim;
  Size layer, outside;
  if (config.architecture == Architecture::GPT2) {
    // ln_1, c_attn, its split, attention, c_proj, the residual add, ln_2,
    // c_fc, GELU, c_proj, add; outside the layers: wte, wpe and their sum,
    // ln_f.
    layer = Size(12) * h + Size(2) * inner;
    outside = Size(4) * h;
  } else {
    // The norm, q, k, v, RoPE of q and k, attention, o_proj, add, the
    // second norm, gate, up, SwiGLU, down_proj, add; outside: the embedding
    // and the final norm.
    layer = Size(6) * h + Size(3) * (qWidth + kvWidth) + Size(3) * inner;
    outside = Size(2) * h;
  }
  // Per token: the layers, what is outside them and a row of logits.
  Size perToken = layer * config.numLayers + outside + config.vocabSize;
  int64_t elementBytes = shape.precision == Precision::BF16 ? 2 : 4;
  return perToken * shape.batch * shape.seqLen * elementBytes;
}

/// Builds the forward function op by op. Parameters become block arguments
/// as they are first needed, so that their order follows the model.
class ModelBuilder {
public:
  ModelBuilder(MLIRContext &context, const ModelConfig &config,
               const BatchShape &shape)
      : context(context), config(config), shape(shape), b(&context),
        loc(UnknownLoc::get(&context)),
        computeType(shape.precision == Precision::BF16
                        ? Type(BFloat16Type::get(&context))
                        : Type(Float32Type::get(&context))) {}

  OwningOpRef<ModuleOp> build();

private:
  /// A tensor of the compute type with `shape`.
  RankedTensorType activation(ArrayRef<int64_t> dims) {
    return RankedTensorType::get(dims, computeType);
  }
  RankedTensorType hiddenType(int64_t width) {
    return activation({shape.batch, shape.seqLen, width});
  }

  /// The location of what the Hugging Face module `name` computes (e.g.
  /// "model.layers.3.self_attn"): diagnostics and pass remarks name it.
  Location moduleLoc(StringRef name) {
    return NameLoc::get(b.getStringAttr(name));
  }

  /// Builds what follows as part of the module `name`.
  void at(StringRef name) { loc = moduleLoc(name); }

  /// Declares a parameter and returns it in the compute type.
  Value param(const std::string &name, ArrayRef<int64_t> dims,
              const std::string &init) {
    auto type = RankedTensorType::get(dims, Float32Type::get(&context));
    BlockArgument arg = body->addArgument(type, moduleLoc(name));
    argAttrs.push_back(b.getDictionaryAttr(
        {b.getNamedAttr(attrs::kParam, b.getStringAttr(name)),
         b.getNamedAttr(attrs::kInit, b.getStringAttr(init))}));
    if (type.getElementType() == computeType)
      return arg;
    return nn::CastOp::create(b, loc, RankedTensorType::get(dims, computeType),
                              arg);
  }

  /// An int32 input of the step, [batch, seqLen] unless `dims` says.
  Value input(StringRef name, ArrayRef<int64_t> dims = {}) {
    SmallVector<int64_t> shapeOf(dims);
    if (dims.empty())
      shapeOf = {shape.batch, shape.seqLen};
    auto type = RankedTensorType::get(shapeOf, IntegerType::get(&context, 32));
    BlockArgument arg = body->addArgument(type, moduleLoc(name));
    argAttrs.push_back(b.getDictionaryAttr(
        {b.getNamedAttr(attrs::kInput, b.getStringAttr(name))}));
    return arg;
  }

  std::string normalInit(double std) const {
    return formatv("normal:{0}", llvm::format("%.9g", std)).str();
  }

  /// `x W^T (+ b)` with an HF `nn.Linear` weight `[out, in]`, at the
  /// location of the linear module itself.
  Value linear(Value x, const std::string &prefix, int64_t in, int64_t out,
               bool bias, double initStd) {
    llvm::SaveAndRestore<Location> scope(loc, moduleLoc(prefix));
    Value w = param(prefix + ".weight", {out, in}, normalInit(initStd));
    Value bv = bias ? param(prefix + ".bias", {out}, "zeros") : Value();
    return nn::LinearOp::create(b, loc, hiddenType(out), x, w, bv,
                                /*transpose_weight=*/false);
  }

  /// GPT-2's `Conv1D`: weight stored `[in, out]`, always with a bias.
  Value conv1d(Value x, const std::string &prefix, int64_t in, int64_t out,
               double initStd) {
    llvm::SaveAndRestore<Location> scope(loc, moduleLoc(prefix));
    Value w = param(prefix + ".weight", {in, out}, normalInit(initStd));
    Value bv = param(prefix + ".bias", {out}, "zeros");
    return nn::LinearOp::create(b, loc, hiddenType(out), x, w, bv,
                                /*transpose_weight=*/true);
  }

  Value rmsNorm(Value x, const std::string &name) {
    Value w = param(name + ".weight", {config.hiddenSize}, "ones");
    return nn::RMSNormOp::create(b, loc, x.getType(), x, w,
                                 b.getF64FloatAttr(config.normEpsilon));
  }

  Value layerNorm(Value x, const std::string &name) {
    Value w = param(name + ".weight", {config.hiddenSize}, "ones");
    Value bv = param(name + ".bias", {config.hiddenSize}, "zeros");
    return nn::LayerNormOp::create(b, loc, x.getType(), x, w, bv,
                                   b.getF64FloatAttr(config.normEpsilon));
  }

  Value attention(Value q, Value k, Value v) {
    FloatAttr scale = config.attentionScale > 0
                          ? b.getF64FloatAttr(config.attentionScale)
                          : FloatAttr();
    return nn::AttentionOp::create(
        b, loc, q.getType(), q, k, v, cuSeqlens, /*rope=*/Value(),
        b.getI64IntegerAttr(config.numHeads),
        b.getI64IntegerAttr(config.numKvHeads), b.getUnitAttr(), scale);
  }

  Value add(Value x, Value y) {
    return nn::AddOp::create(b, loc, x.getType(), x, y);
  }

  Value llamaLayer(Value h, int64_t layer);
  Value gpt2Layer(Value h, int64_t layer);

  MLIRContext &context;
  const ModelConfig &config;
  BatchShape shape;
  OpBuilder b;
  Location loc;
  Type computeType;
  Block *body = nullptr;
  Value positions, cuSeqlens;
  SmallVector<Attribute> argAttrs;
};

Value ModelBuilder::llamaLayer(Value h, int64_t layer) {
  std::string prefix = formatv("model.layers.{0}", layer).str();
  int64_t hidden = config.hiddenSize;
  int64_t qWidth = config.numHeads * config.headDim;
  int64_t kvWidth = config.numKvHeads * config.headDim;
  double std = config.initializerRange;

  at(prefix + ".input_layernorm");
  Value n = rmsNorm(h, prefix + ".input_layernorm");
  std::string attn = prefix + ".self_attn";
  at(attn);
  Value q = linear(n, attn + ".q_proj", hidden, qWidth, config.qkvBias, std);
  Value k = linear(n, attn + ".k_proj", hidden, kvWidth, config.qkvBias, std);
  Value v = linear(n, attn + ".v_proj", hidden, kvWidth, config.qkvBias, std);
  auto rope = [&](Value x, int64_t heads) -> Value {
    return nn::RoPEOp::create(b, loc, x.getType(), x, positions,
                              b.getI64IntegerAttr(heads),
                              b.getF64FloatAttr(config.ropeTheta),
                              /*inverse=*/UnitAttr());
  };
  Value a = attention(rope(q, config.numHeads), rope(k, config.numKvHeads), v);
  Value o = linear(a, attn + ".o_proj", qWidth, hidden, config.outputBias, std);
  at(prefix); // the residual connections belong to the decoder layer
  h = add(h, o);

  at(prefix + ".post_attention_layernorm");
  Value n2 = rmsNorm(h, prefix + ".post_attention_layernorm");
  std::string mlp = prefix + ".mlp";
  at(mlp);
  int64_t inner = config.intermediateSize;
  Value gate =
      linear(n2, mlp + ".gate_proj", hidden, inner, config.mlpBias, std);
  Value up = linear(n2, mlp + ".up_proj", hidden, inner, config.mlpBias, std);
  Value act = nn::SwiGLUOp::create(b, loc, gate.getType(), gate, up);
  Value down =
      linear(act, mlp + ".down_proj", inner, hidden, config.mlpBias, std);
  at(prefix);
  return add(h, down);
}

Value ModelBuilder::gpt2Layer(Value h, int64_t layer) {
  std::string prefix = formatv("transformer.h.{0}", layer).str();
  int64_t hidden = config.hiddenSize;
  double std = config.initializerRange;
  // GPT-2 scales the init of the projections into the residual stream.
  double residualStd = std / std::sqrt(2.0 * config.numLayers);

  at(prefix + ".ln_1");
  Value n = layerNorm(h, prefix + ".ln_1");
  at(prefix + ".attn");
  Value qkv = conv1d(n, prefix + ".attn.c_attn", hidden, 3 * hidden, std);
  Type part = hiddenType(hidden);
  auto split = nn::SplitOp::create(b, loc, TypeRange{part, part, part}, qkv);
  Value a =
      attention(split.getResult(0), split.getResult(1), split.getResult(2));
  Value o = conv1d(a, prefix + ".attn.c_proj", hidden, hidden, residualStd);
  at(prefix); // the residual connections belong to the block
  h = add(h, o);

  at(prefix + ".ln_2");
  Value n2 = layerNorm(h, prefix + ".ln_2");
  at(prefix + ".mlp");
  int64_t inner = config.intermediateSize;
  Value fc = conv1d(n2, prefix + ".mlp.c_fc", hidden, inner, std);
  Value act = nn::GeluOp::create(
      b, loc, fc.getType(), fc,
      nn::GeluApproximationAttr::get(
          &context, config.geluTanh ? nn::GeluApproximation::tanh
                                    : nn::GeluApproximation::none));
  Value proj = conv1d(act, prefix + ".mlp.c_proj", inner, hidden, residualStd);
  at(prefix);
  return add(h, proj);
}

OwningOpRef<ModuleOp> ModelBuilder::build() {
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  b.setInsertionPointToEnd(module->getBody());
  auto func =
      func::FuncOp::create(b, loc, "forward", b.getFunctionType({}, {}));
  body = func.addEntryBlock();
  b.setInsertionPointToStart(body);

  Value tokens = input("tokens");
  positions = input("positions");
  Value targets = input("targets");
  if (shape.packing == Packing::Documents)
    cuSeqlens = input("cu_seqlens", {shape.batch * shape.seqLen + 1});
  int64_t hidden = config.hiddenSize;
  double std = config.initializerRange;
  bool gpt2 = config.architecture == Architecture::GPT2;

  at(gpt2 ? "transformer.wte" : "model.embed_tokens");
  Value table =
      param(gpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight",
            {config.vocabSize, hidden}, normalInit(std));
  Value h = nn::EmbeddingOp::create(b, loc, hiddenType(hidden), table, tokens);
  if (gpt2) {
    at("transformer.wpe");
    Value wpe = param("transformer.wpe.weight", {config.maxPositions, hidden},
                      normalInit(std));
    h = add(
        h, nn::EmbeddingOp::create(b, loc, hiddenType(hidden), wpe, positions));
  }
  for (int64_t layer = 0; layer < config.numLayers; ++layer)
    h = gpt2 ? gpt2Layer(h, layer) : llamaLayer(h, layer);
  at(gpt2 ? "transformer.ln_f" : "model.norm");
  h = gpt2 ? layerNorm(h, "transformer.ln_f") : rmsNorm(h, "model.norm");

  at("lm_head");
  Value head = config.tieEmbeddings
                   ? table
                   : param("lm_head.weight", {config.vocabSize, hidden},
                           normalInit(std));
  Value logits =
      nn::LinearOp::create(b, loc, hiddenType(config.vocabSize), h, head,
                           Value(), /*transpose_weight=*/false);
  at("loss");
  Value loss = nn::CrossEntropyOp::create(
      b, loc, RankedTensorType::get({}, Float32Type::get(&context)), logits,
      targets, b.getI64IntegerAttr(-100));
  func::ReturnOp::create(b, loc, loss);

  func.setType(b.getFunctionType(body->getArgumentTypes(), {loss.getType()}));
  func.setAllArgAttrs(argAttrs);

  // What the runtime needs to know about the model beyond the step itself.
  auto integer = [&](StringRef name, int64_t value) {
    return b.getNamedAttr(name, b.getI64IntegerAttr(value));
  };
  SmallVector<NamedAttribute> model = {
      b.getNamedAttr("architecture",
                     b.getStringAttr(architectureName(config.architecture))),
      integer("vocab_size", config.vocabSize),
      integer("hidden_size", config.hiddenSize),
      integer("intermediate_size", config.intermediateSize),
      integer("num_layers", config.numLayers),
      integer("num_heads", config.numHeads),
      integer("num_kv_heads", config.numKvHeads),
      integer("head_dim", config.headDim),
      integer("batch", shape.batch),
      integer("seq_len", shape.seqLen),
      b.getNamedAttr("precision",
                     b.getStringAttr(
                         shape.precision == Precision::BF16 ? "bf16" : "fp32")),
      b.getNamedAttr("tie_word_embeddings",
                     b.getBoolAttr(config.tieEmbeddings)),
      b.getNamedAttr(
          "packing",
          b.getStringAttr(shape.packing == Packing::Documents ? "documents"
                          : shape.packing == Packing::Pad     ? "pad"
                                                              : "stream"))};
  if (shape.endOfText)
    model.push_back(integer("eot", *shape.endOfText));
  if (config.eosTokenId)
    model.push_back(integer("eos_token_id", *config.eosTokenId));
  (*module)->setAttr(attrs::kModel, b.getDictionaryAttr(model));
  return module;
}

} // namespace

llvm::Expected<OwningOpRef<ModuleOp>>
kiln::buildForward(MLIRContext &context, const ModelConfig &config,
                   const BatchShape &shape) {
  if (shape.batch <= 0 || shape.seqLen <= 0)
    return llvm::createStringError(
        formatv("batch ({0}) and sequence length ({1}) must be positive",
                shape.batch, shape.seqLen)
            .str());
  if (Size bytes = forwardActivationBytes(config, shape);
      !bytes || *bytes > kMaxStepActivationBytes)
    return llvm::createStringError(
        formatv("the training step (batch {0} x {1} tokens) computes {2} bytes "
                "of activations; Kiln plans steps of at most {3:N} (lower "
                "--batch or --seq-len)",
                shape.batch, shape.seqLen,
                bytes ? formatv("{0:N}", *bytes).str()
                      : std::string("more than 2^63"),
                kMaxStepActivationBytes)
            .str());
  if (config.slidingWindow > 0 && config.slidingWindow < shape.seqLen)
    return llvm::createStringError(
        formatv("sliding_window ({0}) is shorter than the sequence length "
                "({1}); Kiln attends to the whole sequence, so train with "
                "--seq-len {0} or less",
                config.slidingWindow, shape.seqLen)
            .str());
  if (config.architecture == Architecture::GPT2 &&
      shape.seqLen > config.maxPositions)
    return llvm::createStringError(
        formatv("the sequence length ({0}) exceeds n_positions ({1}), the "
                "number of learned position embeddings",
                shape.seqLen, config.maxPositions)
            .str());
  context.loadDialect<nn::NNDialect, func::FuncDialect>();
  OwningOpRef<ModuleOp> module = ModelBuilder(context, config, shape).build();
  if (failed(verify(*module)))
    return llvm::createStringError(
        "internal error: the front end built invalid IR (see the diagnostics "
        "above)");
  return module;
}

std::vector<ParameterInfo> kiln::listParameters(ModuleOp module) {
  std::vector<ParameterInfo> params;
  auto func = module.lookupSymbol<func::FuncOp>("forward");
  if (!func)
    return params;
  for (BlockArgument arg : func.getArguments()) {
    auto name =
        func.getArgAttrOfType<StringAttr>(arg.getArgNumber(), attrs::kParam);
    if (!name)
      continue;
    auto init =
        func.getArgAttrOfType<StringAttr>(arg.getArgNumber(), attrs::kInit);
    auto type = cast<RankedTensorType>(arg.getType());
    params.push_back(
        {name.str(),
         std::vector<int64_t>(type.getShape().begin(), type.getShape().end()),
         init ? init.str() : std::string()});
  }
  return params;
}
