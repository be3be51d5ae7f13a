//===- TrainerStateFuzzer.cpp - Fuzzing the trainer state reader ----------===//
//
// Reads the input as a checkpoint's trainer_state.json. A malformed state
// must be refused with kiln::rt::Error naming the file and field; anything
// else is a bug. An accepted state must write back to text that reads as
// the same state.
//
//===----------------------------------------------------------------------===//

#include "FuzzInput.h"

#include "runtime/Error.h"
#include "runtime/train/Checkpoint.h"

#include <cstdlib>

using namespace kiln::rt;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data,
                                      std::size_t size) {
  const std::string &path = kiln::fuzz::writeInput(data, size);
  TrainerState state;
  try {
    state = readTrainerState(path);
  } catch (const Error &) {
    return 0;
  }
  if (state.step < 1 || state.batch < 1 || state.seqLen < 1 ||
      (state.settings && state.step > state.settings->steps))
    std::abort();
  if (state.format < 2)
    return 0;
  std::string text = trainerStateJson(state);
  const std::string &again = kiln::fuzz::writeInput(
      reinterpret_cast<const std::uint8_t *>(text.data()), text.size());
  TrainerState reread = readTrainerState(again);
  if (reread.step != state.step || reread.runId != state.runId ||
      reread.settings != state.settings || reread.checksums != state.checksums)
    std::abort();
  return 0;
}
