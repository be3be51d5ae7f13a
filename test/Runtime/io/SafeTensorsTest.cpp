//===- SafeTensorsTest.cpp - safetensors reading and writing --------------===//
//
// Round trips on random data, files written byte for byte from the format's
// specification (so the reader and writer are not only checked against each
// other), and one test per malformation the reader must reject.
//
//===----------------------------------------------------------------------===//

#include "runtime/io/SafeTensors.h"

#include "IoTestSupport.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <csignal>
#include <cstring>
#include <random>
#include <sys/resource.h>

using namespace kiln::rt;
using namespace kiln::rt::testing;
using ::testing::HasSubstr;

namespace kiln::rt {
/// Names test parameters in ctest's listing.
void PrintTo(DType dtype, std::ostream *os) { *os << dtypeName(dtype); }
} // namespace kiln::rt

namespace {

constexpr DType kAllDTypes[] = {
    DType::F32, DType::BF16, DType::F16, DType::F64,    DType::I32,
    DType::I64, DType::U8,   DType::U16, DType::F8E4M3, DType::F8E5M2};

/// A tensor of random non-zero bytes.
Tensor randomTensor(std::string name, DType dtype,
                    std::vector<std::int64_t> shape, std::mt19937 &rng) {
  Tensor tensor{std::move(name), dtype, std::move(shape), {}};
  std::uniform_int_distribution<int> byte(1, 255);
  tensor.data.resize(static_cast<std::size_t>(tensor.numElements()) *
                     dtypeSize(dtype));
  for (std::byte &b : tensor.data)
    b = static_cast<std::byte>(byte(rng));
  return tensor;
}

/// A safetensors file made by hand: the u64 length of `header`, `header`,
/// then `data`.
std::vector<std::byte> safetensorsBytes(std::string_view header,
                                        const std::vector<std::byte> &data) {
  std::vector<std::byte> bytes;
  appendLittleEndian(bytes, header.size(), 8);
  std::vector<std::byte> headerBytes = bytesOf(header);
  bytes.insert(bytes.end(), headerBytes.begin(), headerBytes.end());
  bytes.insert(bytes.end(), data.begin(), data.end());
  return bytes;
}

void expectSameTensors(const std::vector<Tensor> &actual,
                       const std::vector<Tensor> &expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(expected[i].name);
    EXPECT_EQ(actual[i].name, expected[i].name);
    EXPECT_EQ(actual[i].dtype, expected[i].dtype);
    EXPECT_EQ(actual[i].shape, expected[i].shape);
    EXPECT_EQ(actual[i].data, expected[i].data);
  }
}

//===----------------------------------------------------------------------===//
// DTypes
//===----------------------------------------------------------------------===//

TEST(DTypeTest, NamesAndSizesFollowSafetensors) {
  const std::pair<const char *, std::size_t> expected[] = {
      {"F32", 4}, {"BF16", 2}, {"F16", 2}, {"F64", 8},     {"I32", 4},
      {"I64", 8}, {"U8", 1},   {"U16", 2}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  for (std::size_t i = 0; i < std::size(kAllDTypes); ++i) {
    EXPECT_EQ(dtypeName(kAllDTypes[i]), expected[i].first);
    EXPECT_EQ(dtypeSize(kAllDTypes[i]), expected[i].second);
    EXPECT_EQ(parseDType(expected[i].first), kAllDTypes[i]);
  }
  EXPECT_EQ(parseDType("BOOL"), std::nullopt);
  EXPECT_EQ(parseDType("f32"), std::nullopt);
}

TEST(DTypeTest, NumElementsIsTheProductOfTheShape) {
  EXPECT_EQ((Tensor{"s", DType::F32, {}, {}}.numElements()), 1);
  EXPECT_EQ((Tensor{"m", DType::F32, {3, 4, 5}, {}}.numElements()), 60);
  EXPECT_EQ((Tensor{"e", DType::F32, {3, 0}, {}}.numElements()), 0);
}

//===----------------------------------------------------------------------===//
// Round trips
//===----------------------------------------------------------------------===//

class SafeTensorsRoundTrip : public ::testing::TestWithParam<DType> {};

TEST_P(SafeTensorsRoundTrip, KeepsNamesShapesAndBytes) {
  TempDir dir;
  std::mt19937 rng(1234 + static_cast<int>(GetParam()));
  std::vector<Tensor> tensors = {
      randomTensor("model.layers.0.mlp.up_proj.weight", GetParam(), {3, 5},
                   rng),
      randomTensor("model.norm.weight", GetParam(), {7}, rng),
      randomTensor("scalar", GetParam(), {}, rng),
      randomTensor("empty", GetParam(), {2, 0, 3}, rng),
      randomTensor("lm_head.weight", GetParam(), {2, 3, 4}, rng),
  };
  std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                 {"step", "42"}};
  std::string path = dir.file("model.safetensors");
  writeSafeTensors(path, tensors, metadata);

  SafeTensors read = readSafeTensors(path);
  expectSameTensors(read.tensors, tensors);
  EXPECT_EQ(read.metadata, metadata);
  ASSERT_NE(read.find("model.norm.weight"), nullptr);
  EXPECT_EQ(read.find("model.norm.weight")->data, tensors[1].data);
  EXPECT_EQ(read.find("absent"), nullptr);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"model.safetensors"});
}

