//===- ModelConfig.cpp - Hugging Face model configurations ----------------===//

#include "compiler/frontend/ModelConfig.h"

#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/CheckedArithmetic.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Regex.h"

#include <cmath>
#include <limits>
#include <optional>

using namespace kiln;
using llvm::Error;
using llvm::Expected;
using llvm::StringRef;
using llvm::json::Object;
using llvm::json::Value;

StringRef kiln::architectureName(Architecture arch) {
  switch (arch) {
  case Architecture::Llama:
    return "LlamaForCausalLM";
  case Architecture::Mistral:
    return "MistralForCausalLM";
  case Architecture::Qwen2:
    return "Qwen2ForCausalLM";
  case Architecture::GPT2:
    return "GPT2LMHeadModel";
  }
  return "unknown";
}

namespace {

/// Prints a number as a person would write it (0.1, 1e-05, 10000).
std::string formatNumber(double value) {
  return llvm::formatv("{0}", llvm::format("%g", value)).str();
}

/// Typed access to the keys of a config object; the first problem found is
/// kept and reported with the file and key. A reader that failed returns
/// placeholders: nothing may be computed from its values before
/// takeError() says they are sound.
class ConfigReader {
public:
  ConfigReader(const Object &object, StringRef path)
      : object(object), path(path.str()) {}

  /// A required positive integer; 1 after a failure.
  int64_t positive(StringRef key) {
    if (!has(key)) {
      fail(key, "is required");
      return 1;
    }
    return optionalPositive(key).value_or(1);
  }

  /// An optional positive integer; nullopt when absent, null or invalid.
  std::optional<int64_t> optionalPositive(StringRef key) {
    std::optional<int64_t> value = optionalInteger(key);
    if (value && *value <= 0) {
      fail(key, llvm::formatv("must be positive, got {0}", *value).str());
      return std::nullopt;
    }
    return value;
  }

  std::optional<int64_t> optionalInteger(StringRef key) {
    const Value *value = object.get(key);
    if (!value || value->kind() == Value::Null)
      return std::nullopt;
    // getAsInteger converts a double of exactly 2^63 to int64, which is
    // undefined: a double from 2^63 up is too large before it is asked (an
    // integer literal that large is a uint64, which getAsUINT64 returns).
    if (std::optional<double> number = value->getAsNumber();
        number && *number >= 0x1p63 && !value->getAsUINT64()) {
      fail(key, "is " + describe(*value) + ", too large for a 64-bit integer");
      return std::nullopt;
    }
    if (std::optional<int64_t> integer = value->getAsInteger())
      return integer;
    // A whole number that int64 cannot hold (1e30, 2^64 - 1) is too large,
    // not a fraction.
    if (std::optional<double> number = value->getAsNumber();
        number && std::isfinite(*number) && std::trunc(*number) == *number) {
      fail(key, "is " + describe(*value) + ", too large for a 64-bit integer");
      return std::nullopt;
    }
    fail(key, "must be an integer, got " + describe(*value));
    return std::nullopt;
  }

  double numberOr(StringRef key, double fallback) {
    const Value *value = object.get(key);
    if (!value || value->kind() == Value::Null)
      return fallback;
    if (std::optional<double> number = value->getAsNumber()) {
      if (std::isfinite(*number))
        return *number;
      fail(key, "must be a finite number, got " + describe(*value));
      return fallback;
    }
    fail(key, "must be a number, got " + describe(*value));
    return fallback;
  }

  bool boolOr(StringRef key, bool fallback) {
    const Value *value = object.get(key);
    if (!value || value->kind() == Value::Null)
      return fallback;
    if (std::optional<bool> flag = value->getAsBoolean())
      return *flag;
    fail(key, "must be true or false, got " + describe(*value));
    return fallback;
  }

  std::optional<std::string> optionalString(StringRef key) {
    const Value *value = object.get(key);
    if (!value || value->kind() == Value::Null)
      return std::nullopt;
    if (std::optional<StringRef> text = value->getAsString())
      return text->str();
    fail(key, "must be a string, got " + describe(*value));
    return std::nullopt;
  }

  bool has(StringRef key) const {
    const Value *value = object.get(key);
    return value && value->kind() != Value::Null;
  }

  const Value *get(StringRef key) const { return object.get(key); }

  /// Records a problem with `key`; only the first one is reported.
  void fail(StringRef key, const std::string &problem) {
    if (!error)
      error = llvm::formatv("{0}: '{1}' {2}", path, key, problem).str();
  }

