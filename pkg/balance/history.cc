#include "pkg/balance/history.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "pkg/net/address.h"

namespace ferry::balance {
namespace {

constexpr absl::string_view kUnixPrefix = "unix:";
constexpr size_t kMaxFileBytes = 64 << 20;
// 2^64 as a double: the first value a uint64_t cannot hold.
constexpr double kTwoTo64 = 18446744073709551616.0;

constexpr const char* kHeader =
    "# ferry byte history: one \"ENDPOINT BYTES\" per line (tcp-pf host-file format).\n"
    "# ENDPOINT is IP:PORT, [IPv6]:PORT or unix:/path, or a bare host for every\n"
    "# endpoint on it. Edit with 'ferry history set|reset' while no ferry holds it.\n";

std::string ErrnoText(int err) { return std::strerror(err); }

bool ValidHostName(absl::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  for (char c : host) {
    bool ok =
        absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
    if (!ok) return false;
  }
  return host.front() != '-' && host.front() != '.';
}

// True for text made of digits and dots only: meant as IPv4, never a name.
bool LooksNumeric(absl::string_view host) {
  return std::all_of(host.begin(), host.end(),
                     [](char c) { return c == '.' || absl::ascii_isdigit(c); });
}

// The canonical text of an IP literal without port ("::1", "10.0.0.7").
absl::StatusOr<std::string> CanonicalIp(absl::string_view ip) {
  std::string bracketed = ip.find(':') != absl::string_view::npos ? absl::StrCat("[", ip, "]:0")
                                                                  : absl::StrCat(ip, ":0");
  auto address = net::Address::ParseLiteral(bracketed);
  if (!address.ok()) return address.status();
  return address->HostString();
}

// The host part of an endpoint key, or "" for a unix key.
absl::string_view HostOfKey(absl::string_view key) {
  if (absl::StartsWith(key, kUnixPrefix)) return "";
  if (!key.empty() && key.front() == '[') {
    size_t close = key.find(']');
    return close == absl::string_view::npos ? "" : key.substr(1, close - 1);
  }
  size_t colon = key.rfind(':');
  return colon == absl::string_view::npos ? "" : key.substr(0, colon);
}

}  // namespace

void DecayingCounter::Add(uint64_t bytes, int64_t now_nanos) {
  double current = has_ref_ ? Value(now_nanos) : 0.0;
  if (has_ref_ && now_nanos < ref_nanos_) now_nanos = ref_nanos_;
  value_ = current + static_cast<double>(bytes);
  ref_nanos_ = now_nanos;
  has_ref_ = true;
}

double DecayingCounter::Value(int64_t now_nanos) const {
  if (!has_ref_ || half_life_nanos_ == 0 || now_nanos <= ref_nanos_) return value_;
  int64_t elapsed = 0;
  if (__builtin_sub_overflow(now_nanos, ref_nanos_, &elapsed)) {
    elapsed = std::numeric_limits<int64_t>::max();
  }
  double halvings = static_cast<double>(elapsed) / static_cast<double>(half_life_nanos_);
  return value_ * std::exp2(-halvings);
}

void DecayingCounter::Set(double value, int64_t now_nanos) {
  if (std::isnan(value) || value < 0) value = 0;
  // Infinity would turn into NaN once decayed to 0 (inf * 0).
  if (value > DBL_MAX) value = DBL_MAX;
  value_ = value;
  ref_nanos_ = now_nanos;
  has_ref_ = true;
}

double StartValue(const std::vector<double>& present_values) {
  bool any = false;
  double lowest = 0;
  for (double v : present_values) {
    if (std::isnan(v)) continue;
    if (!any || v < lowest) lowest = v;
    any = true;
  }
  return any && lowest > 0 ? lowest : 0;
}

uint64_t ToByteCount(double value) {
  if (!(value > 0)) return 0;  // also NaN
  double rounded = std::nearbyint(value);
  if (rounded >= kTwoTo64) return std::numeric_limits<uint64_t>::max();
  return static_cast<uint64_t>(rounded);
}

std::string HistoryProblem::ToString() const { return absl::StrCat("line ", line, ": ", message); }

std::optional<uint64_t> ParsedHistory::Lookup(absl::string_view endpoint_key,
                                              absl::string_view host_name) const {
  auto find = [this](absl::string_view key) -> std::optional<uint64_t> {
    for (const HistoryEntry& e : entries) {
      if (e.endpoint == key) return e.bytes;
    }
    return std::nullopt;
  };
  if (auto v = find(endpoint_key)) return v;
  if (absl::StartsWith(endpoint_key, kUnixPrefix)) return std::nullopt;
  absl::string_view host = HostOfKey(endpoint_key);
  if (!host.empty()) {
    if (auto v = find(host)) return v;
  }
  if (!host_name.empty()) {
    std::string name = absl::AsciiStrToLower(absl::StripSuffix(host_name, "."));
    if (auto v = find(name)) return v;
  }
  return std::nullopt;
}

absl::StatusOr<std::string> CanonicalHistoryKey(absl::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError("empty endpoint");
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      return absl::InvalidArgumentError("control character in endpoint");
    }
    if (c == ' ' || c == '#') {
      return absl::InvalidArgumentError(
          absl::StrCat("endpoint \"", text, "\" holds a space or '#' (not writable in the file)"));
    }
  }
  if (absl::StartsWith(text, kUnixPrefix)) {
    auto hp = net::ParseHostPort(text);
    if (!hp.ok()) return hp.status();
    return net::Address::Unix(hp->unix_path).ToString();
  }
  // A bare host: "[::1]", "::1", "10.0.0.7" or a name.
  if (text.front() == '[' && text.back() == ']') {
    absl::string_view ip = text.substr(1, text.size() - 2);
    if (ip.find(':') == absl::string_view::npos || !net::IsIpLiteral(ip)) {
      return absl::InvalidArgumentError(absl::StrCat("bad IPv6 address \"", ip, "\""));
    }
    return CanonicalIp(ip);
  }
  size_t colons = std::count(text.begin(), text.end(), ':');
  if (colons == 0 || (colons > 1 && text.front() != '[')) {
    if (colons > 1) {
      if (!net::IsIpLiteral(text)) {
        return absl::InvalidArgumentError(absl::StrCat("bad IPv6 address \"", text, "\""));
      }
      return CanonicalIp(text);
    }
    if (net::IsIpLiteral(text)) return CanonicalIp(text);
    if (LooksNumeric(text)) {
      return absl::InvalidArgumentError(absl::StrCat("bad IPv4 address \"", text, "\""));
    }
    if (!ValidHostName(text)) {
      return absl::InvalidArgumentError(absl::StrCat("bad host name \"", text, "\""));
    }
    return absl::AsciiStrToLower(absl::StripSuffix(text, "."));
  }
  // An endpoint key: IP:PORT or [IPv6]:PORT.
  auto hp = net::ParseHostPort(text);
  if (!hp.ok()) return hp.status();
  if (hp->host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("missing host in \"", text, "\""));
  }
  if (!net::IsIpLiteral(hp->host)) {
    if (LooksNumeric(hp->host)) {
      return absl::InvalidArgumentError(absl::StrCat("bad IPv4 address \"", hp->host, "\""));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text,
                     "\" is not an endpoint key (IP:PORT); a host name stands alone, "
                     "without a port"));
  }
  auto address = net::Address::ParseLiteral(text);
  if (!address.ok()) return address.status();
  return address->ToString();
}

