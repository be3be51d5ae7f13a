//===- Interrupt.cpp - Stopping a run cleanly on SIGINT / SIGTERM ---------===//

#include "runtime/train/Interrupt.h"

#include <csignal>
#include <cstring>
#include <unistd.h>

namespace kiln::rt {

namespace {

volatile std::sig_atomic_t pendingSignal = 0;
struct sigaction previousInt, previousTerm;

void writeMessage(const char *text) {
  // Only async-signal-safe calls here.
  ssize_t ignored = ::write(STDERR_FILENO, text, std::strlen(text));
  (void)ignored;
}

void onSignal(int signal) {
  if (pendingSignal != 0) {
    // The second signal: die of it, as if it had never been caught.
    writeMessage("\nkiln: second signal: stopping now, without saving\n");
    std::signal(signal, SIG_DFL);
    std::raise(signal);
    return;
  }
  pendingSignal = signal;
  writeMessage(signal == SIGTERM
                   ? "\nkiln: SIGTERM received: finishing this step and "
                     "saving a checkpoint (send it again to stop at once)\n"
                   : "\nkiln: interrupted: finishing this step and saving a "
                     "checkpoint (press Ctrl-C again to stop at once)\n");
}

} // namespace

InterruptGuard::InterruptGuard() {
  pendingSignal = 0;
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = onSignal;
  sigemptyset(&action.sa_mask);
  // SA_RESTART: a signal must not make the step's reads or writes fail.
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, &previousInt);
  sigaction(SIGTERM, &action, &previousTerm);
}

InterruptGuard::~InterruptGuard() {
  sigaction(SIGINT, &previousInt, nullptr);
  sigaction(SIGTERM, &previousTerm, nullptr);
}

int InterruptGuard::pending() { return pendingSignal; }

const char *InterruptGuard::name(int signal) {
  return signal == SIGTERM  ? "SIGTERM"
         : signal == SIGINT ? "SIGINT"
                            : "a signal";
}

} // namespace kiln::rt
