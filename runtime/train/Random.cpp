//===- Random.cpp - A portable generator with serializable state ----------===//
//
// This file is compiled with -ffp-contract=off (runtime/CMakeLists.txt): a
// fused multiply-add rounds once where the plain expression rounds twice, and
// normal draws must not depend on whether the target has one.
//
//===----------------------------------------------------------------------===//

#include "runtime/train/Random.h"

#include "runtime/Error.h"

#include <fmt/format.h>

#include <bit>
#include <charconv>
#include <cmath>
#include <limits>
#include <vector>

namespace kiln::rt {

namespace {

/// The tag that starts every state string; a different generator (or a
/// different use of its words) must get a different tag.
constexpr std::string_view kStateTag = "xoshiro256**";

/// Hex digits of one state word.
constexpr std::size_t kWordDigits = 16;

/// ln 2 split in two (fdlibm's constants): kLn2Hi has its low 32 bits zero,
/// so `exponent * kLn2Hi` is exact for any double's exponent.
constexpr double kLn2Hi = 6.93147180369123816490e-01;
constexpr double kLn2Lo = 1.90821492927058770002e-10;

/// Coefficients 1/(2k+1) of the series log(m) = 2z (1 + z^2/3 + z^4/5 + ...)
/// with z = (m-1)/(m+1). For m in [sqrt(1/2), sqrt(2)), z^2 < 0.0295, and
/// twelve terms leave a remainder below 2^-55 of the sum.
constexpr double kAtanhSeries[] = {1.0 / 1,  1.0 / 3,  1.0 / 5,  1.0 / 7,
                                   1.0 / 9,  1.0 / 11, 1.0 / 13, 1.0 / 15,
                                   1.0 / 17, 1.0 / 19, 1.0 / 21, 1.0 / 23};

/// One step of splitmix64 (Vigna), which spreads a seed over the state.
std::uint64_t splitmix64(std::uint64_t &x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// Parses one state word of exactly kWordDigits hex digits.
bool parseWord(std::string_view token, std::uint64_t &value) {
  if (token.size() != kWordDigits)
    return false;
  auto [end, ec] =
      std::from_chars(token.data(), token.data() + token.size(), value, 16);
  return ec == std::errc() && end == token.data() + token.size();
}

/// The whitespace-separated tokens of `text`.
std::vector<std::string_view> splitWords(std::string_view text) {
  std::vector<std::string_view> tokens;
  std::size_t pos = 0;
  while (true) {
    pos = text.find_first_not_of(" \t\n\r", pos);
    if (pos == std::string_view::npos)
      return tokens;
    std::size_t end = text.find_first_of(" \t\n\r", pos);
    if (end == std::string_view::npos)
      end = text.size();
    tokens.push_back(text.substr(pos, end - pos));
    pos = end;
  }
}

} // namespace

double portableLog(double x) {
  if (std::isnan(x) || x < 0)
    return std::numeric_limits<double>::quiet_NaN();
  if (x == 0)
    return -std::numeric_limits<double>::infinity();
  if (std::isinf(x))
    return x;
  int exponent = 0;
  double m = std::frexp(x, &exponent); // exact: x = m * 2^exponent
  if (m < 0.70710678118654752440) {    // sqrt(1/2)
    m *= 2;
    --exponent;
  }
  double z = (m - 1) / (m + 1);
  double z2 = z * z;
  double series = 0;
  for (auto it = std::rbegin(kAtanhSeries); it != std::rend(kAtanhSeries); ++it)
    series = series * z2 + *it;
  double e = exponent;
  return e * kLn2Hi + (e * kLn2Lo + 2 * z * series);
}

Rng::Rng(std::uint64_t seed) {
  for (std::uint64_t &word : words_)
    word = splitmix64(seed);
}

std::uint64_t Rng::next() {
  std::uint64_t result = std::rotl(words_[1] * 5, 7) * 9;
  std::uint64_t shifted = words_[1] << 17;
  words_[2] ^= words_[0];
  words_[3] ^= words_[1];
  words_[1] ^= words_[2];
  words_[0] ^= words_[3];
  words_[2] ^= shifted;
  words_[3] = std::rotl(words_[3], 45);
  return result;
}

double Rng::uniform() {
  // The top 53 bits, scaled by 2^-53: exactly representable, below 1.
  return static_cast<double>(next() >> 11) * 0x1.0p-53;
}

double Rng::normal() {
  if (hasSpareNormal_) {
    double spare = spareNormal_;
    hasSpareNormal_ = false;
    spareNormal_ = 0; // so that equal states compare equal
    return spare;
  }
  // Marsaglia's polar method: a uniform point in the unit disc (not its
  // centre) gives two independent normals with one logarithm and no trig.
  double u, v, s;
  do {
    u = 2 * uniform() - 1;
    v = 2 * uniform() - 1;
    s = u * u + v * v;
  } while (s >= 1 || s == 0);
  double factor = std::sqrt(-2 * portableLog(s) / s);
  spareNormal_ = v * factor;
  hasSpareNormal_ = true;
  return u * factor;
}

std::string Rng::state() const {
  std::string text =
      fmt::format("{} {:016x} {:016x} {:016x} {:016x}", kStateTag, words_[0],
                  words_[1], words_[2], words_[3]);
  if (hasSpareNormal_)
    text += fmt::format(" {:016x}", std::bit_cast<std::uint64_t>(spareNormal_));
  return text;
}

Rng Rng::fromState(std::string_view text) {
  // Long garbage is cut in the message; a state is under 100 characters.
  auto fail = [&](std::string_view reason) -> Rng {
    std::string shown(text.substr(0, 120));
    if (shown.size() < text.size())
      shown += "...";
    throw Error(fmt::format("malformed random-generator state '{}': {}", shown,
                            reason));
  };
  std::vector<std::string_view> tokens = splitWords(text);
  if (tokens.empty() || tokens[0] != kStateTag)
    return fail(fmt::format("expected it to start with '{}'", kStateTag));
  if (tokens.size() != 5 && tokens.size() != 6)
    return fail(fmt::format("expected 4 state words and an optional kept "
                            "normal draw, got {} words",
                            tokens.size() - 1));
  Rng rng;
  for (std::size_t i = 0; i < 4; ++i)
    if (!parseWord(tokens[i + 1], rng.words_[i]))
      return fail(fmt::format("word {} ('{}') is not {} hex digits", i + 1,
                              tokens[i + 1], kWordDigits));
  if (rng.words_ == std::array<std::uint64_t, 4>{})
    return fail("the state words are all zero, which xoshiro256** never "
                "leaves");
  if (tokens.size() == 6) {
    std::uint64_t bits = 0;
    if (!parseWord(tokens[5], bits))
      return fail(fmt::format("the kept normal draw ('{}') is not {} hex "
                              "digits",
                              tokens[5], kWordDigits));
    double spare = std::bit_cast<double>(bits);
    if (!std::isfinite(spare))
      return fail(
          fmt::format("the kept normal draw ({}) is not finite", spare));
    rng.hasSpareNormal_ = true;
    rng.spareNormal_ = spare;
  }
  return rng;
}

void fillNormal(Rng &rng, float *out, std::int64_t n, double mean, double std) {
  if (n < 0)
    throw Error(fmt::format("fillNormal: negative count {}", n));
  for (std::int64_t i = 0; i < n; ++i)
    out[i] = static_cast<float>(mean + std * rng.normal());
}

} // namespace kiln::rt
