//===- Random.h - A portable generator with serializable state -*- C++ -*-===//
//
// Parameter initialization and anything else random in a training run draws
// from Rng, so that a run is reproducible from its seed on every machine and
// a resumed run continues the same stream from a checkpoint. The standard
// library's distributions are not used: their output differs between
// implementations. Rng is xoshiro256** (Blackman and Vigna) seeded through
// splitmix64; normal() is Marsaglia's polar method over a logarithm built
// from IEEE arithmetic alone, so its results are bit-identical everywhere.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_TRAIN_RANDOM_H
#define KILN_RUNTIME_TRAIN_RANDOM_H

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace kiln::rt {

/// A fast pseudo-random generator whose whole state is a short string.
class Rng {
public:
  /// A generator whose state is derived from `seed` by splitmix64; every
  /// seed, zero included, gives a valid state.
  explicit Rng(std::uint64_t seed);

  /// The next 64 random bits.
  std::uint64_t next();

  /// A uniform double in [0, 1), with 53 random bits.
  double uniform();

  /// A draw from the standard normal distribution. Draws come in pairs; the
  /// second of a pair is kept for the next call (and is part of state()).
  double normal();

  /// The complete state as text: "xoshiro256**" and four 16-digit hex words,
  /// then, while a normal draw is kept for the next call, a fifth word with
  /// its bits. Rng::fromState(rng.state()) continues exactly as rng does.
  std::string state() const;

  /// The generator that state() described. Throws Error if `text` is not a
  /// well-formed state (wrong tag, word count or digits, an all-zero state,
  /// a kept normal draw that is not finite).
  static Rng fromState(std::string_view text);

  bool operator==(const Rng &) const = default;

private:
  Rng() = default;

  std::array<std::uint64_t, 4> words_{};
  bool hasSpareNormal_ = false;
  double spareNormal_ = 0.0;
};

/// Fills out[0, n) with normal draws of the given mean and standard
/// deviation (n calls of rng.normal(), scaled and rounded to float).
void fillNormal(Rng &rng, float *out, std::int64_t n, double mean, double std);

/// The natural logarithm of a positive finite `x`, computed with IEEE
/// arithmetic only (no libm), so it gives the same bits on every machine.
/// Accurate to a few ulp; used by Rng::normal() and exposed for its tests.
double portableLog(double x);

} // namespace kiln::rt

#endif // KILN_RUNTIME_TRAIN_RANDOM_H