absl::StatusOr<uint64_t> ParseByteCount(absl::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError("missing byte count");
  if (text.front() == '-') {
    return absl::InvalidArgumentError(absl::StrCat("negative byte count \"", text, "\""));
  }
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  uint64_t value = 0;
  bool overflow = false;
  for (char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad byte count \"", text, "\" (decimal digits only)"));
    }
    auto digit = static_cast<uint64_t>(c - '0');
    if (value > (kMax - digit) / 10) overflow = true;
    if (!overflow) value = value * 10 + digit;
  }
  if (overflow) {
    return absl::InvalidArgumentError(absl::StrCat("byte count \"", text, "\" larger than ", kMax));
  }
  return value;
}

ParsedHistory ParseHistoryFile(absl::string_view text) {
  ParsedHistory out;
  // key -> (index in out.entries, line it was last set on)
  std::map<std::string, std::pair<size_t, int>, std::less<>> seen;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    absl::ConsumeSuffix(&line, "\r");
    if (size_t hash = line.find('#'); hash != absl::string_view::npos) line = line.substr(0, hash);
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.empty()) continue;
    auto problem = [&](std::string message) {
      out.problems.push_back({line_number, std::move(message)});
    };
    auto key = CanonicalHistoryKey(fields[0]);
    if (!key.ok()) {
      problem(absl::StrCat("bad endpoint \"", fields[0], "\": ", key.status().message()));
      continue;
    }
    if (fields.size() < 2) {
      problem(absl::StrCat("missing byte count after \"", fields[0], "\""));
      continue;
    }
    auto bytes = ParseByteCount(fields[1]);
    if (!bytes.ok()) {
      problem(std::string(bytes.status().message()));
      continue;
    }
    if (fields.size() > 2) {
      problem(absl::StrCat("unexpected \"", fields[2], "\" after the byte count"));
      continue;
    }
    auto it = seen.find(*key);
    if (it != seen.end()) {
      problem(absl::StrCat("duplicate \"", *key, "\" (also on line ", it->second.second,
                           "); the last one counts"));
      out.entries[it->second.first].bytes = *bytes;
      it->second.second = line_number;
      continue;
    }
    seen.emplace(*key, std::make_pair(out.entries.size(), line_number));
    out.entries.push_back({*std::move(key), *bytes});
  }
  return out;
}