INSTANTIATE_TEST_SUITE_P(EveryDType, SafeTensorsRoundTrip,
                         ::testing::ValuesIn(kAllDTypes), [](const auto &info) {
                           return std::string(dtypeName(info.param));
                         });

TEST(SafeTensorsTest, MixedDTypesKeepTheGivenOrder) {
  TempDir dir;
  std::mt19937 rng(7);
  // Not sorted by name or dtype: the reference writer reorders, Kiln keeps
  // the order it is given.
  std::vector<Tensor> tensors = {
      randomTensor("z.u8", DType::U8, {3}, rng),
      randomTensor("a.f64", DType::F64, {2, 2}, rng),
      randomTensor("m.bf16", DType::BF16, {5}, rng),
      randomTensor("b.fp8", DType::F8E4M3, {1, 9}, rng),
  };
  std::string path = dir.file("mixed.safetensors");
  writeSafeTensors(path, tensors);
  SafeTensors read = readSafeTensors(path);
  expectSameTensors(read.tensors, tensors);
  EXPECT_TRUE(read.metadata.empty());
}

TEST(SafeTensorsTest, WritingAgainReplacesTheFile) {
  TempDir dir;
  std::mt19937 rng(8);
  std::string path = dir.file("ckpt.safetensors");
  writeSafeTensors(path, {randomTensor("old", DType::F32, {100}, rng)});
  std::vector<Tensor> update = {randomTensor("new", DType::I32, {3}, rng)};
  writeSafeTensors(path, update);
  expectSameTensors(readSafeTensors(path).tensors, update);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"ckpt.safetensors"});
}

//===----------------------------------------------------------------------===//
// The layout, byte for byte
//===----------------------------------------------------------------------===//

