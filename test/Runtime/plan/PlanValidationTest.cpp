//===- PlanValidationTest.cpp - Plans that contradict themselves ----------===//
//
// A valid plan, compiled by `kiln compile` from the tiny Llama config
// (examples/configs/tiny-llama, BF16), edited one way at a time: every edit
// that would crash, hang or silently corrupt a run is refused by
// Plan::parse / Plan::load with an error that names the step, kernel and
// field. The plan comes from the build (test/CMakeLists.txt, kiln-gpu-plans);
// a runtime-only build skips these tests.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/host/HostBackend.h"
#include "runtime/plan/Plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <fstream>
#include <functional>
#include <sstream>

using namespace kiln::rt;
using nlohmann::json;

namespace {

#ifdef KILN_VALIDATION_PLAN
const char *kPlanPath = KILN_VALIDATION_PLAN;
const char *kFusedPlanPath = KILN_VALIDATION_FUSED_PLAN;
#else
const char *kPlanPath = nullptr;
const char *kFusedPlanPath = nullptr;
#endif

json readPlan(const char *path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return json::parse(text.str());
}

/// The compiled plan without fusion (one kernel per op), read once.
const json &validPlan() {
  static const json plan = readPlan(kPlanPath);
  return plan;
}

/// The index of the first step of `kernel` (and, for fused steps, whose
/// first body op is `bodyOp`).
/// "step 0 (<kernel>): launch of <name>" of the plan's first launch.
std::string firstLaunch(const json &plan) {
  const json &first = plan["steps"][0];
  return "step 0 (" + first["kernel"].get<std::string>() + "): launch of " +
         first["cuda"]["launches"][0]["kernel"].get<std::string>();
}

std::size_t stepOf(const json &plan, const std::string &kernel,
                   const std::string &bodyOp = "") {
  const json &steps = plan.at("steps");
  for (std::size_t i = 0; i < steps.size(); ++i)
    if (steps[i].at("kernel") == kernel &&
        (bodyOp.empty() || steps[i].at("body").at(0).at("op") == bodyOp))
      return i;
  throw std::runtime_error("the plan has no step " + kernel + " " + bodyOp);
}

int64_t valueOf(const json &plan, const char *list, const std::string &name) {
  for (const json &entry : plan.at(list))
    if (entry.at("name") == name)
      return entry.at("value").get<int64_t>();
  throw std::runtime_error("the plan has no " + name);
}

/// The first value of `dtype` with more than one element, other than
/// `except`.
int64_t valueWithDtype(const json &plan, const std::string &dtype,
                       int64_t except = -1) {
  for (const json &value : plan.at("values"))
    if (value.at("dtype") == dtype && value.at("id") != except &&
        !value.at("shape").empty())
      return value.at("id").get<int64_t>();
  throw std::runtime_error("no value of dtype " + dtype);
}

/// One edit: it changes the plan and returns the substrings the error must
/// contain.
/// Makes the plan one for two data-parallel ranks: an all_reduce of the
/// first parameter's gradient before the optimizer (the others stay
/// unreduced; the mutations test the step itself). Returns its index.
std::size_t insertAllReduce(json &p) {
  p["model"]["data_parallel"] = 2;
  json &steps = p["steps"];
  std::size_t at = 0;
  while (at < steps.size() && steps[at]["chunk"] != "O")
    ++at;
  int64_t grad = p["parameters"][0]["grad"].get<int64_t>();
  json reduce = {{"kernel", "all_reduce"},
                 {"chunk", "W"},
                 {"inputs", {grad}},
                 {"outputs", {grad}},
                 {"attrs",
                  {{"reduction", "sum"},
                   {"group", "dp"},
                   {"group_size", 2},
                   {"last_micro_step", false}}},
                 {"cuda", {{"library", "nccl"}, {"launches", json::array()}}}};
  steps.insert(steps.begin() + at, reduce);
  return at;
}

struct Mutation {
  const char *name;
  std::function<std::vector<std::string>(json &)> apply;
};

std::string step(std::size_t index, const char *kernel) {
  return fmt::format("plan.json: step {} ({})", index, kernel);
}

json &attrs(json &plan, std::size_t index) {
  return plan["steps"][index]["attrs"];
}

json &bodyAttrs(json &plan, std::size_t index) {
  return plan["steps"][index]["body"][0]["attrs"];
}

const std::vector<Mutation> &mutations() {
  static const std::vector<Mutation> cases = {
      {"AllReduceGroupSize",
       [](json &p) {
         std::size_t at = insertAllReduce(p);
         p["steps"][at]["attrs"]["group_size"] = 4;
         return std::vector<std::string>{
             step(at, "all_reduce") +
             ": group 'dp' has 4 ranks, but the plan is compiled for "
             "data_parallel 2"};
       }},
      {"AllReduceNotInPlace",
       [](json &p) {
         std::size_t at = insertAllReduce(p);
         p["steps"][at]["outputs"][0] = valueWithDtype(p, "f32");
         return std::vector<std::string>{step(at, "all_reduce") + ": output 0",
                                         "must be input 0", "reduced in place"};
       }},
      {"AllReduceReduction",
       [](json &p) {
         std::size_t at = insertAllReduce(p);
         p["steps"][at]["attrs"]["reduction"] = "prod";
         return std::vector<std::string>{
             "attribute 'reduction' must be one of sum, avg, max, min, got "
             "'prod'"};
       }},
      {"AllReduceInCublasLt",
       [](json &p) {
         std::size_t at = insertAllReduce(p);
         p["steps"][at]["cuda"]["library"] = "cublasLt";
         return std::vector<std::string>{
             "a all_reduce runs in 'nccl', but its 'cuda' names 'cublasLt'"};
       }},
      // ZeRO-1's steps and shards.
      {"ReduceScatterWithoutZero",
       [](json &p) {
         std::size_t at = insertAllReduce(p);
         p["steps"][at]["kernel"] = "reduce_scatter";
         return std::vector<std::string>{
             step(at, "reduce_scatter") +
             ": reduce_scatter shards over the ranks, but the plan's model "
             "has zero 0 (ZeRO-1 is zero 1)"};
       }},
      {"AllGatherOfBf16",
       [](json &p) {
         std::size_t at = insertAllReduce(p);
         json &gather = p["steps"][at];
         gather["kernel"] = "all_gather";
         gather["attrs"] = {{"group", "dp"}, {"group_size", 2}};
         int64_t bf16 = valueWithDtype(p, "bf16");
         gather["inputs"] = gather["outputs"] = {bf16};
         return std::vector<std::string>{
             step(at, "all_gather"),
             fmt::format("input 0 (value {}) is bf16; all_gather takes f32 "
                         "(FP32 parameters)",
                         bf16)};
       }},
      {"AllGatherIntoAShardOfAnotherSize",
       [](json &p) {
         // N shards into N destinations: shard 0 must be a rank's shard of
         // destination 0 (over 2 ranks: half of it).
         std::size_t at = insertAllReduce(p);
         json &gather = p["steps"][at];
         gather["kernel"] = "all_gather";
         gather["attrs"] = {{"group", "dp"}, {"group_size", 2}};
         int64_t dest = valueWithDtype(p, "bf16");
         int64_t shard = valueWithDtype(p, "bf16", dest);
         gather["inputs"] = {shard, dest};
         gather["outputs"] = {dest};
         return std::vector<std::string>{
             step(at, "all_gather"),
             fmt::format("input 0 (value {}) (shard 0) must be bf16", shard),
             fmt::format("a rank's shard of input 1 (value {}) over 2 ranks",
                         dest)};
       }},
      {"ParameterValueOfAnotherSize",
       [](json &p) {
         // A value smaller than its gradient is only a sharded master's.
         int64_t value = p["parameters"][0]["value"].get<int64_t>();
         p["values"][value]["shape"] = {1};
         return std::vector<std::string>{
             "plan.json: parameter '" +
             p["parameters"][0]["name"].get<std::string>() +
             "': its value holds 1 elements; its grad's"};
       }},
      {"AdamWShardsWithoutZero",
       [](json &p) {
         std::size_t s = stepOf(p, "adamw");
         attrs(p, s)["shards"] = 2;
         return std::vector<std::string>{
             step(s, "adamw"), "field 'shards' = 2, but the plan shards its "
                               "optimizer over 1 (data_parallel 1, zero 0)"};
       }},
      {"GlobalNormWithoutShards",
       [](json &p) {
         std::size_t s = stepOf(p, "global_norm");
         attrs(p, s).erase("shards");
         return std::vector<std::string>{step(s, "global_norm"), "shards"};
       }},
      {"ZeroMomentsOfTheWholeParameter",
       [](json &p) {
         // ZeRO-1 over 2 ranks with moments of the whole parameter.
         p["model"]["data_parallel"] = 2;
         p["model"]["zero"] = 1;
         return std::vector<std::string>{
             "plan.json: parameter '" +
                 p["parameters"][0]["name"].get<std::string>() + "'",
             "its moments do not hold",
             "(its shard over 2 ranks under "
             "ZeRO-1)"};
       }},
      {"ZeroStageTwo",
       [](json &p) {
         p["model"]["zero"] = 2;
         return std::vector<std::string>{
             "zero (2) must be 0 or 1 (the ZeRO stage)"};
       }},
      {"NcclForAKernel",
       [](json &p) {
         p["steps"][0]["cuda"]["library"] = "nccl";
         return std::vector<std::string>{"does not run in 'nccl'"};
       }},
      // GEMM dimensions against the operands.
      {"GemmBatchOf100",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         attrs(p, s)["batch"] = 100;
         return std::vector<std::string>{step(s, "gemm"),
                                         "field 'batch' = 100 but input 0"};
       }},
      {"GemmMOf6400",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         attrs(p, s)["m"] = 6400;
         int64_t a = p["steps"][s]["inputs"][0];
         return std::vector<std::string>{
             step(s, "gemm"),
             fmt::format("field 'm' = 6400 but input 0 (value {}) has 128 rows",
                         a)};
       }},
      {"GemmNDoubled",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         attrs(p, s)["n"] = attrs(p, s)["n"].get<int64_t>() * 2;
         return std::vector<std::string>{step(s, "gemm"), "field 'n' = 256"};
       }},
      {"GemmKPlusOne",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         attrs(p, s)["k"] = 129;
         return std::vector<std::string>{step(s, "gemm"),
                                         "field 'k' = 129 but input 0"};
       }},
      {"GemmZeroM",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         attrs(p, s)["m"] = 0;
         return std::vector<std::string>{step(s, "gemm"),
                                         "field 'm' = 0 is outside [1, "};
       }},
      {"GemmNegativeN",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         attrs(p, s)["n"] = -5;
         return std::vector<std::string>{step(s, "gemm"),
                                         "field 'n' = -5 is outside"};
       }},
      {"GemmHugeK",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         attrs(p, s)["k"] = int64_t(1) << 40;
         return std::vector<std::string>{
             step(s, "gemm"), "field 'k' = 1099511627776 is outside"};
       }},
      {"GemmTransposeFlipped",
       [](json &p) {
         // A [128, 128] row-major vs. A^T: the same sizes, so flip B of a
         // gemm whose B is not square.
         const json &steps = p.at("steps");
         for (std::size_t s = 0; s < steps.size(); ++s)
           if (steps[s]["kernel"] == "gemm" &&
               steps[s]["attrs"]["n"] != steps[s]["attrs"]["k"]) {
             attrs(p, s)["transpose_b"] =
                 !attrs(p, s)["transpose_b"].get<bool>();
             return std::vector<std::string>{step(s, "gemm"), "but input 1"};
           }
         throw std::runtime_error("no gemm with n != k");
       }},
      {"GemmMissingM",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         attrs(p, s).erase("m");
         return std::vector<std::string>{step(s, "gemm"),
                                         "missing required attribute 'm'"};
       }},
      {"GemmMissingTransposeFlag",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         attrs(p, s).erase("transpose_a");
         return std::vector<std::string>{
             step(s, "gemm"), "missing required attribute 'transpose_a'"};
       }},
      {"GemmMistypedAttribute",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         attrs(p, s)["m"] = "128";
         return std::vector<std::string>{
             step(s, "gemm"), "attribute 'm' must be an integer, got \"128\""};
       }},
      {"GemmIntegerOperand",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         int64_t tokens = valueOf(p, "inputs", "tokens");
         p["steps"][s]["inputs"][0] = tokens;
         return std::vector<std::string>{
             step(s, "gemm"),
             fmt::format("input 0 (value {}) is i32, not a floating-point type",
                         tokens)};
       }},
      {"GemmUnknownEpilogue",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         attrs(p, s)["epilogue"] = "relu";
         return std::vector<std::string>{
             step(s, "gemm"), "attribute 'epilogue' must be one of none, "
                              "gelu_tanh, dgelu_tanh, bgrad_a, bgrad_b, got "
                              "'relu'"};
       }},
      {"GemmMissingEpilogue",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         attrs(p, s).erase("epilogue");
         return std::vector<std::string>{
             step(s, "gemm"), "missing required attribute 'epilogue'"};
       }},
      {"GemmDgeluWithoutPreActivation",
       [](json &p) {
         // A plain GEMM told to scale by GELU's derivative has no
         // pre-activation to read.
         const json &steps = p.at("steps");
         for (std::size_t s = 0; s < steps.size(); ++s)
           if (steps[s]["kernel"] == "gemm" && steps[s]["inputs"].size() == 2) {
             attrs(p, s)["epilogue"] = "dgelu_tanh";
             return std::vector<std::string>{step(s, "gemm"),
                                             "takes 3 inputs, got 2"};
           }
         throw std::runtime_error("no gemm without a bias");
       }},
      {"GemmBgradWithoutBiasGradient",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         attrs(p, s)["epilogue"] = "bgrad_a";
         return std::vector<std::string>{step(s, "gemm"),
                                         "takes 2 outputs, got 1"};
       }},
      {"GemmGeluPreActivationSize",
       [](json &p) {
         // The pre-activation output is the weight (another size).
         const json &steps = p.at("steps");
         for (std::size_t s = 0; s < steps.size(); ++s)
           if (steps[s]["kernel"] == "gemm" && steps[s]["inputs"].size() == 2 &&
               steps[s]["attrs"]["m"] != steps[s]["attrs"]["k"]) {
             attrs(p, s)["epilogue"] = "gelu_tanh";
             p["steps"][s]["outputs"].push_back(p["steps"][s]["inputs"][1]);
             return std::vector<std::string>{
                 step(s, "gemm"),
                 "(the gelu_tanh epilogue's pre-activation) holds"};
           }
         throw std::runtime_error("no gemm with m != k");
       }},
      {"GemmOneInput",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         p["steps"][s]["inputs"].erase(1);
         return std::vector<std::string>{step(s, "gemm"),
                                         "takes 2 to 3 inputs, got 1"};
       }},
      {"GemmTwoOutputs",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         p["steps"][s]["outputs"].push_back(p["steps"][s]["outputs"][0]);
         return std::vector<std::string>{step(s, "gemm"),
                                         "takes 1 outputs, got 2"};
       }},
      {"GemmOutputOnItsInput",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         int64_t a = p["steps"][s]["inputs"][0];
         p["steps"][s]["outputs"][0] = a;
         return std::vector<std::string>{
             step(s, "gemm"),
             fmt::format("output 0 (value {}) overlaps input 0", a)};
       }},
      // Attention heads against dimensions.
      {"FlashZeroHeads",
       [](json &p) {
         std::size_t s = stepOf(p, "flash_attention_fwd");
         attrs(p, s)["num_heads"] = 0;
         return std::vector<std::string>{
             step(s, "flash_attention_fwd"),
             "field 'num_heads' = 0 is outside [1, "};
       }},
      {"FlashKvHeadsNotDividing",
       [](json &p) {
         std::size_t s = stepOf(p, "flash_attention_fwd");
         attrs(p, s)["num_kv_heads"] = 3;
         return std::vector<std::string>{
             step(s, "flash_attention_fwd"),
             "field 'num_kv_heads' = 3 does not divide field 'num_heads' = 4"};
       }},
      {"FlashHeadsNotDividingTheWidth",
       [](json &p) {
         std::size_t s = stepOf(p, "flash_attention_fwd");
         attrs(p, s)["num_heads"] = 6;
         return std::vector<std::string>{
             step(s, "flash_attention_fwd"),
             "field 'num_heads' = 6 does not divide the query's last "
             "dimension 128"};
       }},
      {"FlashKvHeadsWrongForKeys",
       [](json &p) {
         std::size_t s = stepOf(p, "flash_attention_fwd");
         attrs(p, s)["num_kv_heads"] = 4;
         return std::vector<std::string>{step(s, "flash_attention_fwd"),
                                         "field 'num_kv_heads' = 4 and "
                                         "head_dim 32 make [2, 64, 128]"};
       }},
      {"FlashMissingScale",
       [](json &p) {
         std::size_t s = stepOf(p, "flash_attention_fwd");
         attrs(p, s).erase("scale");
         return std::vector<std::string>{step(s, "flash_attention_fwd"),
                                         "missing required attribute 'scale'"};
       }},
      {"FlashCausalNotABool",
       [](json &p) {
         std::size_t s = stepOf(p, "flash_attention_fwd");
         attrs(p, s)["causal"] = 1;
         return std::vector<std::string>{
             step(s, "flash_attention_fwd"),
             "attribute 'causal' must be true or false, got 1"};
       }},
      {"FlashLseNotF32",
       [](json &p) {
         std::size_t s = stepOf(p, "flash_attention_fwd");
         int64_t bf16 = valueWithDtype(p, "bf16");
         p["steps"][s]["outputs"][1] = bf16;
         return std::vector<std::string>{
             step(s, "flash_attention_fwd"),
             fmt::format("output 1 (value {}) (lse) is bf16, expected f32",
                         bf16)};
       }},
      {"FlashDuplicateOutputs",
       [](json &p) {
         std::size_t s = stepOf(p, "flash_attention_bwd");
         p["steps"][s]["outputs"][2] = p["steps"][s]["outputs"][1];
         return std::vector<std::string>{step(s, "flash_attention_bwd"),
                                         "overlaps output 1"};
       }},
      {"FlashBackwardFiveInputs",
       [](json &p) {
         std::size_t s = stepOf(p, "flash_attention_bwd");
         p["steps"][s]["inputs"].erase(5);
         return std::vector<std::string>{step(s, "flash_attention_bwd"),
                                         "takes 6 to 7 inputs, got 5"};
       }},
      // The optimizer.
      {"AdamWThreeInputs",
       [](json &p) {
         std::size_t s = stepOf(p, "adamw");
         p["steps"][s]["inputs"] = json::array({3, 4, 5});
         return std::vector<std::string>{
             step(s, "adamw"), "takes 4 inputs per parameter (param, grad, "
                               "exp_avg, exp_avg_sq), then lr, step and "
                               "grad_norm, got 3 inputs"};
       }},
      {"AdamWNotInPlace",
       [](json &p) {
         std::size_t s = stepOf(p, "adamw");
         // exp_avg's update written to exp_avg_sq's place.
         p["steps"][s]["outputs"][1] = p["steps"][s]["outputs"][2];
         return std::vector<std::string>{
             step(s, "adamw"), "output 1 (value",
             "must update input 2 (value 42) (exp_avg) in place"};
       }},
      {"AdamWBeta2AboveOne",
       [](json &p) {
         std::size_t s = stepOf(p, "adamw");
         attrs(p, s)["beta2"] = 1.5;
         return std::vector<std::string>{step(s, "adamw"),
                                         "field 'beta2' = 1.5 is outside"};
       }},
      {"AdamWMissingBeta2",
       [](json &p) {
         std::size_t s = stepOf(p, "adamw");
         attrs(p, s).erase("beta2");
         return std::vector<std::string>{step(s, "adamw"),
                                         "missing required attribute 'beta2'"};
       }},
      {"AdamWAnotherParametersMoments",
       [](json &p) {
         std::size_t s = stepOf(p, "adamw");
         // The first parameter updated with the second one's exp_avg_sq.
         json &param = p["parameters"][1];
         p["steps"][s]["inputs"][3] = param["exp_avg_sq"];
         return std::vector<std::string>{step(s, "adamw"), "input 3 (value"};
       }},
      {"ParameterGradAliasesItsValue",
       [](json &p) {
         json &param = p["parameters"][0];
         param["grad"] = param["value"];
         return std::vector<std::string>{
             "parameter 'model.embed_tokens.weight': grad (value 3) aliases "
             "its value (value 3)"};
       }},
      // The program.
      {"PersistentPastTheArena",
       [](json &p) {
         p["persistent_bytes"] = p["arena_bytes"].get<int64_t>() + 1;
         return std::vector<std::string>{"plan: 'persistent_bytes' is"};
       }},
      {"LossOnAParameter",
       [](json &p) {
         // The loss's buffer moved onto the first parameter's bytes.
         int64_t loss = valueOf(p, "outputs", "loss");
         p["values"][loss]["offset"] = p["values"][3]["offset"];
         std::size_t s = stepOf(p, "cross_entropy");
         return std::vector<std::string>{
             step(s, "cross_entropy"),
             fmt::format("output 0 (value {}) at offset", loss),
             "lies in the persistent region"};
       }},
      {"ReadOnlyValueWritten",
       [](json &p) {
         std::size_t s = stepOf(p, "fused", "rms_norm");
         p["steps"][s]["outputs"][0] = valueOf(p, "inputs", "lr");
         return std::vector<std::string>{step(s, "fused"), "yield 0"};
       }},
      {"GlobalNormIntoAVector",
       [](json &p) {
         std::size_t s = stepOf(p, "global_norm");
         int64_t wide = valueWithDtype(p, "f32", 3);
         p["steps"][s]["outputs"][0] = wide;
         return std::vector<std::string>{
             step(s, "global_norm"),
             fmt::format("output 0 (value {}) (the norm) holds", wide)};
       }},
      {"CrossEntropyFloatTargets",
       [](json &p) {
         std::size_t s = stepOf(p, "cross_entropy");
         p["steps"][s]["inputs"][1] = valueWithDtype(p, "bf16");
         return std::vector<std::string>{step(s, "cross_entropy"),
                                         "(targets) is bf16, expected i32"};
       }},
      {"UnknownKernel",
       [](json &p) {
         p["steps"][5]["kernel"] = "conv2d";
         return std::vector<std::string>{"plan.json: step 5: unknown kernel "
                                         "'conv2d'"};
       }},
      {"InvalidChunk",
       [](json &p) {
         p["steps"][5]["chunk"] = "X";
         return std::vector<std::string>{"plan.json: step 5 (",
                                         "unknown chunk 'X'"};
       }},
      {"MissingChunk",
       [](json &p) {
         p["steps"][5].erase("chunk");
         return std::vector<std::string>{"plan.json: step 5 (",
                                         "missing 'chunk'"};
       }},
      {"AdamWWithoutBeta1",
       [](json &p) {
         std::size_t s = stepOf(p, "adamw");
         attrs(p, s).erase("beta1");
         return std::vector<std::string>{step(s, "adamw"),
                                         "missing required attribute 'beta1'"};
       }},
      // Fused bodies.
      {"TemporaryTenTimesTooLarge",
       [](json &p) {
         std::size_t s = stepOf(p, "fused", "rms_norm");
         json &shape = p["steps"][s]["temporaries"][0]["shape"];
         shape[0] = shape[0].get<int64_t>() * 10;
         return std::vector<std::string>{
             step(s, "fused"), "body op 0 (rms_norm): result 0 holds"};
       }},
      {"IntegerTemporary",
       [](json &p) {
         std::size_t s = stepOf(p, "fused", "add");
         p["steps"][s]["temporaries"][0]["dtype"] = "i32";
         return std::vector<std::string>{
             step(s, "fused"),
             "body op 0 (add): result 0 (local 2) is i32, not a "
             "floating-point type"};
       }},
      {"BodyOperandOutOfRange",
       [](json &p) {
         std::size_t s = stepOf(p, "fused", "add");
         p["steps"][s]["body"][0]["operands"][1] = 99;
         return std::vector<std::string>{
             step(s, "fused"),
             "body op 0 (add): operand 99 is not a local value"};
       }},
      {"BodyOperandNotYetDefined",
       [](json &p) {
         std::size_t s = stepOf(p, "fused", "add");
         p["steps"][s]["body"][0]["operands"][1] = 2;
         return std::vector<std::string>{
             step(s, "fused"),
             "body op 0 (add): operand local 2 is used before any op defines "
             "it"};
       }},
      {"YieldOutOfRange",
       [](json &p) {
         std::size_t s = stepOf(p, "fused", "add");
         p["steps"][s]["yield"][0] = 7;
         return std::vector<std::string>{step(s, "fused"),
                                         "yields local value 7"};
       }},
      {"YieldOfAnUndefinedLocal",
       [](json &p) {
         std::size_t s = stepOf(p, "fused", "add");
         json temp = p["steps"][s]["temporaries"][0];
         temp["index"] = 3;
         p["steps"][s]["temporaries"].push_back(temp);
         p["steps"][s]["yield"][0] = 3;
         return std::vector<std::string>{
             step(s, "fused"), "yield 0 is local 3, which no body op defines"};
       }},
      {"UnknownBodyOp",
       [](json &p) {
         std::size_t s = stepOf(p, "fused", "add");
         p["steps"][s]["body"][0]["op"] = "softmax";
         return std::vector<std::string>{step(s, "fused"),
                                         "body op 0 (softmax): unknown body "
                                         "op 'softmax'"};
       }},
      {"AddWithOneOperand",
       [](json &p) {
         std::size_t s = stepOf(p, "fused", "add");
         p["steps"][s]["body"][0]["operands"].erase(1);
         return std::vector<std::string>{
             step(s, "fused"), "body op 0 (add): takes 2 operands, got 1"};
       }},
      {"RmsNormWithoutEpsilon",
       [](json &p) {
         std::size_t s = stepOf(p, "fused", "rms_norm");
         bodyAttrs(p, s).erase("epsilon");
         return std::vector<std::string>{
             step(s, "fused"),
             "body op 0 (rms_norm): missing required attribute 'epsilon'"};
       }},
      {"RopeWithoutTheta",
       [](json &p) {
         std::size_t s = stepOf(p, "fused", "rope");
         bodyAttrs(p, s).erase("theta");
         return std::vector<std::string>{
             step(s, "fused"),
             "body op 0 (rope): missing required attribute 'theta'"};
       }},
      {"RopeZeroHeads",
       [](json &p) {
         std::size_t s = stepOf(p, "fused", "rope");
         bodyAttrs(p, s)["num_heads"] = 0;
         return std::vector<std::string>{
             step(s, "fused"), "body op 0 (rope): field 'num_heads' = 0"};
       }},
      {"EmbeddingIdsSwapped",
       [](json &p) {
         std::size_t s = stepOf(p, "fused", "embedding");
         json &operands = p["steps"][s]["body"][0]["operands"];
         std::swap(operands[0], operands[1]);
         return std::vector<std::string>{step(s, "fused"),
                                         "body op 0 (embedding): operand 0 "
                                         "(local 1) is i32"};
       }},
      // Launch records.
      {"LaunchGridZero",
       [](json &p) {
         p["steps"][0]["cuda"]["launches"][0]["grid"][0] = 0;
         return std::vector<std::string>{"plan.json: " + firstLaunch(p),
                                         "launch geometry out of range"};
       }},
      {"LaunchBlockTooLarge",
       [](json &p) {
         p["steps"][0]["cuda"]["launches"][0]["block"][0] = 2048;
         return std::vector<std::string>{firstLaunch(p),
                                         "launch geometry out of range"};
       }},
      {"LaunchArgUnknownValue",
       [](json &p) {
         std::string launch = firstLaunch(p);
         p["steps"][0]["cuda"]["launches"][0]["args"][0] =
             json{{"value", 100000}};
         return std::vector<std::string>{launch, "refers to value 100000"};
       }},
      {"LaunchWithoutComputeCapability",
       [](json &p) {
         p["steps"][0]["cuda"]["launches"][0].erase("min_compute_capability");
         return std::vector<std::string>{firstLaunch(p),
                                         "missing 'min_compute_capability'"};
       }},
      {"LaunchOfAKernelWithoutSource",
       [](json &p) {
         p["steps"][0]["cuda"]["launches"][0]["kernel"] = "kiln_missing";
         return std::vector<std::string>{"launches 'kiln_missing', which the "
                                         "plan has no source for"};
       }},
      {"UnknownCudaLibrary",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         p["steps"][s]["cuda"]["library"] = "cudnn";
         return std::vector<std::string>{step(s, "gemm"),
                                         "unknown CUDA library 'cudnn'"};
       }},
      {"GemmWithoutItsLibrary",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         p["steps"][s]["cuda"].erase("library");
         return std::vector<std::string>{step(s, "gemm"),
                                         "a gemm runs in 'cublasLt', but its "
                                         "'cuda' names no library"};
       }},
      {"LibraryForANonGemm",
       [](json &p) {
         p["steps"][0]["cuda"]["library"] = "cublasLt";
         return std::vector<std::string>{
             "step 0 (" + p["steps"][0]["kernel"].get<std::string>() +
             "): only gemm and linear_cross_entropy steps run in cuBLASLt "
             "and the collectives in NCCL; a " +
             p["steps"][0]["kernel"].get<std::string>() +
             " does not run in 'cublasLt'"};
       }},
      // Values and the header.
      {"OldVersion",
       [](json &p) {
         p["version"] = 1;
         return std::vector<std::string>{
             "format version 1 is not the version this runtime reads (3)"};
       }},
      {"UnknownDtype",
       [](json &p) {
         p["values"][5]["dtype"] = "f16";
         return std::vector<std::string>{"value 5: unknown dtype 'f16'"};
       }},
      {"NegativeDimension",
       [](json &p) {
         p["values"][5]["shape"][0] = -1;
         return std::vector<std::string>{"value 5: negative dimension"};
       }},
      // Row-strided views (tile-fold-views): only where a kernel takes one.
      {"RowStrideNotWiderThanARow",
       [](json &p) {
         json &value = p["values"][5];
         value["row_stride"] = value["shape"].back();
         return std::vector<std::string>{"value 5: 'row_stride' = ",
                                         "must exceed the last dimension"};
       }},
      {"RowStridedGemmInput",
       [](json &p) {
         std::size_t s = stepOf(p, "gemm");
         int64_t a = p["steps"][s]["inputs"][0];
         json &value = p["values"][a];
         value["row_stride"] = value["shape"].back().get<int64_t>() + 8;
         return std::vector<std::string>{
             step(s, "gemm"),
             fmt::format("input 0 (value {}) is row-strided (row_stride", a),
             "which this kernel does not read"};
       }},
      {"RowStridedParameter",
       [](json &p) {
         json &param = p["parameters"][0];
         int64_t id = param["value"];
         json &value = p["values"][id];
         value["row_stride"] = value["shape"].back().get<int64_t>() + 8;
         return std::vector<std::string>{
             fmt::format("parameter '{}': value (value {}) is row-strided",
                         param["name"].get<std::string>(), id)};
       }},
      {"StridedAttentionGradientsOverlap",
       [](json &p) {
         // dk a view that starts where dq does: their runs share bytes.
         std::size_t s = stepOf(p, "flash_attention_bwd");
         int64_t dq = p["steps"][s]["outputs"][0],
                 dk = p["steps"][s]["outputs"][1];
         json &value = p["values"][dk];
         value["offset"] = p["values"][dq]["offset"];
         value["row_stride"] = value["shape"].back().get<int64_t>() * 2;
         return std::vector<std::string>{
             step(s, "flash_attention_bwd"),
             fmt::format("output 1 (value {}) overlaps output 0", dk)};
       }},
  };
  return cases;
}

