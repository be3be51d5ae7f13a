//===- TrainStepGpuTest.cpp - Whole training steps on the GPU vs the host -===//
//
// For every plan in $KILN_GPU_TEST_PLANS (default: the plans the build
// compiled into <build>/test/gpu-plans): one training step on the cuda
// backend against the host backend from the same weights and batch (loss,
// every gradient, every updated weight), then a short run whose losses must
// track the host's. A `<name>-collectives.json` plan (--force-collectives:
// the gradients all-reduced over a world of one) runs NCCL's path and must
// give `<name>.json`'s step bitwise. Skips, with the reason, without a GPU,
// plans or (for the collectives) NCCL.
//
//===----------------------------------------------------------------------===//

#include "runtime/Backend.h"
#include "runtime/Error.h"
#include "runtime/cuda/CudaBackend.h"
#include "runtime/cuda/Device.h"
#include "runtime/cuda/Nccl.h"
#include "runtime/host/HostBackend.h"
#include "runtime/train/Random.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using namespace kiln::rt;

namespace {

constexpr std::string_view kCollectives = "-collectives";

bool isCollectivesPlan(const fs::path &path) {
  return path.stem().string().ends_with(kCollectives);
}

/// The plans to test: the plain ones, or those with collectives.
std::vector<fs::path> planFiles(bool collectives = false) {
  const char *env = std::getenv("KILN_GPU_TEST_PLANS");
  fs::path dir = env ? fs::path(env) : fs::path(KILN_TEST_PLAN_DIR);
  std::vector<fs::path> plans;
  if (fs::is_directory(dir))
    for (const auto &entry : fs::directory_iterator(dir))
      if (entry.path().extension() == ".json" &&
          isCollectivesPlan(entry.path()) == collectives)
        plans.push_back(entry.path());
  std::sort(plans.begin(), plans.end());
  return plans;
}

std::string readText(const fs::path &path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// ||a - b|| / ||b||.
double relativeError(const std::vector<float> &a, const std::vector<float> &b) {
  double diff = 0, ref = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    ref += double(b[i]) * b[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(ref), 1e-30);
}

/// The same weights, batch and scalars into both backends.
void prepare(const Plan &plan, Backend &host, Backend &gpu, uint64_t seed,
             int64_t step) {
  Rng rng(seed);
  for (const Parameter &param : plan.parameters) {
    std::vector<float> data(plan.values[param.value].numElements());
    if (param.init == "ones")
      for (float &x : data)
        x = 1.0f + 0.1f * float(rng.normal());
    else
      fillNormal(rng, data.data(), data.size(), 0.0, 0.05);
    host.write(param.value, data);
    gpu.write(param.value, data);
  }
  int64_t batch = plan.modelInt("batch"), seq = plan.modelInt("seq_len");
  int64_t vocab = plan.modelInt("vocab_size");
  std::vector<int32_t> tokens(batch * seq), targets(batch * seq),
      positions(batch * seq);
  for (int64_t i = 0; i < batch * seq; ++i) {
    // A learnable stream: the next token follows from the current one.
    tokens[i] = static_cast<int32_t>((i * 7 + 3) % vocab);
    targets[i] = static_cast<int32_t>(((i + 1) * 7 + 3) % vocab);
    positions[i] = static_cast<int32_t>(i % seq);
  }
  for (Backend *b : {&host, &gpu}) {
    b->writeInt32(plan.input("tokens"), tokens);
    b->writeInt32(plan.input("targets"), targets);
    b->writeInt32(plan.input("positions"), positions);
    b->write(plan.input("lr"), std::vector<float>{1e-3f});
    b->write(plan.input("step"), std::vector<float>{float(step)});
  }
}

class TrainStepGpuTest : public ::testing::Test {
protected:
  void SetUp() override {
    std::string why;
    if (!cuda::probeDevice(&why))
      GTEST_SKIP() << "no usable GPU: " << why;
    plans = planFiles();
    if (plans.empty())
      GTEST_SKIP() << "no plans in " << KILN_TEST_PLAN_DIR
                   << " or $KILN_GPU_TEST_PLANS (bench/gpu/run.sh makes them)";
  }
  std::vector<fs::path> plans;
};

TEST_F(TrainStepGpuTest, OneStepMatchesTheHost) {
  for (const fs::path &path : plans) {
    SCOPED_TRACE(path.string());
    Plan plan = Plan::parse(readText(path), path.string());
    bool bf16 = plan.model.value("precision", "bf16") == "bf16";
    double bound = bf16 ? 3e-2 : 1e-3;
    HostBackend host(plan);
    std::unique_ptr<Backend> gpu = cuda::createCudaBackend(plan);
    prepare(plan, host, *gpu, 42, 1);
    std::map<std::string, std::vector<float>> hostGrads, gpuGrads;
    auto grab = [&](Backend &b, std::map<std::string, std::vector<float>> &g) {
      return [&](char chunk) {
        if (chunk == 'O')
          for (const Parameter &p : plan.parameters)
            g[p.name] = b.read(p.grad);
      };
    };
    host.run(grab(host, hostGrads));
    gpu->run(grab(*gpu, gpuGrads));
    int64_t loss = plan.output("loss");
    EXPECT_LE(relativeError(gpu->read(loss), host.read(loss)), bound);
    for (const Parameter &p : plan.parameters) {
      EXPECT_LE(relativeError(gpuGrads[p.name], hostGrads[p.name]), bound)
          << "gradient of " << p.name;
      EXPECT_LE(relativeError(gpu->read(p.value), host.read(p.value)), bound)
          << "updated " << p.name;
    }
  }
}

TEST_F(TrainStepGpuTest, ShortRunTracksTheHost) {
  for (const fs::path &path : plans) {
    SCOPED_TRACE(path.string());
    Plan plan = Plan::parse(readText(path), path.string());
    HostBackend host(plan);
    std::unique_ptr<Backend> gpu = cuda::createCudaBackend(plan);
    prepare(plan, host, *gpu, 7, 1);
    int64_t loss = plan.output("loss");
    double first = 0, last = 0;
    for (int step = 1; step <= 20; ++step) {
      for (Backend *b : {static_cast<Backend *>(&host), gpu.get()})
        b->write(plan.input("step"), std::vector<float>{float(step)});
      host.run({});
      gpu->run({});
      double h = host.read(loss)[0], g = gpu->read(loss)[0];
      EXPECT_NEAR(g, h, 0.05 * std::abs(h)) << "step " << step;
      (step == 1 ? first : last) = g;
    }
    EXPECT_LT(last, first) << "the loss did not fall on the GPU";
  }
}

// NCCL over one rank: every all-reduce is the identity, run by NCCL on the
// collectives' stream and ordered by events; the step must be the plain
// plan's, bit for bit. Prints the time of each (the cost of the path; not
// asserted).
TEST_F(TrainStepGpuTest, NcclOverOneRankIsThePlainStep) {
  std::vector<fs::path> collectives = planFiles(true);
  if (collectives.empty())
    GTEST_SKIP() << "no *" << kCollectives << ".json plan";
  try {
    cuda::nccl();
  } catch (const Error &error) {
    GTEST_SKIP() << "NCCL does not load: " << error.what();
  }
  for (const fs::path &path : collectives) {
    SCOPED_TRACE(path.string());
    std::string stem = path.stem().string();
    fs::path plainPath =
        path.parent_path() /
        (stem.substr(0, stem.size() - kCollectives.size()) + ".json");
    Plan reduced = Plan::parse(readText(path), path.string());
    Plan plain = Plan::parse(readText(plainPath), plainPath.string());
    ASSERT_TRUE(std::any_of(
        reduced.steps.begin(), reduced.steps.end(),
        [](const Step &step) { return step.kind() == StepKind::AllReduce; }))
        << "the plan reduces nothing";
    std::unique_ptr<Backend> withNccl = cuda::createCudaBackend(reduced);
    std::unique_ptr<Backend> without = cuda::createCudaBackend(plain);
    // (prepare writes the same data into both: a host backend is not
    // needed, but its signature takes two.)
    prepare(reduced, *withNccl, *withNccl, 42, 1);
    prepare(plain, *without, *without, 42, 1);
    double seconds[2] = {0, 0};
    Backend *backends[2] = {withNccl.get(), without.get()};
    for (int step = 1; step <= 5; ++step)
      for (int b = 0; b < 2; ++b) {
        const Plan &plan = b == 0 ? reduced : plain;
        backends[b]->write(plan.input("step"), std::vector<float>{float(step)});
        auto start = std::chrono::steady_clock::now();
        backends[b]->run({});
        backends[b]->read(plan.output("loss"));
        if (step > 1)
          seconds[b] += std::chrono::duration<double>(
                            std::chrono::steady_clock::now() - start)
                            .count();
      }
    EXPECT_EQ(withNccl->read(reduced.output("loss")),
              without->read(plain.output("loss")));
    for (std::size_t i = 0; i < reduced.parameters.size(); ++i)
      EXPECT_EQ(withNccl->read(reduced.parameters[i].value),
                without->read(plain.parameters[i].value))
          << reduced.parameters[i].name << " after 5 steps";
    std::printf("%s: 4 steps with NCCL over one rank %.3f ms, without "
                "%.3f ms (x%.3f)\n",
                stem.c_str(), seconds[0] * 1e3, seconds[1] * 1e3,
                seconds[0] / std::max(seconds[1], 1e-12));
  }
}

} // namespace
