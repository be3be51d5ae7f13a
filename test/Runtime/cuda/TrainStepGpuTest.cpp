//===- TrainStepGpuTest.cpp - Whole training steps on the GPU vs the host -===//
//
// For every plan in $KILN_GPU_TEST_PLANS (default: the plans the build
// compiled into <build>/test/gpu-plans): one training step on the cuda
// backend against the host backend from the same weights and batch (loss,
// every gradient, every updated weight), then a short run whose losses must
// track the host's. Skips, with the reason, without a GPU or without plans.
//
//===----------------------------------------------------------------------===//

#include "runtime/Backend.h"
#include "runtime/Error.h"
#include "runtime/cuda/CudaBackend.h"
#include "runtime/cuda/Device.h"
#include "runtime/host/HostBackend.h"
#include "runtime/train/Random.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using namespace kiln::rt;

namespace {

std::vector<fs::path> planFiles() {
  const char *env = std::getenv("KILN_GPU_TEST_PLANS");
  fs::path dir = env ? fs::path(env) : fs::path(KILN_TEST_PLAN_DIR);
  std::vector<fs::path> plans;
  if (fs::is_directory(dir))
    for (const auto &entry : fs::directory_iterator(dir))
      if (entry.path().extension() == ".json")
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

} // namespace