TEST(SafeTensorsTest, ReadsAFileWrittenByHandFromTheSpec) {
  TempDir dir;
  // The header lists "norm" first but its data lies second; the padding
  // spaces are those the reference writer adds.
  std::string header =
      R"({"__metadata__":{"format":"pt"},)"
      R"("norm":{"dtype":"F32","shape":[2],"data_offsets":[16,24]},)"
      R"("ids":{"dtype":"I64","shape":[2,1],"data_offsets":[0,16]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::vector<std::byte> data;
  appendLittleEndian(data, static_cast<std::uint64_t>(-2), 8);
  appendLittleEndian(data, 0x0102030405060708ull, 8);
  appendLittleEndian(data, 0x3fc00000u, 4); // 1.5f
  appendLittleEndian(data, 0xc0000000u, 4); // -2.0f
  std::string path = dir.file("hand.safetensors");
  writeBytes(path, safetensorsBytes(header, data));

  SafeTensors read = readSafeTensors(path);
  EXPECT_EQ(read.metadata,
            (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(read.tensors.size(), 2u);
  EXPECT_EQ(read.tensors[0].name, "ids"); // file order
  EXPECT_EQ(read.tensors[1].name, "norm");

  const Tensor *ids = read.find("ids");
  ASSERT_NE(ids, nullptr);
  EXPECT_EQ(ids->dtype, DType::I64);
  EXPECT_EQ(ids->shape, (std::vector<std::int64_t>{2, 1}));
  std::int64_t idValues[2];
  ASSERT_EQ(ids->data.size(), sizeof(idValues));
  std::memcpy(idValues, ids->data.data(), sizeof(idValues));
  EXPECT_EQ(idValues[0], -2);
  EXPECT_EQ(idValues[1], 0x0102030405060708ll);

  const Tensor *norm = read.find("norm");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->dtype, DType::F32);
  EXPECT_EQ(norm->shape, std::vector<std::int64_t>{2});
  float normValues[2];
  ASSERT_EQ(norm->data.size(), sizeof(normValues));
  std::memcpy(normValues, norm->data.data(), sizeof(normValues));
  EXPECT_EQ(normValues[0], 1.5f);
  EXPECT_EQ(normValues[1], -2.0f);
}

TEST(SafeTensorsTest, WritesTheSpecLayoutByteForByte) {
  TempDir dir;
  std::vector<std::byte> bf16 = {std::byte{0xc0}, std::byte{0x3f},
                                 std::byte{0x80}, std::byte{0xbf}};
  std::vector<std::byte> i32 = {std::byte{0x2a}, std::byte{0x01},
                                std::byte{0x02}, std::byte{0x83}};
  std::string path = dir.file("out.safetensors");
  writeSafeTensors(path,
                   {{"w", DType::BF16, {2}, bf16}, {"n", DType::I32, {}, i32}},
                   {{"format", "pt"}});

  // The reference writer's header: compact JSON, metadata first, tensors in
  // data order, keys dtype/shape/data_offsets, spaces up to a multiple of 8.
  std::string header =
      R"({"__metadata__":{"format":"pt"},)"
      R"("w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},)"
      R"("n":{"dtype":"I32","shape":[],"data_offsets":[4,8]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  ASSERT_EQ(header.size() % 8, 0u);
  std::vector<std::byte> data = bf16;
  data.insert(data.end(), i32.begin(), i32.end());
  EXPECT_EQ(readBytes(path), safetensorsBytes(header, data));
}

//===----------------------------------------------------------------------===//
// Malformed files
//===----------------------------------------------------------------------===//

/// A header (written as the file's JSON, with a data section of
/// `dataBytes` non-zero bytes) and a phrase the error must contain.
struct MalformedHeader {
  const char *name;
  const char *header;
  std::size_t dataBytes;
  const char *problem;
};

void PrintTo(const MalformedHeader &c, std::ostream *os) { *os << c.name; }

class SafeTensorsRejects : public ::testing::TestWithParam<MalformedHeader> {};

TEST_P(SafeTensorsRejects, NamingTheFileAndTheProblem) {
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  std::vector<std::byte> data(GetParam().dataBytes, std::byte{0x5a});
  writeBytes(path, safetensorsBytes(GetParam().header, data));
  std::string message = errorMessage([&] { readSafeTensors(path); });
  EXPECT_THAT(message, HasSubstr(path + ": "));
  EXPECT_THAT(message, HasSubstr(GetParam().problem));
}