/// The training-step checks of Plan::load.
const std::vector<Mutation> &programMutations() {
  static const std::vector<Mutation> cases = {
      {"NoSteps",
       [](json &p) {
         p["steps"] = json::array();
         return std::vector<std::string>{"plan: 'steps' is empty"};
       }},
      {"NoLossOutput",
       [](json &p) {
         p["outputs"] = json::array();
         return std::vector<std::string>{"plan: no output 'loss'"};
       }},
      {"LossIsAParameter",
       [](json &p) {
         p["outputs"][0]["value"] = p["parameters"][0]["value"];
         return std::vector<std::string>{
             "output 'loss' (value 3) must be one f32 element"};
       }},
      // Data parallelism: an all_reduce of the first parameter's gradient
      // before the optimizer, for two ranks.
      {"DataParallelWithoutReduction",
       [](json &p) {
         p["model"]["data_parallel"] = 2;
         return std::vector<std::string>{
             "plan: data_parallel is 2 but no all_reduce step reduces the "
             "gradient of parameter"};
       }},
      {"LossWrittenByNoStep",
       [](json &p) {
         p["outputs"][0]["value"] = valueOf(p, "inputs", "lr");
         return std::vector<std::string>{"output 'loss' (value 120) is "
                                         "written by no step"};
       }},
  };
  return cases;
}

