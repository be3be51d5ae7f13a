//===- kiln-run.cpp - Train from a compiled plan --------------------------===//
//
// The runtime's own driver, for machines without the compiler (GPU machines
// have no LLVM/MLIR): `kiln compile -o plan.json` there, `kiln-run plan.json
// --data ...` here. Takes kiln train's runtime options.
//
//===----------------------------------------------------------------------===//

#include "runtime/train/Trainer.h"
#if KILN_ENABLE_CUDA
#include "runtime/cuda/CudaApi.h"
#endif

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <unistd.h>
#include <vector>

namespace {

constexpr const char *kUsage =
    "usage: kiln-run <plan.json> --data <files...> [--steps N] [--lr X]\n"
    "                [--val-data <files...>] [--eval-every N]\n"
    "                [--eval-tokens N] [--warmup N]\n"
    "                [--lr-schedule cosine|linear|constant|wsd]\n"
    "                [--decay-fraction F] [--min-lr X]\n"
    "                [--seed N] [--out DIR] [--init FILE]\n"
    "                [--save-grads FILE] [--resume DIR] [--save-every N]\n"
    "                [--keep N] [--no-checkpoint] [--overwrite] [--log-scale]\n"
    "                [--backend auto|host|cuda] [--config config.json]\n"
    "       kiln-run --cuda-info\n"
    "Trains with a plan compiled by `kiln compile --emit=plan` (the batch,\n"
    "sequence length and precision are the plan's). A resumed run uses the\n"
    "settings it was started with unless a flag is given again.\n"
    "--cuda-info prints the CUDA driver, device, NVRTC, cuBLASLt and headers\n"
    "the runtime finds (or why not) and exits.\n";

/// `kiln-run --cuda-info`: what the cuda backend would use.
int printCudaInfo() {
#if KILN_ENABLE_CUDA
  for (const auto &[what, where] : kiln::rt::cuda::toolkitReport())
    std::printf("%-15s %s\n", (what + ":").c_str(), where.c_str());
  return 0;
#else
  std::puts("this kiln-run was built without CUDA support "
            "(KILN_ENABLE_CUDA=OFF)");
  return 0;
#endif
}

/// The whole of `text` as a number of type T; throws std::invalid_argument
/// (a trailing "abc", a fraction for an integer, a sign for an unsigned).
template <typename T> T parseNumber(const std::string &text) {
  std::size_t used = 0;
  T value;
  if constexpr (std::is_same_v<T, double>) {
    value = std::stod(text, &used);
  } else if constexpr (std::is_unsigned_v<T>) {
    if (text.find('-') != std::string::npos)
      throw std::invalid_argument(text);
    value = std::stoull(text, &used);
  } else {
    value = std::stoll(text, &used);
  }
  if (used != text.size())
    throw std::invalid_argument(text);
  return value;
}

bool readFile(const std::string &path, std::string &text) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return false;
  std::ostringstream buffer;
  buffer << in.rdbuf();
  text = buffer.str();
  return true;
}

} // namespace

int main(int argc, char **argv) {
  kiln::rt::TrainOptions options;
  std::string planPath, configPath;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (arg == "--cuda-info")
      return printCudaInfo();
    if (arg.rfind("--", 0) != 0) {
      if (!planPath.empty()) {
        std::fprintf(stderr,
                     "kiln-run: error: two plans given ('%s', '%s')\n%s",
                     planPath.c_str(), arg.c_str(), kUsage);
        return 1;
      }
      planPath = arg;
      continue;
    }
    if (arg == "--overwrite") {
      options.overwrite = true;
      continue;
    }
    if (arg == "--log-scale") {
      options.logScale = true;
      continue;
    }
    if (arg == "--no-checkpoint") {
      options.noCheckpoint = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "kiln-run: error: %s needs a value\n%s", arg.c_str(),
                   kUsage);
      return 1;
    }
    std::string value = argv[++i];
    const char *kind = "a number";
    try {
      if (arg == "--data" || arg == "--val-data") {
        // Comma-separated, and the files after it up to the next option
        // (as a shell expands --data shards/*.bin).
        std::vector<std::string> &files =
            arg == "--data" ? options.data : options.valData;
        std::stringstream list(value);
        for (std::string item; std::getline(list, item, ',');)
          files.push_back(item);
        while (i + 1 < argc && argv[i + 1][0] != '-' &&
               !std::string_view(argv[i + 1]).ends_with(".json"))
          files.push_back(argv[++i]);
      } else if (arg == "--eval-every") {
        kind = "an integer";
        options.evalEvery = parseNumber<int64_t>(value);
      } else if (arg == "--eval-tokens") {
        kind = "an integer";
        options.evalTokens = parseNumber<int64_t>(value);
      } else if (arg == "--steps") {
        kind = "an integer";
        options.steps = parseNumber<int64_t>(value);
      } else if (arg == "--lr") {
        options.lr = parseNumber<double>(value);
      } else if (arg == "--warmup") {
        kind = "an integer";
        options.warmupSteps = parseNumber<int64_t>(value);
      } else if (arg == "--lr-schedule") {
        options.lrSchedule = value;
      } else if (arg == "--decay-fraction") {
        options.decayFraction = parseNumber<double>(value);
      } else if (arg == "--min-lr") {
        options.minLr = parseNumber<double>(value);
      } else if (arg == "--seed") {
        kind = "a non-negative integer";
        options.seed = parseNumber<uint64_t>(value);
      } else if (arg == "--out") {
        options.outDir = value;
      } else if (arg == "--init") {
        options.initPath = value;
      } else if (arg == "--save-grads") {
        options.saveGradsPath = value;
      } else if (arg == "--resume") {
        options.resumeDir = value;
      } else if (arg == "--save-every") {
        kind = "an integer";
        options.saveEvery = parseNumber<int64_t>(value);
      } else if (arg == "--keep") {
        kind = "an integer";
        options.keep = parseNumber<int64_t>(value);
      } else if (arg == "--backend") {
        options.backend = value;
      } else if (arg == "--config") {
        configPath = value;
      } else {
        std::fprintf(stderr, "kiln-run: error: unknown option %s\n%s",
                     arg.c_str(), kUsage);
        return 1;
      }
    } catch (const std::exception &) {
      std::fprintf(stderr, "kiln-run: error: %s: '%s' is not %s\n", arg.c_str(),
                   value.c_str(), kind);
      return 1;
    }
  }
  if (planPath.empty()) {
    std::fputs(kUsage, stderr);
    return 1;
  }
  options.planSource = planPath;
  if (!readFile(planPath, options.planText)) {
    std::fprintf(stderr, "kiln-run: error: %s: cannot read the plan\n",
                 planPath.c_str());
    return 1;
  }
  if (!configPath.empty() && !readFile(configPath, options.configText)) {
    std::fprintf(stderr, "kiln-run: error: %s: cannot read\n",
                 configPath.c_str());
    return 1;
  }
  if (!configPath.empty())
    options.configSource = configPath;
  options.progressBar = isatty(STDERR_FILENO);
  options.command = "kiln-run " + planPath;
  return kiln::rt::runTraining(options);
}
