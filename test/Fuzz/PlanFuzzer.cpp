//===- PlanFuzzer.cpp - Fuzzing the plan loader ---------------------------===//
//
// kiln-run loads plans that may have been edited, truncated or written by
// another version. Any text is either a plan whose references all resolve
// or is refused with kiln::rt::Error; anything else is a bug.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/plan/Plan.h"

#include <cstdlib>

using namespace kiln::rt;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data,
                                      std::size_t size) {
  std::string text(reinterpret_cast<const char *>(data), size);
  Plan plan;
  try {
    plan = Plan::parse(text, "fuzz.json");
  } catch (const Error &) {
    return 0; // refused, as it should be
  }
  auto known = [&](int64_t id) {
    return id >= 0 && id < static_cast<int64_t>(plan.values.size());
  };
  for (const Step &step : plan.steps) {
    for (int64_t id : step.inputs)
      if (!known(id))
        std::abort();
    for (int64_t id : step.outputs)
      if (!known(id))
        std::abort();
  }
  for (const Parameter &param : plan.parameters)
    if (!known(param.value) || !known(param.grad))
      std::abort();
  return 0;
}