std::string refusal(const json &plan, bool load) {
  try {
    if (load)
      Plan::load(plan.dump(), "plan.json");
    else
      Plan::parse(plan.dump(), "plan.json");
  } catch (const Error &e) {
    return e.what();
  }
  return "";
}

class PlanValidationTest : public ::testing::TestWithParam<Mutation> {
protected:
  void SetUp() override {
    if (!kPlanPath)
      GTEST_SKIP() << "built without the compiler: no compiled plan";
  }
};

TEST(PlanValidation, TheCompiledPlanLoads) {
  if (!kPlanPath)
    GTEST_SKIP() << "built without the compiler: no compiled plan";
  Plan plan = Plan::load(validPlan().dump(), "plan.json");
  EXPECT_GT(plan.steps.size(), 100u);
  EXPECT_EQ(plan.microBatches, 1);
  EXPECT_TRUE(plan.inputs.count("loss_scale"));
  // The flash kernels carry their tensor-core requirement.
  int flash = 0;
  for (const Step &step : plan.steps)
    for (const CudaLaunch &launch : step.cuda.launches)
      flash += launch.minComputeCapability == 80;
  EXPECT_GT(flash, 0);
}

/// A plan for two data-parallel ranks parses, and a backend of one process
/// refuses it.
TEST(PlanValidation, AnAllReducePlanNeedsItsRanks) {
  if (!kPlanPath)
    GTEST_SKIP() << "built without the compiler: no compiled plan";
  json p = validPlan();
  std::size_t at = insertAllReduce(p);
  Plan plan = Plan::parse(p.dump(), "plan.json");
  EXPECT_EQ(plan.dataParallel, 2);
  ASSERT_EQ(plan.steps[at].kind(), kiln::plan::StepKind::AllReduce);
  EXPECT_EQ(plan.steps[at].cuda.library, kiln::plan::kNccl);
  EXPECT_FALSE(plan.steps[at].runsInLastMicroStepOnly());
  try {
    HostBackend backend(plan);
    FAIL() << "a host backend of one process ran a plan for two ranks";
  } catch (const Error &e) {
    EXPECT_THAT(e.what(),
                ::testing::HasSubstr("the plan is compiled for 2 data-parallel "
                                     "ranks and this run has 1"));
  }
}

