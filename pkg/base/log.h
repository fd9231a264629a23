#pragma once

#include <initializer_list>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/strings/str_cat.h"

namespace ferry::base {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
enum class LogFormat { kText, kJson };

// One key=value pair of a structured log line. Values are formatted with
// absl::StrCat, so numbers and strings both work.
struct LogField {
  LogField(absl::string_view k, const absl::AlphaNum& v) : key(k), value(v.Piece()) {}
  absl::string_view key;
  std::string value;
};

// Set once at start, before threads start; read by every thread after.
void SetLogOptions(LogLevel level, LogFormat format);
bool ParseLogLevel(absl::string_view text, LogLevel* level);
bool ParseLogFormat(absl::string_view text, LogFormat* format);
bool LogEnabled(LogLevel level);

// Writes one line to stderr with a single write(2), so lines from different
// threads never interleave. Text: `ts=... level=info msg="..." k=v`; JSON: an
// object per line. Safe from any thread.
void Log(LogLevel level, absl::string_view msg, std::initializer_list<LogField> fields = {});

// Formats one line without writing it (for tests).
std::string FormatLogLine(LogFormat format, int64_t unix_nanos, LogLevel level,
                          absl::string_view msg, std::initializer_list<LogField> fields);

// Appends `s` as a JSON string: quoted, with ", \\ and control characters
// escaped.
void AppendJsonString(std::string* out, absl::string_view s);
// Appends `s` as a logfmt value: as it is when it can be, else as a JSON string.
void AppendLogfmtValue(std::string* out, absl::string_view s);

#define FERRY_LOG(level, ...)                                                  \
  do {                                                                         \
    if (::ferry::base::LogEnabled(::ferry::base::LogLevel::level))             \
      ::ferry::base::Log(::ferry::base::LogLevel::level, __VA_ARGS__);         \
  } while (0)

}  // namespace ferry::base
