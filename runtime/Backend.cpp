//===- Backend.cpp - What runs a plan: the step loop ----------------------===//

#include "runtime/Backend.h"

#include "runtime/Error.h"

#include <fmt/format.h>

namespace kiln::rt {

void Backend::run(const std::function<void(char)> &beforeChunk, Steps which) {
  const Plan &planned = plan();
  char current = 0;
  for (std::size_t i = 0; i < planned.steps.size(); ++i) {
    const Step &step = planned.steps[i];
    bool micro = which == Steps::MicroStep || which == Steps::LastMicroStep;
    if ((micro && step.chunk == 'O') ||
        (which == Steps::Optimizer && step.chunk != 'O') ||
        (which == Steps::MicroStep && step.runsInLastMicroStepOnly()))
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
