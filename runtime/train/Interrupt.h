//===- Interrupt.h - Stopping a run cleanly on SIGINT / SIGTERM -*- C++ -*-===//
//
// Ctrl-C sends SIGINT; schedulers (Slurm, Kubernetes) send SIGTERM some
// time before they kill a job. While an InterruptGuard lives, the first of
// these signals only asks the training loop to stop: it finishes the step,
// saves a checkpoint and exits with 128 + the signal (130, 143). A second
// signal kills the process at once, as the default action would; files are
// written atomically, so nothing is left half-written either way.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_TRAIN_INTERRUPT_H
#define KILN_RUNTIME_TRAIN_INTERRUPT_H

namespace kiln::rt {

/// Catches SIGINT and SIGTERM for its lifetime (one at a time).
class InterruptGuard {
public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard &) = delete;
  InterruptGuard &operator=(const InterruptGuard &) = delete;

  /// The signal received, or 0.
  static int pending();
  /// "SIGINT" or "SIGTERM".
  static const char *name(int signal);
};

} // namespace kiln::rt

#endif // KILN_RUNTIME_TRAIN_INTERRUPT_H