  Error takeError() {
    if (!error)
      return Error::success();
    return llvm::createStringError(*error);
  }

  static std::string describe(const Value &value) {
    switch (value.kind()) {
    case Value::Null:
      return "null";
    case Value::Boolean:
      return *value.getAsBoolean() ? "true" : "false";
    case Value::Number:
      return formatNumber(*value.getAsNumber());
    case Value::String:
      return ("the string \"" + *value.getAsString() + "\"").str();
    case Value::Array:
      return "an array";
    case Value::Object:
      return "an object";
    }
    return "a value";
  }

private:
  const Object &object;
  std::string path;
  std::optional<std::string> error;
};

/// Refuses keys whose meaning Kiln does not implement.
void refuseUnsupported(ConfigReader &reader) {
  for (StringRef key :
       {"num_local_experts", "num_experts", "num_experts_per_tok",
        "n_routed_experts", "moe_intermediate_size"})
    if (reader.has(key))
      reader.fail(key, "asks for a mixture-of-experts model, which Kiln "
                       "does not support");
  if (const Value *scaling = reader.get("rope_scaling");
      scaling && scaling->kind() != Value::Null) {
    std::string type = "an unknown";
    if (const Object *object = scaling->getAsObject()) {
      for (StringRef typeKey : {"rope_type", "type"})
        if (std::optional<StringRef> name = object->getString(typeKey))
          type = ("type '" + *name + "'").str();
      if (type == "type 'default'")
        return;
    }
    reader.fail("rope_scaling", "asks for " + type +
                                    " RoPE scaling; Kiln implements "
                                    "unscaled RoPE only (set it to null)");
  }
  if (double factor = reader.numberOr("partial_rotary_factor", 1.0);
      factor != 1.0)
    reader.fail("partial_rotary_factor",
                "is " + formatNumber(factor) + "; Kiln rotates the whole head");
  if (double dropout = reader.numberOr("attention_dropout", 0.0);
      dropout != 0.0)
    reader.fail("attention_dropout",
                "is " + formatNumber(dropout) +
                    "; Kiln does not apply attention dropout");
}

/// One factor of a parameter tensor's size: a config key and its value.
/// Derived sizes (a default head_dim) have no key and are never blamed.
struct Factor {
  StringRef key;
  int64_t value;
};

/// Counts a model's parameters in checked arithmetic, term by term, and
/// remembers the largest factor of the largest term: the field to blame
/// when the model is too large.
class ParameterCount {
public:
  /// Adds `tensors` tensors of the product of `factors` elements each.
  void add(int64_t tensors, std::initializer_list<Factor> factors) {
    std::optional<int64_t> term = tensors;
    const Factor *largest = nullptr;
    for (const Factor &factor : factors) {
      if (term)
        term = llvm::checkedMul(*term, factor.value);
      if (!factor.key.empty() && (!largest || factor.value > largest->value))
        largest = &factor;
    }
    // An overflowed term (nullopt) is larger than any other.
    bool larger = !blamed || (largestTerm && (!term || *term > *largestTerm));
    if (largest && larger) {
      blamed = *largest;
      largestTerm = term;
    }
    if (total)
      total = term ? llvm::checkedAdd(*total, *term) : std::nullopt;
  }

