#include "pkg/base/log.h"

#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "pkg/base/clock.h"
#include "pkg/base/status.h"

namespace ferry::base {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<int> g_format{static_cast<int>(LogFormat::kText)};

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "info";
}

std::string FormatTime(int64_t unix_nanos) {
  time_t secs = unix_nanos / kNanosPerSecond;
  int millis = static_cast<int>((unix_nanos % kNanosPerSecond) / kNanosPerMilli);
  tm t;
  gmtime_r(&secs, &t);
  char buf[80];  // room for any int the compiler imagines
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900,
                t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, millis);
  return buf;
}

}  // namespace

void CheckFailed(const char* cond, const char* file, int line) {
  Log(LogLevel::kError, "check failed", {{"condition", cond}, {"file", file}, {"line", line}});
  std::abort();
}

void SetLogOptions(LogLevel level, LogFormat format) {
  g_level.store(static_cast<int>(level), std::memory_order_relaxed);
  g_format.store(static_cast<int>(format), std::memory_order_relaxed);
}

bool ParseLogLevel(absl::string_view text, LogLevel* level) {
  std::string t = absl::AsciiStrToLower(text);
  if (t == "debug") *level = LogLevel::kDebug;
  else if (t == "info") *level = LogLevel::kInfo;
  else if (t == "warn" || t == "warning") *level = LogLevel::kWarn;
  else if (t == "error") *level = LogLevel::kError;
  else return false;
  return true;
}

bool ParseLogFormat(absl::string_view text, LogFormat* format) {
  if (text == "text") *format = LogFormat::kText;
  else if (text == "json") *format = LogFormat::kJson;
  else return false;
  return true;
}

bool LogEnabled(LogLevel level) {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

std::string FormatLogLine(LogFormat format, int64_t unix_nanos, LogLevel level,
                          absl::string_view msg, std::initializer_list<LogField> fields) {
  std::string out;
  out.reserve(128);
  if (format == LogFormat::kJson) {
    out.append("{\"ts\":");
    AppendJsonString(&out, FormatTime(unix_nanos));
    out.append(",\"level\":");
    AppendJsonString(&out, LevelName(level));
    out.append(",\"msg\":");
    AppendJsonString(&out, msg);
    for (const LogField& f : fields) {
      out.push_back(',');
      AppendJsonString(&out, f.key);
      out.push_back(':');
      AppendJsonString(&out, f.value);
    }
    out.append("}\n");
  } else {
    absl::StrAppend(&out, "ts=", FormatTime(unix_nanos), " level=", LevelName(level), " msg=");
    AppendJsonString(&out, msg);
    for (const LogField& f : fields) {
      absl::StrAppend(&out, " ", f.key, "=");
      AppendLogfmtValue(&out, f.value);
    }
    out.push_back('\n');
  }
  return out;
}

void Log(LogLevel level, absl::string_view msg, std::initializer_list<LogField> fields) {
  if (!LogEnabled(level)) return;
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  std::string line =
      FormatLogLine(static_cast<LogFormat>(g_format.load(std::memory_order_relaxed)),
                    int64_t{ts.tv_sec} * kNanosPerSecond + ts.tv_nsec, level, msg, fields);
  // One write per line; a short write to a pipe of < PIPE_BUF bytes cannot happen.
  ssize_t r = ::write(STDERR_FILENO, line.data(), line.size());
  (void)r;
}

void AppendJsonString(std::string* out, absl::string_view s) {
  out->push_back('"');
  for (char c : s) {
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned char>(c));
          out->append(buf);
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

void AppendLogfmtValue(std::string* out, absl::string_view s) {
  bool plain = !s.empty();
  for (char c : s) {
    if (c == ' ' || c == '"' || c == '=' || static_cast<unsigned char>(c) < 0x21 || c == 0x7f) {
      plain = false;
      break;
    }
  }
  if (plain) {
    out->append(s.data(), s.size());
  } else {
    AppendJsonString(out, s);
  }
}

}  // namespace ferry::base