/// The default, fused plan (nn-fuse), read once.
const json &fusedPlan() {
  static const json plan = readPlan(kFusedPlanPath);
  return plan;
}

/// What fusion adds to the plan: multi-op regions, multi-tensor AdamW
/// steps and the BF16 compute copies they keep, and the LM head with its
/// loss as one chunked step (linear-cross-entropy).
TEST(PlanValidation, TheFusedPlanLoads) {
  if (!kFusedPlanPath)
    GTEST_SKIP() << "built without the compiler: no compiled plan";
  Plan plan = Plan::load(fusedPlan().dump(), "plan.json");
  std::size_t optimizer = 0, updated = 0, regions = 0, heads = 0;
  for (const Step &step : plan.steps) {
    if (const auto *head = std::get_if<LinearCrossEntropyStep>(&step.op)) {
      ++heads;
      EXPECT_EQ(head->chunkRows, 64); // the least; 128 tokens: two chunks
      EXPECT_EQ(step.cuda.launches.size(), 3u);
    }
    if (const auto *adamw = std::get_if<AdamWStep>(&step.op)) {
      ++optimizer;
      EXPECT_TRUE(adamw->computeCopies);
      updated += adamw->numParams(step.inputs.size());
    }
    if (const auto *fused = std::get_if<FusedStep>(&step.op))
      regions += fused->body.size() > 1;
  }
  EXPECT_EQ(optimizer, 2u); // with and without weight decay
  EXPECT_EQ(updated, plan.parameters.size());
  EXPECT_GT(regions, 10u);
  EXPECT_EQ(heads, 1u);
  for (const Parameter &param : plan.parameters)
    EXPECT_GE(param.computeCopy, 0) << param.name;
}