  /// The count; nullopt when it overflows int64.
  std::optional<int64_t> total = 0;
  std::optional<Factor> blamed;

private:
  std::optional<int64_t> largestTerm;
};

/// Refuses models beyond kMaxLayers layers or kMaxParameters parameters,
/// counting them as buildForward will build them, before any IR exists.
/// `keys` spell the fields as the config's architecture does.
struct SizeKeys {
  StringRef vocab, hidden, inner, layers, heads, kvHeads, headDim, positions;
};

void checkModelSize(ConfigReader &reader, const ModelConfig &config,
                    const SizeKeys &keys) {
  if (config.numLayers > kMaxLayers) {
    reader.fail(keys.layers, llvm::formatv("is {0}; Kiln builds at most {1:N} "
                                           "layers",
                                           config.numLayers, kMaxLayers)
                                 .str());
    return;
  }
  Factor vocab{keys.vocab, config.vocabSize};
  Factor hidden{keys.hidden, config.hiddenSize};
  Factor inner{keys.inner, config.intermediateSize};
  Factor layers{keys.layers, config.numLayers};
  Factor heads{keys.heads, config.numHeads};
  Factor kvHeads{keys.kvHeads, config.numKvHeads};
  Factor headDim{keys.headDim, config.headDim};
  ParameterCount count;
  count.add(config.tieEmbeddings ? 1 : 2, {vocab, hidden});
  if (config.architecture == Architecture::GPT2) {
    // wte (and lm_head), wpe, ln_f; per layer ln_1 and ln_2, c_attn
    // [h, 3h] + bias, c_proj, c_fc and the MLP's c_proj, each with a bias.
    count.add(1, {Factor{keys.positions, config.maxPositions}, hidden});
    count.add(2, {hidden});
    count.add(4, {layers, hidden});
    count.add(3, {layers, hidden, hidden});
    count.add(3, {layers, hidden});
    count.add(1, {layers, hidden, hidden});
    count.add(1, {layers, hidden});
    count.add(2, {layers, hidden, inner});
    count.add(1, {layers, inner});
    count.add(1, {layers, hidden});
  } else {
    // embed_tokens (and lm_head), the final norm; per layer two norms,
    // q_proj and o_proj, k_proj and v_proj, the three MLP projections and
    // the biases the architecture has.
    count.add(1, {hidden});
    count.add(2, {layers, hidden});
    count.add(2, {layers, hidden, heads, headDim});
    count.add(2, {layers, hidden, kvHeads, headDim});
    count.add(3, {layers, hidden, inner});
    if (config.qkvBias) {
      count.add(1, {layers, heads, headDim});
      count.add(2, {layers, kvHeads, headDim});
    }
    if (config.outputBias)
      count.add(1, {layers, hidden});
    if (config.mlpBias) {
      count.add(2, {layers, inner});
      count.add(1, {layers, hidden});
    }
  }
  if (count.total && *count.total <= kMaxParameters)
    return;
  std::string parameters = count.total
                               ? llvm::formatv("{0:N}", *count.total).str()
                               : std::string("more than 2^63");
  reader.fail(count.blamed->key,
              llvm::formatv("({0}) gives the model {1} parameters; Kiln "
                            "builds at most {2:N}",
                            count.blamed->value, parameters, kMaxParameters)
                  .str());
}

Expected<ModelConfig> parseLlamaFamily(ConfigReader &reader,
                                       Architecture arch) {
  ModelConfig config;
  config.architecture = arch;
  config.vocabSize = reader.positive("vocab_size");
  config.hiddenSize = reader.positive("hidden_size");
  config.intermediateSize = reader.positive("intermediate_size");
  config.numLayers = reader.positive("num_hidden_layers");
  config.numHeads = reader.positive("num_attention_heads");
  std::optional<int64_t> numKvHeads =
      reader.optionalPositive("num_key_value_heads");
  std::optional<int64_t> headDim = reader.optionalPositive("head_dim");
  config.maxPositions =
      reader.optionalPositive("max_position_embeddings").value_or(4096);
  config.normEpsilon = reader.numberOr("rms_norm_eps", 1e-6);
  config.ropeTheta = reader.numberOr("rope_theta", 10000.0);
  config.tieEmbeddings = reader.boolOr("tie_word_embeddings", false);
  config.initializerRange = reader.numberOr("initializer_range", 0.02);
  if (std::optional<std::string> act = reader.optionalString("hidden_act");
      act && *act != "silu")
    reader.fail("hidden_act", "is \"" + *act +
                                  "\"; Kiln implements the SiLU-gated MLP "
                                  "(\"silu\") of this architecture");
  switch (arch) {
  case Architecture::Llama:
    config.qkvBias = config.outputBias = reader.boolOr("attention_bias", false);
    config.mlpBias = reader.boolOr("mlp_bias", false);
    break;
  case Architecture::Mistral:
    config.slidingWindow =
        reader.optionalPositive("sliding_window").value_or(0);
    break;
  case Architecture::Qwen2:
    config.qkvBias = true;
    if (reader.boolOr("use_sliding_window", false))
      config.slidingWindow =
          reader.optionalPositive("sliding_window").value_or(0);
    break;
  case Architecture::GPT2:
    break;
  }
  refuseUnsupported(reader);
  // What follows derives sizes from the values above; a failed read must
  // stop it (a zero head count would divide by zero).
  if (Error error = reader.takeError())
    return std::move(error);
  if (config.normEpsilon <= 0)
    reader.fail("rms_norm_eps", "must be positive");
  if (config.ropeTheta <= 0)
    reader.fail("rope_theta", "must be positive");
  config.numKvHeads = numKvHeads.value_or(config.numHeads);
  if (config.numHeads % config.numKvHeads != 0)
    reader.fail("num_key_value_heads",
                llvm::formatv("({0}) must divide num_attention_heads ({1})",
                              config.numKvHeads, config.numHeads)
                    .str());
  if (headDim) {
    config.headDim = *headDim;
    if (config.headDim % 2 != 0)
      reader.fail("head_dim",
                  llvm::formatv("({0}) must be even for rotary embeddings",
                                config.headDim)
                      .str());
  } else if (config.hiddenSize % config.numHeads != 0) {
    reader.fail("num_attention_heads",
                llvm::formatv("({0}) must divide hidden_size ({1})",
                              config.numHeads, config.hiddenSize)
                    .str());
  } else {
    config.headDim = config.hiddenSize / config.numHeads;
    if (config.headDim % 2 != 0)
      reader.fail("num_attention_heads",
                  llvm::formatv("({0}) gives head_dim = hidden_size / "
                                "num_attention_heads = {1}, which must be "
                                "even for rotary embeddings",
                                config.numHeads, config.headDim)
                      .str());
  }
  if (Error error = reader.takeError())
    return std::move(error);
  checkModelSize(reader, config,
                 {"vocab_size", "hidden_size", "intermediate_size",
                  "num_hidden_layers", "num_attention_heads",
                  // Derived sizes are never blamed: their source is.
                  numKvHeads ? "num_key_value_heads" : "",
                  headDim ? "head_dim" : "", "max_position_embeddings"});
  if (Error error = reader.takeError())
    return std::move(error);
  return config;
}

Expected<ModelConfig> parseGPT2(ConfigReader &reader) {
  ModelConfig config;
  config.architecture = Architecture::GPT2;
  config.vocabSize = reader.positive("vocab_size");
  config.hiddenSize = reader.positive("n_embd");
  config.numLayers = reader.positive("n_layer");
  config.numHeads = reader.positive("n_head");
  std::optional<int64_t> inner = reader.optionalPositive("n_inner");
  config.maxPositions = reader.optionalPositive("n_positions").value_or(1024);
  config.normEpsilon = reader.numberOr("layer_norm_epsilon", 1e-5);
  config.tieEmbeddings = reader.boolOr("tie_word_embeddings", true);
  config.initializerRange = reader.numberOr("initializer_range", 0.02);
  config.qkvBias = config.outputBias = config.mlpBias = true;
  std::string act =
      reader.optionalString("activation_function").value_or("gelu_new");
  if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast")
    config.geluTanh = true;
  else if (act == "gelu")
    config.geluTanh = false;
  else
    reader.fail("activation_function",
                "is \"" + act +
                    "\"; Kiln supports \"gelu_new\" (tanh GELU) and \"gelu\"");
  if (!reader.boolOr("scale_attn_weights", true))
    config.attentionScale = 1.0;
  if (reader.boolOr("scale_attn_by_inverse_layer_idx", false))
    reader.fail("scale_attn_by_inverse_layer_idx",
                "is true; Kiln scales every layer's attention alike");
  if (reader.boolOr("add_cross_attention", false))
    reader.fail("add_cross_attention",
                "is true; Kiln builds decoder-only models");
  for (StringRef key : {"resid_pdrop", "embd_pdrop", "attn_pdrop"})
    if (double p = reader.numberOr(key, 0.0); p != 0.0)
      config.notes.push_back(
          (key + " = " + formatNumber(p) + ": dropout is not applied").str());
  refuseUnsupported(reader);
  // What follows derives sizes from the values above; a failed read must
  // stop it (a zero head count would divide by zero).
  if (Error error = reader.takeError())
    return std::move(error);
  if (config.hiddenSize % config.numHeads != 0)
    reader.fail("n_head", llvm::formatv("({0}) must divide n_embd ({1})",
                                        config.numHeads, config.hiddenSize)
                              .str());
  if (config.normEpsilon <= 0)
    reader.fail("layer_norm_epsilon", "must be positive");
  if (Error error = reader.takeError())
    return std::move(error);
  config.numKvHeads = config.numHeads;
  config.headDim = config.hiddenSize / config.numHeads;
  // n_inner defaults to 4 x n_embd; past 2^63 / 4 that is too large anyway,
  // so saturate and let the size check name n_embd.
  config.intermediateSize =
      inner.value_or(llvm::checkedMul<int64_t>(4, config.hiddenSize)
                         .value_or(std::numeric_limits<int64_t>::max()));
  checkModelSize(reader, config,
                 {"vocab_size", "n_embd", inner ? "n_inner" : "", "n_layer",
                  "n_head", "", "", "n_positions"});
  if (Error error = reader.takeError())
    return std::move(error);
  return config;
}

} // namespace

