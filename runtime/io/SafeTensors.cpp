//===- SafeTensors.cpp - Hugging Face safetensors files -------------------===//

#include "runtime/io/SafeTensors.h"

#include "runtime/Error.h"
#include "runtime/io/AtomicFile.h"
#include "runtime/io/InputFile.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <limits>
#include <set>

namespace kiln::rt {

namespace {

using Json = nlohmann::ordered_json;

/// The header length that starts every safetensors file: a u64.
constexpr std::size_t kLengthBytes = 8;

/// The reference implementation pads the JSON header with spaces to a
/// multiple of this, so that the data section starts aligned.
constexpr std::size_t kHeaderAlignment = 8;

/// The header key that holds the string-to-string metadata.
constexpr std::string_view kMetadataKey = "__metadata__";

struct DTypeInfo {
  DType dtype;
  std::string_view name;
  std::size_t size;
};

constexpr std::array<DTypeInfo, 10> kDTypes = {{
    {DType::F32, "F32", 4},
    {DType::BF16, "BF16", 2},
    {DType::F16, "F16", 2},
    {DType::F64, "F64", 8},
    {DType::I32, "I32", 4},
    {DType::I64, "I64", 8},
    {DType::U8, "U8", 1},
    {DType::U16, "U16", 2},
    {DType::F8E4M3, "F8_E4M3", 1},
    {DType::F8E5M2, "F8_E5M2", 1},
}};

const DTypeInfo &infoOf(DType dtype) {
  for (const DTypeInfo &info : kDTypes)
    if (info.dtype == dtype)
      return info;
  throw Error(fmt::format("invalid DType value {}", static_cast<int>(dtype)));
}

/// "F32, BF16, ...", for messages about unsupported dtypes.
std::string supportedDTypeNames() {
  std::vector<std::string_view> names;
  for (const DTypeInfo &info : kDTypes)
    names.push_back(info.name);
  return fmt::format("{}", fmt::join(names, ", "));
}

std::string formatShape(const std::vector<std::int64_t> &shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

/// The number of bytes a tensor of `shape` and `dtype` takes, or nothing if
/// that does not fit in 64 bits. Dimensions must be non-negative.
std::optional<std::uint64_t> byteSizeOf(const std::vector<std::int64_t> &shape,
                                        DType dtype) {
  std::uint64_t bytes = dtypeSize(dtype);
  for (std::int64_t dim : shape) {
    auto d = static_cast<std::uint64_t>(dim);
    if (d != 0 && bytes > std::numeric_limits<std::uint64_t>::max() / d)
      return std::nullopt;
    bytes *= d;
  }
  return bytes;
}

/// A tensor's header entry, validated, before its data is read.
struct Entry {
  std::string name;
  DType dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin;
  std::uint64_t end;
};

/// Validates the header entry `value` of tensor `name`; `where` prefixes
/// every message ("file: tensor 'name'").
Entry parseEntry(const std::string &where, const std::string &name,
                 const Json &value, std::uint64_t dataSize) {
  if (!value.is_object())
    throw Error(fmt::format("{}: entry is not a JSON object (found {})", where,
                            value.dump()));
  auto field = [&](const char *key) -> const Json & {
    auto it = value.find(key);
    if (it == value.end())
      throw Error(fmt::format("{}: missing '{}'", where, key));
    return *it;
  };

  Entry entry;
  entry.name = name;

  const Json &dtype = field("dtype");
  if (!dtype.is_string())
    throw Error(fmt::format("{}: 'dtype' is not a string (found {})", where,
                            dtype.dump()));
  std::optional<DType> parsed = parseDType(dtype.get<std::string>());
  if (!parsed)
    throw Error(fmt::format("{}: unsupported dtype {} (supported: {})", where,
                            dtype.dump(), supportedDTypeNames()));
  entry.dtype = *parsed;

  const Json &shape = field("shape");
  if (!shape.is_array() ||
      !std::all_of(shape.begin(), shape.end(),
                   [](const Json &d) { return d.is_number_integer(); }))
    throw Error(fmt::format("{}: 'shape' is not an array of integers (found "
                            "{})",
                            where, shape.dump()));
  for (const Json &dim : shape) {
    if (dim.is_number_unsigned() &&
        dim.get<std::uint64_t>() >
            static_cast<std::uint64_t>(std::numeric_limits<int64_t>::max()))
      throw Error(fmt::format("{}: dimension {} in shape {} is too large",
                              where, dim.dump(), shape.dump()));
    entry.shape.push_back(dim.get<std::int64_t>());
  }
  for (std::int64_t dim : entry.shape)
    if (dim < 0)
      throw Error(fmt::format("{}: negative dimension {} in shape {}", where,
                              dim, formatShape(entry.shape)));

  const Json &offsets = field("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2 ||
      !offsets[0].is_number_integer() || !offsets[1].is_number_integer())
    throw Error(fmt::format("{}: 'data_offsets' is not a pair of integers "
                            "[begin, end] (found {})",
                            where, offsets.dump()));
  if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
    throw Error(
        fmt::format("{}: negative 'data_offsets' {}", where, offsets.dump()));
  entry.begin = offsets[0].get<std::uint64_t>();
  entry.end = offsets[1].get<std::uint64_t>();
  if (entry.begin > entry.end)
    throw Error(fmt::format("{}: 'data_offsets' [{}, {}] are out of order "
                            "(begin after end)",
                            where, entry.begin, entry.end));
  if (entry.end > dataSize)
    throw Error(fmt::format("{}: data range [{}, {}) exceeds the data section "
                            "({} bytes)",
                            where, entry.begin, entry.end, dataSize));

  std::optional<std::uint64_t> expected = byteSizeOf(entry.shape, entry.dtype);
  if (!expected)
    throw Error(fmt::format("{}: shape {} of {} is too large", where,
                            formatShape(entry.shape), dtypeName(entry.dtype)));
  if (entry.end - entry.begin != *expected)
    throw Error(fmt::format("{}: data range [{}, {}) holds {} bytes but shape "
                            "{} of {} needs {}",
                            where, entry.begin, entry.end,
                            entry.end - entry.begin, formatShape(entry.shape),
                            dtypeName(entry.dtype), *expected));
  return entry;
}

std::map<std::string, std::string> parseMetadata(const std::string &path,
                                                 const Json &value) {
  if (!value.is_object())
    throw Error(fmt::format("{}: '{}' is not an object of strings (found {})",
                            path, kMetadataKey, value.dump()));
  std::map<std::string, std::string> metadata;
  for (const auto &[key, item] : value.items()) {
    if (!item.is_string())
      throw Error(fmt::format("{}: '{}': value of '{}' is not a string "
                              "(found {})",
                              path, kMetadataKey, key, item.dump()));
    metadata[key] = item.get<std::string>();
  }
  return metadata;
}

/// nlohmann's message without its "[json.exception.parse_error.101] " tag.
std::string_view withoutJsonTag(std::string_view message) {
  if (message.starts_with("[json.exception.")) {
    std::size_t close = message.find("] ");
    if (close != std::string_view::npos)
      return message.substr(close + 2);
  }
  return message;
}

/// Throws Error if `text` is not valid UTF-8 (JSON strings must be).
void checkUtf8(const std::string &where, std::string_view what,
               const std::string &text) {
  try {
    (void)Json(text).dump();
  } catch (const Json::type_error &e) {
    throw Error(fmt::format("{}: {} is not valid UTF-8: {}", where, what,
                            withoutJsonTag(e.what())));
  }
}

} // namespace

std::size_t dtypeSize(DType dtype) { return infoOf(dtype).size; }

std::string_view dtypeName(DType dtype) { return infoOf(dtype).name; }

std::optional<DType> parseDType(std::string_view name) {
  for (const DTypeInfo &info : kDTypes)
    if (info.name == name)
      return info.dtype;
  return std::nullopt;
}

std::int64_t Tensor::numElements() const {
  std::int64_t count = 1;
  for (std::int64_t dim : shape)
    count *= dim;
  return count;
}

const Tensor *SafeTensors::find(std::string_view name) const {
  for (const Tensor &tensor : tensors)
    if (tensor.name == name)
      return &tensor;
  return nullptr;
}

SafeTensors readSafeTensors(const std::string &path) {
  InputFile file(path);
  const std::uint64_t fileSize = file.size();
  if (fileSize < kLengthBytes)
    throw Error(fmt::format("{}: file is {} bytes, too short for the {}-byte "
                            "header length of a safetensors file",
                            path, fileSize, kLengthBytes));
  std::array<std::byte, kLengthBytes> lengthBytes;
  file.readAt(0, lengthBytes);
  std::uint64_t headerLength = 0;
  for (std::size_t i = 0; i < kLengthBytes; ++i)
    headerLength |= std::to_integer<std::uint64_t>(lengthBytes[i]) << (8 * i);
  if (headerLength > fileSize - kLengthBytes)
    throw Error(fmt::format("{}: header length {} exceeds the file ({} bytes "
                            "after the {}-byte length)",
                            path, headerLength, fileSize - kLengthBytes,
                            kLengthBytes));
  std::string headerText(headerLength, '\0');
  file.readAt(kLengthBytes, std::as_writable_bytes(std::span(headerText)));
  const std::uint64_t dataStart = kLengthBytes + headerLength;
  const std::uint64_t dataSize = fileSize - dataStart;

  // JSON parsers keep the last of repeated keys; a repeated tensor name is an
  // error, so the top-level keys are collected while parsing.
  std::set<std::string> names;
  std::optional<std::string> repeated;
  Json::parser_callback_t noteKeys = [&](int depth, Json::parse_event_t event,
                                         Json &parsed) {
    if (depth == 1 && event == Json::parse_event_t::key && !repeated &&
        !names.insert(parsed.get<std::string>()).second)
      repeated = parsed.get<std::string>();
    return true;
  };
  Json header;
  try {
    header = Json::parse(headerText, noteKeys);
  } catch (const Json::exception &e) {
    throw Error(fmt::format("{}: header is not valid JSON: {}", path,
                            withoutJsonTag(e.what())));
  }
  if (!header.is_object())
    throw Error(fmt::format("{}: header is not a JSON object (found {})", path,
                            header.type_name()));
  if (repeated)
    throw Error(fmt::format("{}: {} appears more than once in the header", path,
                            *repeated == kMetadataKey
                                ? fmt::format("'{}'", kMetadataKey)
                                : fmt::format("tensor '{}'", *repeated)));

  SafeTensors result;
  std::vector<Entry> entries;
  for (const auto &[name, value] : header.items()) {
    if (name == kMetadataKey)
      result.metadata = parseMetadata(path, value);
    else
      entries.push_back(parseEntry(fmt::format("{}: tensor '{}'", path, name),
                                   name, value, dataSize));
  }

  // In file order; every range must be disjoint from those before it.
  std::stable_sort(
      entries.begin(), entries.end(), [](const Entry &a, const Entry &b) {
        return a.begin < b.begin || (a.begin == b.begin && a.end < b.end);
      });
  const Entry *furthest = nullptr; // the earlier range that ends last
  for (const Entry &entry : entries) {
    if (entry.begin == entry.end)
      continue; // an empty tensor occupies no bytes
    if (furthest && entry.begin < furthest->end)
      throw Error(fmt::format("{}: tensor '{}': data range [{}, {}) overlaps "
                              "tensor '{}' [{}, {})",
                              path, entry.name, entry.begin, entry.end,
                              furthest->name, furthest->begin, furthest->end));
    if (!furthest || entry.end > furthest->end)
      furthest = &entry;
  }

  result.tensors.reserve(entries.size());
  for (Entry &entry : entries) {
    Tensor tensor;
    tensor.name = std::move(entry.name);
    tensor.dtype = entry.dtype;
    tensor.shape = std::move(entry.shape);
    tensor.data.resize(entry.end - entry.begin);
    file.readAt(dataStart + entry.begin, tensor.data);
    result.tensors.push_back(std::move(tensor));
  }
  return result;
}

void writeSafeTensors(const std::string &path,
                      const std::vector<Tensor> &tensors,
                      const std::map<std::string, std::string> &metadata) {
  Json header = Json::object();
  if (!metadata.empty()) {
    Json &entries = header[kMetadataKey] = Json::object();
    for (const auto &[key, value] : metadata) {
      checkUtf8(path, fmt::format("metadata key '{}'", key), key);
      checkUtf8(path, fmt::format("metadata value of '{}'", key), value);
      entries[key] = value;
    }
  }

  std::set<std::string_view> names;
  std::uint64_t offset = 0;
  for (const Tensor &tensor : tensors) {
    std::string where = fmt::format("{}: tensor '{}'", path, tensor.name);
    if (tensor.name == kMetadataKey)
      throw Error(fmt::format("{}: the name is reserved for metadata", where));
    if (!names.insert(tensor.name).second)
      throw Error(fmt::format("{}: name given to more than one tensor", where));
    checkUtf8(where, "the name", tensor.name);
    for (std::int64_t dim : tensor.shape)
      if (dim < 0)
        throw Error(fmt::format("{}: negative dimension {} in shape {}", where,
                                dim, formatShape(tensor.shape)));
    std::optional<std::uint64_t> expected =
        byteSizeOf(tensor.shape, tensor.dtype);
    if (!expected || *expected != tensor.data.size())
      throw Error(fmt::format("{}: holds {} bytes of data but shape {} of {} "
                              "needs {}",
                              where, tensor.data.size(),
                              formatShape(tensor.shape),
                              dtypeName(tensor.dtype),
                              expected ? fmt::to_string(*expected)
                                       : std::string("more than 2^64")));
    header[tensor.name] = {{"dtype", dtypeName(tensor.dtype)},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + *expected}}};
    offset += *expected;
  }

  std::string headerText = header.dump();
  headerText.append((kHeaderAlignment - headerText.size() % kHeaderAlignment) %
                        kHeaderAlignment,
                    ' ');
  std::array<std::byte, kLengthBytes> lengthBytes;
  for (std::size_t i = 0; i < kLengthBytes; ++i)
    lengthBytes[i] = static_cast<std::byte>(
        (static_cast<std::uint64_t>(headerText.size()) >> (8 * i)) & 0xff);

  AtomicFile file(path);
  file.write(lengthBytes);
  file.write(std::as_bytes(std::span(headerText)));
  for (const Tensor &tensor : tensors)
    file.write(tensor.data);
  file.commit();
}

} // namespace kiln::rt