std::vector<Mutation> fusedMutations() {
  auto adamwInputs = [](json &p, std::size_t &s, std::size_t &n) {
    s = stepOf(p, "adamw");
    n = (p["steps"][s]["inputs"].size() - 3) / 5;
  };
  return {
      {"AdamWAnotherParametersCopy",
       [=](json &p) {
         std::size_t s, n;
         adamwInputs(p, s, n);
         // Parameter 0 updated into parameter 1's compute copy (in place,
         // so only the ownership is wrong).
         json &inputs = p["steps"][s]["inputs"];
         json &outputs = p["steps"][s]["outputs"];
         std::swap(inputs[4 * n], inputs[4 * n + 1]);
         std::swap(outputs[3 * n], outputs[3 * n + 1]);
         return std::vector<std::string>{
             step(s, "adamw"), "is not a parameter updated with its own",
             fmt::format("and compute copy (input {})", 4 * n)};
       }},
      {"ComputeCopyInF32",
       [](json &p) {
         json &param = p["parameters"][0];
         param["compute_copy"] = param["exp_avg"];
         return std::vector<std::string>{
             "parameter 'model.embed_tokens.weight': compute_copy (value",
             "must be bf16 with the parameter's"};
       }},
      {"AdamWCopiesFlagDropped",
       [=](json &p) {
         std::size_t s, n;
         adamwInputs(p, s, n);
         attrs(p, s)["compute_copies"] = false;
         // 5 tensors per parameter read as 4: the counts or the roles
         // disagree.
         return std::vector<std::string>{step(s, "adamw")};
       }},
      // linear_cross_entropy: attributes, operands and its library.
      {"LinearCrossEntropyChunkOfZero",
       [](json &p) {
         std::size_t s = stepOf(p, "linear_cross_entropy");
         attrs(p, s)["chunk_rows"] = 0;
         return std::vector<std::string>{
             step(s, "linear_cross_entropy"),
             "field 'chunk_rows' = 0 is outside [1, 128]"};
       }},
      {"LinearCrossEntropyWithoutChunkRows",
       [](json &p) {
         std::size_t s = stepOf(p, "linear_cross_entropy");
         attrs(p, s).erase("chunk_rows");
         return std::vector<std::string>{
             step(s, "linear_cross_entropy"),
             "missing required attribute 'chunk_rows'"};
       }},
      {"LinearCrossEntropyScratchOfAnotherChunk",
       [](json &p) {
         std::size_t s = stepOf(p, "linear_cross_entropy");
         attrs(p, s)["chunk_rows"] = 32;
         int64_t scratch = p["steps"][s]["outputs"][3];
         return std::vector<std::string>{
             step(s, "linear_cross_entropy"),
             fmt::format("output 3 (value {}) (scratch) has shape [64, 320], "
                         "but field 'chunk_rows' and the vocabulary make "
                         "[32, 320]",
                         scratch)};
       }},
      {"LinearCrossEntropyFloatTargets",
       [](json &p) {
         std::size_t s = stepOf(p, "linear_cross_entropy");
         p["steps"][s]["inputs"][2] = valueWithDtype(p, "bf16");
         return std::vector<std::string>{step(s, "linear_cross_entropy"),
                                         "(targets) is bf16, expected i32"};
       }},
      {"LinearCrossEntropyWeightOfAnotherWidth",
       [](json &p) {
         std::size_t s = stepOf(p, "linear_cross_entropy");
         // The head's weight swapped for its weight gradient's FP32 twin
         // of another dtype.
         p["steps"][s]["inputs"][1] = p["steps"][s]["outputs"][2];
         return std::vector<std::string>{step(s, "linear_cross_entropy"),
                                         "(weight) is f32, but input 0",
                                         "(input) is bf16"};
       }},
      {"LinearCrossEntropyThreeOutputs",
       [](json &p) {
         std::size_t s = stepOf(p, "linear_cross_entropy");
         p["steps"][s]["outputs"].erase(3);
         return std::vector<std::string>{step(s, "linear_cross_entropy"),
                                         "takes 4 outputs, got 3"};
       }},
      {"LinearCrossEntropyWithoutItsLibrary",
       [](json &p) {
         std::size_t s = stepOf(p, "linear_cross_entropy");
         p["steps"][s]["cuda"].erase("library");
         return std::vector<std::string>{
             step(s, "linear_cross_entropy"),
             "a linear_cross_entropy runs in 'cublasLt', but its 'cuda' "
             "names no library"};
       }},
      {"LinearCrossEntropyRowsWithoutTheChunkArgument",
       [](json &p) {
         std::size_t s = stepOf(p, "linear_cross_entropy");
         p["steps"][s]["cuda"]["launches"][1]["args"].erase(11);
         return std::vector<std::string>{
             step(s, "linear_cross_entropy"),
             "must have 3 launches (count, rows, reduce), the rows kernel's "
             "last argument an i64 (the chunk index)"};
       }},
      // rope-attention: the table an attention rotates Q and K by.
      {"RopeAttentionWithoutItsTable",
       [](json &p) {
         std::size_t s = stepOf(p, "flash_attention_fwd");
         p["steps"][s]["inputs"].erase(p["steps"][s]["inputs"].size() - 1);
         return std::vector<std::string>{step(s, "flash_attention_fwd"),
                                         "takes 4 to 5 inputs, got 3"};
       }},
      {"RopeAttentionReadsTheLseAsItsTable",
       [](json &p) {
         std::size_t s = stepOf(p, "flash_attention_bwd");
         json &inputs = p["steps"][s]["inputs"];
         inputs[inputs.size() - 1] = inputs[5]; // the lse: f32, [b, h, s]
         return std::vector<std::string>{
             step(s, "flash_attention_bwd"),
             "(rope table) has shape [2, 4, 64], expected [batch, seq, "
             "head_dim] = [2, 64, 32]"};
       }},
      {"RopeTableReadAsCuSeqlens",
       [](json &p) {
         std::size_t s = stepOf(p, "flash_attention_fwd");
         attrs(p, s)["rope"] = false;
         return std::vector<std::string>{step(s, "flash_attention_fwd"),
                                         "(cu_seqlens) is f32, expected i32"};
       }},
      {"RopeTableOfThetaZero",
       [](json &p) {
         std::size_t s = stepOf(p, "rope_table");
         attrs(p, s)["theta"] = 0.0;
         return std::vector<std::string>{step(s, "rope_table"),
                                         "field 'theta' = 0 is not positive"};
       }},
      {"RopeTableOfFloatPositions",
       [](json &p) {
         std::size_t s = stepOf(p, "rope_table");
         p["steps"][s]["inputs"][0] = p["steps"][s]["outputs"][0];
         return std::vector<std::string>{step(s, "rope_table"),
                                         "(positions) is f32, expected i32"};
       }},
      {"RegionReadsALaterLocal",
       [](json &p) {
         const json &steps = p.at("steps");
         std::size_t s = 0;
         while (!(steps[s].at("kernel") == "fused" &&
                  steps[s].at("body").size() > 1))
           ++s;
         json &body = p["steps"][s]["body"];
         int64_t later = body[1]["results"][0].get<int64_t>();
         body[0]["operands"][0] = later;
         return std::vector<std::string>{
             step(s, "fused"),
             fmt::format("body op 0 ({}): operand local {} is used before "
                         "any op defines it",
                         body[0]["op"].get<std::string>(), later)};
       }},
  };
}