Expected<ModelConfig> kiln::parseModelConfig(StringRef text, StringRef path) {
  Expected<Value> json = llvm::json::parse(text);
  if (!json) {
    // llvm::json reports "[line:column, byte=offset]: message"; show it as
    // a compiler would, "file:line:column: invalid JSON: message".
    std::string message = llvm::toString(json.takeError());
    llvm::SmallVector<StringRef> match;
    if (llvm::Regex("^\\[([0-9]+):([0-9]+), byte=[0-9]+\\]: (.*)$")
            .match(message, &match))
      return llvm::createStringError(
          llvm::formatv("{0}:{1}:{2}: invalid JSON: {3}", path, match[1],
                        match[2], match[3])
              .str());
    return llvm::createStringError(
        llvm::formatv("{0}: invalid JSON: {1}", path, message).str());
  }
  const Object *object = json->getAsObject();
  if (!object)
    return llvm::createStringError(
        llvm::formatv("{0}: expected a JSON object at the top level", path)
            .str());
  ConfigReader reader(*object, path);

  // The architecture: `architectures[0]`, else `model_type`.
  std::string name;
  if (const Value *archs = object->get("architectures")) {
    const llvm::json::Array *array = archs->getAsArray();
    if (!array || array->empty() || !(*array)[0].getAsString())
      return llvm::createStringError(
          llvm::formatv("{0}: 'architectures' must be a non-empty array of "
                        "strings",
                        path)
              .str());
    name = (*array)[0].getAsString()->str();
  } else if (std::optional<std::string> type =
                 reader.optionalString("model_type")) {
    name = *type;
  } else {
    if (Error error = reader.takeError())
      return std::move(error);
    return llvm::createStringError(
        llvm::formatv("{0}: neither 'architectures' nor 'model_type' says "
                      "which model this is",
                      path)
            .str());
  }
  std::optional<Architecture> arch =
      llvm::StringSwitch<std::optional<Architecture>>(name)
          .Cases({"LlamaForCausalLM", "llama"}, Architecture::Llama)
          .Cases({"MistralForCausalLM", "mistral"}, Architecture::Mistral)
          .Cases({"Qwen2ForCausalLM", "qwen2"}, Architecture::Qwen2)
          .Cases({"GPT2LMHeadModel", "gpt2"}, Architecture::GPT2)
          .Default(std::nullopt);
  if (!arch)
    return llvm::createStringError(
        llvm::formatv("{0}: unsupported architecture '{1}' (Kiln supports "
                      "LlamaForCausalLM, MistralForCausalLM, "
                      "Qwen2ForCausalLM and GPT2LMHeadModel)",
                      path, name)
            .str());
  Expected<ModelConfig> config = *arch == Architecture::GPT2
                                     ? parseGPT2(reader)
                                     : parseLlamaFamily(reader, *arch);
  if (!config)
    return config;
  // The token that ends a document, for sequence packing: eos_token_id, or
  // the first of a list of them (Llama 3.1). Anything else is ignored: only
  // --packing reads it, and --eot replaces it.
  if (const Value *eos = object->get("eos_token_id")) {
    const Value *first = eos;
    if (const llvm::json::Array *list = eos->getAsArray())
      first = list->empty() ? nullptr : &list->front();
    if (first)
      if (std::optional<int64_t> id = first->getAsInteger(); id && *id >= 0)
        config->eosTokenId = *id;
  }
  return config;
}

Expected<ModelConfig> kiln::readModelConfig(StringRef path) {
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> buffer =
      llvm::MemoryBuffer::getFile(path, /*IsText=*/true);
  if (!buffer)
    return llvm::createStringError(llvm::formatv("{0}: cannot read: {1}", path,
                                                 buffer.getError().message())
                                       .str());
  return parseModelConfig((*buffer)->getBuffer(), path);
}
