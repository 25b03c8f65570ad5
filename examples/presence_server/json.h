// File: examples/presence_server/json.h
//
// A small, strict JSON reader and the few writing helpers the example server
// needs. The reader never trusts its input: it bounds nesting depth, element
// count and input size, rejects duplicate object keys, invalid UTF-8, lone
// surrogates, trailing bytes and numbers that are not finite, and answers a
// status that names the byte offset of the first problem. It has no
// dependencies beyond Abseil, so a fuzzer can target ParseJson directly.
#ifndef PRESENCE_EXAMPLES_SERVER_JSON_H_
#define PRESENCE_EXAMPLES_SERVER_JSON_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace presence_server {

class Json {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  bool as_bool() const { return bool_; }
  double as_double() const { return number_; }
  // True when the number was written as an integer that fits an int64.
  bool is_int() const { return type_ == Type::kNumber && is_int_; }
  int64_t as_int() const { return int_; }
  const std::string& as_string() const { return string_; }
  const std::vector<Json>& items() const { return items_; }
  const std::vector<std::pair<std::string, Json>>& members() const { return members_; }

  // The member named `key` of an object, or null when absent (or not an object).
  const Json* Find(absl::string_view key) const;

  // The name of a type, for error messages ("string", "array", ...).
  static const char* TypeName(Type t);

 private:
  friend class JsonParser;
  Type type_ = Type::kNull;
  bool bool_ = false;
  bool is_int_ = false;
  double number_ = 0;
  int64_t int_ = 0;
  std::string string_;
  std::vector<Json> items_;
  std::vector<std::pair<std::string, Json>> members_;
};

struct JsonLimits {
  size_t max_bytes = 1 << 20;    // input size
  size_t max_depth = 16;         // nesting of arrays and objects
  size_t max_elements = 100000;  // values in the whole document
};

// ParseJson parses one JSON document (RFC 8259, no extensions). On error:
// InvalidArgument, "at byte N: what".
absl::StatusOr<Json> ParseJson(absl::string_view text, const JsonLimits& limits = {});

// Appends `s` as a JSON string literal, quotes included. Bytes that are not
// valid UTF-8 are written as U+FFFD, so the output is always valid JSON.
void AppendJsonString(std::string* out, absl::string_view s);
std::string JsonString(absl::string_view s);

}  // namespace presence_server

#endif  // PRESENCE_EXAMPLES_SERVER_JSON_H_