TEST(PlanValidation, FusedPlanMutationsAreRefused) {
  if (!kFusedPlanPath)
    GTEST_SKIP() << "built without the compiler: no compiled plan";
  for (const Mutation &mutation : fusedMutations()) {
    SCOPED_TRACE(mutation.name);
    json plan = fusedPlan();
    std::vector<std::string> expected = mutation.apply(plan);
    std::string error = refusal(plan, /*load=*/false);
    ASSERT_FALSE(error.empty()) << "Plan::parse accepted the plan";
    for (const std::string &part : expected)
      EXPECT_THAT(error, ::testing::HasSubstr(part));
  }
}

TEST(PlanValidation, ThereAreAtLeastFortyMutations) {
  EXPECT_GE(mutations().size() + programMutations().size(), 40u);
}

TEST_P(PlanValidationTest, IsRefusedByParse) {
  json plan = validPlan();
  std::vector<std::string> expected = GetParam().apply(plan);
  std::string error = refusal(plan, /*load=*/false);
  ASSERT_FALSE(error.empty()) << "Plan::parse accepted the plan";
  for (const std::string &part : expected)
    EXPECT_THAT(error, ::testing::HasSubstr(part));
}

INSTANTIATE_TEST_SUITE_P(Mutations, PlanValidationTest,
                         ::testing::ValuesIn(mutations()),
                         [](const ::testing::TestParamInfo<Mutation> &info) {
                           return info.param.name;
                         });

class PlanLoadTest : public PlanValidationTest {};

TEST_P(PlanLoadTest, IsRefusedByLoad) {
  json plan = validPlan();
  std::vector<std::string> expected = GetParam().apply(plan);
  // Each still parses: they are training-step rules, not format rules.
  EXPECT_EQ(refusal(plan, /*load=*/false), "");
  std::string error = refusal(plan, /*load=*/true);
  ASSERT_FALSE(error.empty()) << "Plan::load accepted the plan";
  for (const std::string &part : expected)
    EXPECT_THAT(error, ::testing::HasSubstr(part));
}

INSTANTIATE_TEST_SUITE_P(Program, PlanLoadTest,
                         ::testing::ValuesIn(programMutations()),
                         [](const ::testing::TestParamInfo<Mutation> &info) {
                           return info.param.name;
                         });

} // namespace
