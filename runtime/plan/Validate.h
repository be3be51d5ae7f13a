//===- Validate.h - Checks of a parsed plan's steps -------------*- C++ -*-===//
//
// What Plan::parse checks once the plan is read: every step against its
// operands (arities, dtypes, shapes, attributes, aliasing, fused bodies),
// and for Plan::load that the program is a training step. Internal to
// runtime/plan.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_PLAN_VALIDATE_H
#define KILN_RUNTIME_PLAN_VALIDATE_H

#include "runtime/plan/Plan.h"

#include <string>

namespace kiln::rt {

/// Throws Error naming `source`, the step index, kernel and field of the
/// first step that its operands contradict.
void validateSteps(const Plan &plan, const std::string &source);

/// The checks of one fused step's body; errors start with `prefix`
/// ("plan.json: step 4 (fused)").
void validateFusedStep(const Plan &plan, const Step &step,
                       const std::string &prefix);

/// Throws Error unless `plan` is a runnable training step: at least one
/// step, an f32 `loss` output of one element that a step writes and that
/// overlaps no parameter or optimizer state.
void checkTrainable(const Plan &plan, const std::string &source);

} // namespace kiln::rt

#endif // KILN_RUNTIME_PLAN_VALIDATE_H