std::string FormatHistoryFile(const std::vector<HistoryEntry>& entries) {
  std::vector<const HistoryEntry*> sorted;
  sorted.reserve(entries.size());
  for (const HistoryEntry& e : entries) sorted.push_back(&e);
  std::stable_sort(sorted.begin(), sorted.end(), [](const HistoryEntry* a, const HistoryEntry* b) {
    return a->endpoint < b->endpoint;
  });
  std::string text = kHeader;
  for (const HistoryEntry* e : sorted) absl::StrAppend(&text, e->endpoint, " ", e->bytes, "\n");
  return text;
}

absl::StatusOr<ParsedHistory> HistoryFile::Load(const std::string& path) {
  base::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return ParsedHistory{};
    return absl::UnavailableError(
        absl::StrCat("cannot read history file \"", path, "\": ", ErrnoText(errno)));
  }
  struct stat st;
  if (::fstat(fd.get(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read history file \"", path, "\": ", ErrnoText(EISDIR)));
  }
  std::string text;
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot read history file \"", path, "\": ", ErrnoText(errno)));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxFileBytes) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot read history file \"", path, "\": larger than ", kMaxFileBytes >> 20, " MiB"));
    }
  }
  return ParseHistoryFile(text);
}

absl::Status HistoryFile::SaveAtomically(const std::string& path,
                                         const std::vector<HistoryEntry>& entries) {
  std::map<absl::string_view, bool> keys;
  for (const HistoryEntry& e : entries) {
    auto key = CanonicalHistoryKey(e.endpoint);
    if (!key.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("history entry \"", e.endpoint, "\": ", key.status().message()));
    }
    if (*key != e.endpoint) {
      return absl::InvalidArgumentError(
          absl::StrCat("history entry \"", e.endpoint, "\" is not canonical (\"", *key, "\")"));
    }
    if (!keys.emplace(e.endpoint, true).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("history entry \"", e.endpoint, "\" given twice"));
    }
  }
  const std::string text = FormatHistoryFile(entries);
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  auto fail = [&](const std::string& what, const std::string& file, int err) {
    ::unlink(tmp.c_str());
    return absl::UnavailableError(
        absl::StrCat("cannot ", what, " \"", file, "\": ", ErrnoText(err)));
  };
  {
    base::Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd.valid()) {
      // Never unlink here: `tmp` may be something that is not ours.
      return absl::UnavailableError(
          absl::StrCat("cannot create \"", tmp, "\": ", ErrnoText(errno)));
    }
    size_t done = 0;
    while (done < text.size()) {
      ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return fail("write", tmp, errno);
      done += static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) != 0) return fail("fsync", tmp, errno);
    if (::close(fd.Release()) != 0) return fail("write", tmp, errno);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return absl::UnavailableError(
        absl::StrCat("cannot rename \"", tmp, "\" to \"", path, "\": ", ErrnoText(err)));
  }
  // The rename is durable only once the directory entry is.
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  base::Fd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd.valid() || ::fsync(dir_fd.get()) != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot fsync directory \"", dir, "\" of \"", path, "\": ", ErrnoText(errno)));
  }
  return absl::OkStatus();
}

std::string HistoryLock::LockPath(const std::string& history_path) {
  return history_path + ".lock";
}

absl::StatusOr<HistoryLock> HistoryLock::TryLock(const std::string& history_path) {
  std::string lock_path = LockPath(history_path);
  base::Fd fd(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!fd.valid()) {
    return absl::UnavailableError(
        absl::StrCat("cannot open lock file \"", lock_path, "\": ", ErrnoText(errno)));
  }
  int rc;
  do {
    rc = ::flock(fd.get(), LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    if (errno != EWOULDBLOCK) {
      return absl::UnavailableError(
          absl::StrCat("cannot lock \"", lock_path, "\": ", ErrnoText(errno)));
    }
    // The holder wrote its pid after taking the lock; it may not have yet.
    char buf[32] = {0};
    ssize_t n = ::pread(fd.get(), buf, sizeof(buf) - 1, 0);
    std::string holder;
    int64_t pid = 0;
    if (n > 0 && absl::SimpleAtoi(absl::StripAsciiWhitespace(absl::string_view(buf, n)), &pid) &&
        pid > 0) {
      holder = absl::StrCat(" (pid ", pid, ")");
    }
    return absl::FailedPreconditionError(
        absl::StrCat("history file \"", history_path, "\" is held by another process", holder));
  }
  std::string pid = absl::StrCat(::getpid(), "\n");
  // For messages only: a failure here leaves the lock just as good.
  if (::ftruncate(fd.get(), 0) == 0) {
    [[maybe_unused]] ssize_t n = ::pwrite(fd.get(), pid.data(), pid.size(), 0);
  }
  return HistoryLock(std::move(fd), std::move(lock_path));
}

}  // namespace ferry::balance