const MalformedHeader kMalformedHeaders[] = {
    {"NotJson", R"({"a": {"dtype": "F32",)", 0, "header is not valid JSON"},
    {"Empty", "", 0, "header is not valid JSON"},
    {"NotAnObject", "[1, 2]", 0, "header is not a JSON object (found array)"},
    {"EntryNotAnObject", R"({"a": 3})", 0,
     "tensor 'a': entry is not a JSON object (found 3)"},
    {"MissingDType", R"({"a": {"shape": [1], "data_offsets": [0, 4]}})", 4,
     "tensor 'a': missing 'dtype'"},
    {"DTypeNotAString",
     R"({"a": {"dtype": 4, "shape": [1], "data_offsets": [0, 4]}})", 4,
     "tensor 'a': 'dtype' is not a string (found 4)"},
    {"UnknownDType",
     R"({"a": {"dtype": "BOOL", "shape": [1], "data_offsets": [0, 1]}})", 1,
     "tensor 'a': unsupported dtype \"BOOL\" (supported: F32, BF16"},
    {"MissingShape", R"({"a": {"dtype": "F32", "data_offsets": [0, 4]}})", 4,
     "tensor 'a': missing 'shape'"},
    {"ShapeNotAnArray",
     R"({"a": {"dtype": "F32", "shape": 4, "data_offsets": [0, 4]}})", 4,
     "tensor 'a': 'shape' is not an array of integers (found 4)"},
    {"ShapeOfFloats",
     R"({"a": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}})", 4,
     "tensor 'a': 'shape' is not an array of integers (found [1.0])"},
    {"NegativeDimension",
     R"({"a": {"dtype": "F32", "shape": [2, -3], "data_offsets": [0, 4]}})", 4,
     "tensor 'a': negative dimension -3 in shape [2, -3]"},
    {"MissingOffsets", R"({"a": {"dtype": "F32", "shape": [1]}})", 4,
     "tensor 'a': missing 'data_offsets'"},
    {"OffsetsNotAPair",
     R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})", 8,
     "tensor 'a': 'data_offsets' is not a pair of integers [begin, end] "
     "(found [0,4,8])"},
    {"OffsetsOfStrings",
     R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": ["0", "4"]}})", 4,
     "tensor 'a': 'data_offsets' is not a pair of integers"},
    {"NegativeOffsets",
     R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", 4,
     "tensor 'a': negative 'data_offsets' [-4,0]"},
    {"OffsetsOutOfOrder",
     R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", 8,
     "tensor 'a': 'data_offsets' [8, 4] are out of order (begin after end)"},
    {"OffsetsBeyondTheData",
     R"({"model.norm.weight": {"dtype": "F32", "shape": [75], )"
     R"("data_offsets": [100, 400]}})",
     256,
     "tensor 'model.norm.weight': data range [100, 400) exceeds the data "
     "section (256 bytes)"},
    {"SizeNotMatchingShape",
     R"({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})", 12,
     "tensor 'a': data range [0, 12) holds 12 bytes but shape [2, 2] of F32 "
     "needs 16"},
    {"Overlapping",
     R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, )"
     R"("b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})",
     24, "tensor 'b': data range [8, 24) overlaps tensor 'a' [0, 16)"},
    {"OverlappingAcrossAnEmptyTensor",
     R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}, )"
     R"("e": {"dtype": "U8", "shape": [0], "data_offsets": [4, 4]}, )"
     R"("b": {"dtype": "U8", "shape": [2], "data_offsets": [6, 8]}})",
     8, "tensor 'b': data range [6, 8) overlaps tensor 'a' [0, 8)"},
    {"RepeatedName",
     R"({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, )"
     R"("a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}})",
     2, "tensor 'a' appears more than once in the header"},
    {"RepeatedMetadata",
     R"({"__metadata__": {"a": "1"}, "__metadata__": {"b": "2"}})", 0,
     "'__metadata__' appears more than once in the header"},
    {"MetadataNotAnObject", R"({"__metadata__": [1]})", 0,
     "'__metadata__' is not an object of strings (found [1])"},
    {"MetadataValueNotAString", R"({"__metadata__": {"step": 42}})", 0,
     "'__metadata__': value of 'step' is not a string (found 42)"},
};

INSTANTIATE_TEST_SUITE_P(MalformedHeaders, SafeTensorsRejects,
                         ::testing::ValuesIn(kMalformedHeaders),
                         [](const auto &info) {
                           return std::string(info.param.name);
                         });

TEST(SafeTensorsTest, RejectsAFileTooShortForTheHeaderLength) {
  TempDir dir;
  std::string path = dir.file("short.safetensors");
  writeBytes(path, {std::byte{1}, std::byte{2}, std::byte{3}});
  EXPECT_EQ(errorMessage([&] { readSafeTensors(path); }),
            path + ": file is 3 bytes, too short for the 8-byte header "
                   "length of a safetensors file");
}

TEST(SafeTensorsTest, RejectsAHeaderLengthBeyondTheFile) {
  TempDir dir;
  std::string path = dir.file("cut.safetensors");
  std::vector<std::byte> bytes;
  appendLittleEndian(bytes, 1000, 8);
  std::vector<std::byte> header = bytesOf("{}  ");
  bytes.insert(bytes.end(), header.begin(), header.end());
  writeBytes(path, bytes);
  EXPECT_EQ(errorMessage([&] { readSafeTensors(path); }),
            path + ": header length 1000 exceeds the file (4 bytes after the "
                   "8-byte length)");
}

