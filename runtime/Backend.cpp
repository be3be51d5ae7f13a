//===- Backend.cpp - What runs a plan: the step loop ----------------------===//

#include "runtime/Backend.h"

#include "runtime/Error.h"

#include <fmt/format.h>

#include <algorithm>

namespace kiln::rt {

namespace {

/// Whether `step` computes the value `loss`.
bool computes(const Step &step, int64_t loss) {
  return std::find(step.outputs.begin(), step.outputs.end(), loss) !=
         step.outputs.end();
}

} // namespace

void Backend::run(const std::function<void(char)> &beforeChunk, Steps which) {
  const Plan &planned = plan();
  const bool evaluate = which == Steps::Evaluate;
  int64_t loss = -1;
  if (evaluate) {
    auto it = planned.outputs.find(plan::output::kLoss);
    if (it == planned.outputs.end())
      throw Error("the plan has no loss output to evaluate");
    loss = it->second;
  }
  // (Reset however the run ends: a step's error leaves the backend usable.)
  struct Evaluating {
    bool &flag;
    Evaluating(bool &flag, bool on) : flag(flag) { flag = on; }
    ~Evaluating() { flag = false; }
  } evaluating(evaluating_, evaluate);
  char current = 0;
  for (std::size_t i = 0; i < planned.steps.size(); ++i) {
    const Step &step = planned.steps[i];
    bool micro = which == Steps::MicroStep || which == Steps::LastMicroStep;
    if ((micro && step.chunk == 'O') ||
        (which == Steps::Optimizer && step.chunk != 'O') ||
        (which == Steps::MicroStep && step.runsInLastMicroStepOnly()) ||
        (evaluate && step.chunk != 'F' && !computes(step, loss)))
      continue;
    if (beforeChunk && step.chunk != current)
      beforeChunk(step.chunk);
    current = step.chunk;
    try {
      runStep(i, step);
    } catch (const Error &error) {
      throw Error(
          fmt::format("step {} ({}): {}", i, step.kernel(), error.what()));
    }
  }
  finishRun();
}

} // namespace kiln::rt