TEST(SafeTensorsTest, RejectsAMissingFile) {
  TempDir dir;
  std::string path = dir.file("absent.safetensors");
  EXPECT_EQ(errorMessage([&] { readSafeTensors(path); }),
            path + ": cannot open: No such file or directory");
}

TEST(SafeTensorsTest, ReadsAnEmptyHeader) {
  TempDir dir;
  std::string path = dir.file("empty.safetensors");
  writeBytes(path, safetensorsBytes("{}      ", {}));
  SafeTensors read = readSafeTensors(path);
  EXPECT_TRUE(read.tensors.empty());
  EXPECT_TRUE(read.metadata.empty());
}

//===----------------------------------------------------------------------===//
// Invalid tensors to write
//===----------------------------------------------------------------------===//

TEST(SafeTensorsTest, WriterRejectsInvalidTensorsAndWritesNothing) {
  TempDir dir;
  std::string path = dir.file("out.safetensors");
  std::vector<std::byte> four(4, std::byte{0x11});
  auto writeError = [&](std::vector<Tensor> tensors) {
    return errorMessage([&] { writeSafeTensors(path, tensors); });
  };
  EXPECT_EQ(writeError({{"w", DType::F32, {2}, four}}),
            path + ": tensor 'w': holds 4 bytes of data but shape [2] of F32 "
                   "needs 8");
  EXPECT_EQ(writeError({{"w", DType::U8, {-4}, four}}),
            path + ": tensor 'w': negative dimension -4 in shape [-4]");
  EXPECT_EQ(
      writeError({{"w", DType::F32, {1}, four}, {"w", DType::F32, {1}, four}}),
      path + ": tensor 'w': name given to more than one tensor");
  EXPECT_EQ(writeError({{"__metadata__", DType::F32, {1}, four}}),
            path + ": tensor '__metadata__': the name is reserved for "
                   "metadata");
  EXPECT_THAT(writeError({{"bad\xff", DType::F32, {1}, four}}),
              HasSubstr("the name is not valid UTF-8"));
  EXPECT_TRUE(dir.entries().empty());
}

//===----------------------------------------------------------------------===//
// Atomicity
//===----------------------------------------------------------------------===//

/// Caps the size of files this process writes for the object's lifetime,
/// with SIGXFSZ ignored, so that writes past the cap fail with EFBIG: a
/// write that fails half way, even for root.
class FileSizeCap {
public:
  explicit FileSizeCap(rlim_t bytes) {
    oldHandler_ = std::signal(SIGXFSZ, SIG_IGN);
    ::getrlimit(RLIMIT_FSIZE, &oldLimit_);
    rlimit capped = oldLimit_;
    capped.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &capped);
  }
  ~FileSizeCap() {
    ::setrlimit(RLIMIT_FSIZE, &oldLimit_);
    std::signal(SIGXFSZ, oldHandler_);
  }

private:
  rlimit oldLimit_;
  void (*oldHandler_)(int);
};

TEST(SafeTensorsTest, FailedWriteKeepsTheOldFileAndLeavesNoTemporary) {
  TempDir dir;
  std::mt19937 rng(9);
  std::string path = dir.file("ckpt.safetensors");
  std::vector<Tensor> old = {randomTensor("w", DType::F32, {16}, rng)};
  writeSafeTensors(path, old);
  std::vector<std::byte> oldBytes = readBytes(path);

  std::string message;
  {
    FileSizeCap cap(4096);
    message = errorMessage([&] {
      writeSafeTensors(path, {randomTensor("w", DType::F32, {4096}, rng)});
    });
  }
  EXPECT_THAT(message, HasSubstr(path + ": cannot write to '" + path));
  EXPECT_THAT(message, HasSubstr("File too large"));
  EXPECT_EQ(readBytes(path), oldBytes);
  expectSameTensors(readSafeTensors(path).tensors, old);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"ckpt.safetensors"});
}

TEST(SafeTensorsTest, WriteIntoAMissingDirectoryFailsNamingThePath) {
  TempDir dir;
  std::string path = dir.file("no-such-dir/ckpt.safetensors");
  std::string message = errorMessage([&] {
    writeSafeTensors(path, {{"w", DType::U8, {1}, {std::byte{7}}}});
  });
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_THAT(message, HasSubstr("No such file or directory"));
  EXPECT_TRUE(dir.entries().empty());
}

} // namespace
