#include "pkg/proxy/access_log.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <regex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "pkg/net/address.h"

namespace ferry::proxy {
namespace {

using ::testing::HasSubstr;

// 2024-05-01T12:34:56.789123456Z.
constexpr int64_t kStart = int64_t{1714566896} * 1'000'000'000 + 789'123'456;

net::Address Addr(const std::string& text) {
  auto a = net::Address::ParseLiteral(text);
  EXPECT_TRUE(a.ok()) << text << ": " << a.status();
  return a.ok() ? *a : net::Address();
}

std::string Format(AccessLogFormat format, const AccessRecord& r) {
  std::string out;
  FormatAccessRecord(format, r, &out);
  return out;
}

// A record over addresses the fixture owns.
class FormatTest : public ::testing::Test {
 protected:
  AccessRecord Record() {
    AccessRecord r;
    r.start_unix_nanos = kStart;
    r.duration_nanos = 1'500'999'999;  // 1500.999999 ms: truncated to 1500
    r.rule = "web";
    r.client = &client_;
    r.listen = &listen_;
    r.endpoint = &endpoint_;
    r.bytes_from_client = 1234;
    r.bytes_to_client = 5678;
    r.outcome = "ok";
    return r;
  }

  net::Address client_ = Addr("10.1.2.3:51234");
  net::Address listen_ = Addr("0.0.0.0:8080");
  net::Address endpoint_ = Addr("10.0.0.7:80");
};

TEST_F(FormatTest, TextIpv4) {
  EXPECT_EQ(Format(AccessLogFormat::kText, Record()),
            "ts=2024-05-01T12:34:56.789Z rule=web client=10.1.2.3:51234 listen=0.0.0.0:8080 "
            "endpoint=10.0.0.7:80 bytes_from_client=1234 bytes_to_client=5678 duration_ms=1500 "
            "outcome=ok\n");
}

TEST_F(FormatTest, JsonIpv4) {
  EXPECT_EQ(Format(AccessLogFormat::kJson, Record()),
            "{\"ts\":\"2024-05-01T12:34:56.789Z\",\"rule\":\"web\",\"client\":\"10.1.2.3:51234\","
            "\"listen\":\"0.0.0.0:8080\",\"endpoint\":\"10.0.0.7:80\",\"bytes_from_client\":1234,"
            "\"bytes_to_client\":5678,\"duration_ms\":1500,\"outcome\":\"ok\"}\n");
}

TEST_F(FormatTest, ClfIpv4IsRinetdLogcommon) {
  EXPECT_EQ(Format(AccessLogFormat::kClf, Record()),
            "10.1.2.3 - - [01/May/2024:12:34:56 +0000] "
            "\"GET /rinetd-services/0.0.0.0/8080/10.0.0.7/80/ok HTTP/1.0\" 200 5678 - - - 1234\n");
}

TEST_F(FormatTest, Ipv6InEveryFormat) {
  client_ = Addr("[2001:db8::1]:40000");
  listen_ = Addr("[::]:8443");
  endpoint_ = Addr("[fd00::7]:443");
  AccessRecord r = Record();
  EXPECT_EQ(Format(AccessLogFormat::kText, r),
            "ts=2024-05-01T12:34:56.789Z rule=web client=[2001:db8::1]:40000 listen=[::]:8443 "
            "endpoint=[fd00::7]:443 bytes_from_client=1234 bytes_to_client=5678 duration_ms=1500 "
            "outcome=ok\n");
  EXPECT_EQ(Format(AccessLogFormat::kJson, r),
            "{\"ts\":\"2024-05-01T12:34:56.789Z\",\"rule\":\"web\","
            "\"client\":\"[2001:db8::1]:40000\",\"listen\":\"[::]:8443\","
            "\"endpoint\":\"[fd00::7]:443\",\"bytes_from_client\":1234,"
            "\"bytes_to_client\":5678,\"duration_ms\":1500,\"outcome\":\"ok\"}\n");
  EXPECT_EQ(Format(AccessLogFormat::kClf, r),
            "2001:db8::1 - - [01/May/2024:12:34:56 +0000] "
            "\"GET /rinetd-services/::/8443/fd00::7/443/ok HTTP/1.0\" 200 5678 - - - 1234\n");
}

TEST_F(FormatTest, Ipv4MappedClientPrintsAsIpv4) {
  client_ = Addr("[::ffff:10.1.2.3]:51234");
  EXPECT_THAT(Format(AccessLogFormat::kText, Record()), HasSubstr(" client=10.1.2.3:51234 "));
  EXPECT_THAT(Format(AccessLogFormat::kClf, Record()), ::testing::StartsWith("10.1.2.3 - - ["));
}

TEST_F(FormatTest, UnixAddresses) {
  client_ = net::Address::Unix("/run/app client.sock");  // a space: quoted / escaped
  listen_ = net::Address::Unix("/run/ferry.sock");
  AccessRecord r = Record();
  EXPECT_EQ(Format(AccessLogFormat::kText, r),
            "ts=2024-05-01T12:34:56.789Z rule=web client=\"unix:/run/app client.sock\" "
            "listen=unix:/run/ferry.sock endpoint=10.0.0.7:80 bytes_from_client=1234 "
            "bytes_to_client=5678 duration_ms=1500 outcome=ok\n");
  EXPECT_EQ(Format(AccessLogFormat::kJson, r),
            "{\"ts\":\"2024-05-01T12:34:56.789Z\",\"rule\":\"web\","
            "\"client\":\"unix:/run/app client.sock\",\"listen\":\"unix:/run/ferry.sock\","
            "\"endpoint\":\"10.0.0.7:80\",\"bytes_from_client\":1234,"
            "\"bytes_to_client\":5678,\"duration_ms\":1500,\"outcome\":\"ok\"}\n");
  // The host field keeps its slashes; a URL segment escapes them.
  EXPECT_EQ(Format(AccessLogFormat::kClf, r),
            "unix:/run/app%20client.sock - - [01/May/2024:12:34:56 +0000] "
            "\"GET /rinetd-services/unix:%2Frun%2Fferry.sock/0/10.0.0.7/80/ok HTTP/1.0\" "
            "200 5678 - - - 1234\n");
}

TEST_F(FormatTest, UnnamedUnixClient) {
  client_ = net::Address::Unix("");
  EXPECT_THAT(Format(AccessLogFormat::kText, Record()), HasSubstr(" client=unix: "));
  EXPECT_THAT(Format(AccessLogFormat::kClf, Record()), ::testing::StartsWith("unix: - - ["));
}

TEST_F(FormatTest, NoEndpoint) {
  AccessRecord r = Record();
  r.endpoint = nullptr;
  r.bytes_from_client = 0;
  r.bytes_to_client = 0;
  r.duration_nanos = 2'000'000;
  r.outcome = "no_endpoint";
  EXPECT_EQ(Format(AccessLogFormat::kText, r),
            "ts=2024-05-01T12:34:56.789Z rule=web client=10.1.2.3:51234 listen=0.0.0.0:8080 "
            "endpoint=- bytes_from_client=0 bytes_to_client=0 duration_ms=2 "
            "outcome=no_endpoint\n");
  EXPECT_EQ(Format(AccessLogFormat::kJson, r),
            "{\"ts\":\"2024-05-01T12:34:56.789Z\",\"rule\":\"web\",\"client\":\"10.1.2.3:51234\","
            "\"listen\":\"0.0.0.0:8080\",\"endpoint\":null,\"bytes_from_client\":0,"
            "\"bytes_to_client\":0,\"duration_ms\":2,\"outcome\":\"no_endpoint\"}\n");
  EXPECT_EQ(Format(AccessLogFormat::kClf, r),
            "10.1.2.3 - - [01/May/2024:12:34:56 +0000] "
            "\"GET /rinetd-services/0.0.0.0/8080/-/0/no_endpoint HTTP/1.0\" 200 0 - - - 0\n");
}

TEST_F(FormatTest, LargeByteCountsAndDuration) {
  AccessRecord r = Record();
  r.bytes_from_client = std::numeric_limits<uint64_t>::max();
  r.bytes_to_client = uint64_t{1} << 53;
  r.duration_nanos = std::numeric_limits<int64_t>::max();
  EXPECT_THAT(Format(AccessLogFormat::kText, r),
              HasSubstr(" bytes_from_client=18446744073709551615 bytes_to_client=9007199254740992"
                        " duration_ms=9223372036854 "));
  EXPECT_THAT(Format(AccessLogFormat::kJson, r),
              HasSubstr(",\"bytes_from_client\":18446744073709551615,"
                        "\"bytes_to_client\":9007199254740992,\"duration_ms\":9223372036854,"));
  EXPECT_THAT(Format(AccessLogFormat::kClf, r),
              HasSubstr("\" 200 9007199254740992 - - - 18446744073709551615\n"));
}

TEST_F(FormatTest, RuleNeedingQuotes) {
  AccessRecord r = Record();
  r.rule = "my \"rule\"";
  EXPECT_THAT(Format(AccessLogFormat::kText, r), HasSubstr(" rule=\"my \\\"rule\\\"\" client="));
  EXPECT_THAT(Format(AccessLogFormat::kJson, r), HasSubstr(",\"rule\":\"my \\\"rule\\\"\","));
  r.rule = "a=b";
  EXPECT_THAT(Format(AccessLogFormat::kText, r), HasSubstr(" rule=\"a=b\" "));
  r.rule = "";
  EXPECT_THAT(Format(AccessLogFormat::kText, r), HasSubstr(" rule=\"\" "));
  r.rule = "tab\there\n";
  EXPECT_THAT(Format(AccessLogFormat::kText, r), HasSubstr(" rule=\"tab\\there\\n\" "));
  // Every format stays one line whatever the rule holds.
  for (auto format : {AccessLogFormat::kText, AccessLogFormat::kJson, AccessLogFormat::kClf}) {
    std::string line = Format(format, r);
    EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
  }
}

TEST_F(FormatTest, RuleNamesOfTheConfigNeedNoQuotes) {
  AccessRecord r = Record();
  r.rule = "api-v2.default_svc";
  EXPECT_THAT(Format(AccessLogFormat::kText, r), HasSubstr(" rule=api-v2.default_svc "));
}

TEST_F(FormatTest, OddOutcomeIsEscapedInClf) {
  AccessRecord r = Record();
  r.outcome = "a b/c\"";
  EXPECT_THAT(Format(AccessLogFormat::kClf, r), HasSubstr("/80/a%20b%2Fc%22 HTTP/1.0\""));
  r.outcome = "";
  EXPECT_THAT(Format(AccessLogFormat::kClf, r), HasSubstr("/80/- HTTP/1.0\""));
}

TEST_F(FormatTest, TimesBefore1970AndNegativeDuration) {
  AccessRecord r = Record();
  r.start_unix_nanos = -1;  // one nanosecond before the epoch
  r.duration_nanos = -5;
  EXPECT_THAT(Format(AccessLogFormat::kText, r),
              ::testing::StartsWith("ts=1969-12-31T23:59:59.999Z rule=web "));
  EXPECT_THAT(Format(AccessLogFormat::kText, r), HasSubstr(" duration_ms=0 "));
  EXPECT_THAT(Format(AccessLogFormat::kClf, r), HasSubstr(" - - [31/Dec/1969:23:59:59 +0000] "));
}

TEST_F(FormatTest, NullClientAndListenPrintAsDash) {
  AccessRecord r = Record();
  r.client = nullptr;
  r.listen = nullptr;
  EXPECT_THAT(Format(AccessLogFormat::kText, r), HasSubstr(" client=- listen=- "));
  EXPECT_THAT(Format(AccessLogFormat::kJson, r), HasSubstr(",\"client\":null,\"listen\":null,"));
  EXPECT_THAT(Format(AccessLogFormat::kClf, r),
              ::testing::StartsWith(
                  "- - - [01/May/2024:12:34:56 +0000] \"GET /rinetd-services/-/0/"));
}

TEST_F(FormatTest, AppendsToWhatIsThere) {
  std::string out = "before\n";
  FormatAccessRecord(AccessLogFormat::kText, Record(), &out);
  EXPECT_THAT(out, ::testing::StartsWith("before\nts=2024-05-01T12:34:56.789Z "));
}

// A flat JSON object of strings, numbers and nulls, in key order: enough to
// prove each line is one well-formed object and to read its values back.
struct JsonValue {
  enum Kind { kString, kNumber, kNull } kind;
  std::string text;
};
using JsonObject = std::vector<std::pair<std::string, JsonValue>>;

bool ParseJsonString(absl::string_view s, size_t* i, std::string* out) {
  if (*i >= s.size() || s[*i] != '"') return false;
  for (++*i; *i < s.size(); ++*i) {
    char c = s[*i];
    if (c == '"') {
      ++*i;
      return true;
    }
    if (static_cast<unsigned char>(c) < 0x20) return false;  // raw control byte: invalid
    if (c != '\\') {
      out->push_back(c);
      continue;
    }
    if (++*i >= s.size()) return false;
    switch (s[*i]) {
      case '"': out->push_back('"'); break;
      case '\\': out->push_back('\\'); break;
      case '/': out->push_back('/'); break;
      case 'n': out->push_back('\n'); break;
      case 't': out->push_back('\t'); break;
      case 'r': out->push_back('\r'); break;
      case 'u': {
        uint32_t v = 0;
        if (*i + 4 >= s.size() || !absl::SimpleHexAtoi(s.substr(*i + 1, 4), &v) || v > 0x7f) {
          return false;
        }
        out->push_back(static_cast<char>(v));
        *i += 4;
        break;
      }
      default: return false;
    }
  }
  return false;
}

bool ParseFlatJson(absl::string_view s, JsonObject* obj) {
  size_t i = 0;
  if (s.empty() || s[i++] != '{') return false;
  while (true) {
    std::string key;
    if (!ParseJsonString(s, &i, &key)) return false;
    if (i >= s.size() || s[i++] != ':') return false;
    JsonValue v{JsonValue::kNull, ""};
    if (i < s.size() && s[i] == '"') {
      v.kind = JsonValue::kString;
      if (!ParseJsonString(s, &i, &v.text)) return false;
    } else if (s.substr(i, 4) == "null") {
      i += 4;
    } else {
      v.kind = JsonValue::kNumber;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') v.text.push_back(s[i++]);
      if (v.text.empty()) return false;
    }
    obj->emplace_back(std::move(key), std::move(v));
    if (i >= s.size()) return false;
    char c = s[i++];
    if (c == '}') return i == s.size();
    if (c != ',') return false;
  }
}

TEST_F(FormatTest, JsonIsOneObjectPerLineWithEveryKey) {
  AccessRecord r = Record();
  r.rule = "q\"uo\\te\tx\x01";
  client_ = net::Address::Unix("/tmp/c \"sock\"");
  std::string line = Format(AccessLogFormat::kJson, r);
  ASSERT_EQ(line.back(), '\n');
  line.pop_back();
  ASSERT_EQ(line.find('\n'), std::string::npos);
  JsonObject obj;
  ASSERT_TRUE(ParseFlatJson(line, &obj)) << line;
  std::vector<std::string> keys;
  for (const auto& [k, v] : obj) keys.push_back(k);
  EXPECT_THAT(keys, ::testing::ElementsAre("ts", "rule", "client", "listen", "endpoint",
                                           "bytes_from_client", "bytes_to_client", "duration_ms",
                                           "outcome"));
  std::map<std::string, JsonValue> m(obj.begin(), obj.end());
  EXPECT_EQ(m["rule"].kind, JsonValue::kString);
  EXPECT_EQ(m["rule"].text, "q\"uo\\te\tx\x01");
  EXPECT_EQ(m["client"].text, "unix:/tmp/c \"sock\"");
  EXPECT_EQ(m["bytes_from_client"].kind, JsonValue::kNumber);
  EXPECT_EQ(m["bytes_from_client"].text, "1234");
  EXPECT_EQ(m["duration_ms"].text, "1500");

  r.endpoint = nullptr;
  line = Format(AccessLogFormat::kJson, r);
  line.pop_back();
  obj.clear();
  ASSERT_TRUE(ParseFlatJson(line, &obj)) << line;
  EXPECT_EQ(obj[4].first, "endpoint");
  EXPECT_EQ(obj[4].second.kind, JsonValue::kNull);
}

TEST_F(FormatTest, ClfMatchesTheRinetdShape) {
  // rinetd's logcommon: HOST - - [TIME] "GET /rinetd-services/LH/LP/TH/TP/STATUS HTTP/1.0"
  // 200 BYTES_OUT - - - BYTES_IN
  const std::regex shape(
      R"(^(\S+) - - \[(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) \+0000\] )"
      R"("GET /rinetd-services/([^/ ]+)/(\d+)/([^/ ]+)/(\d+)/([^/ ]+) HTTP/1\.0" )"
      R"(200 (\d+) - - - (\d+)\n$)");
  AccessRecord ipv6 = Record();
  net::Address c6 = Addr("[::1]:1"), l6 = Addr("[::1]:2"), e6 = Addr("[::1]:3");
  ipv6.client = &c6;
  ipv6.listen = &l6;
  ipv6.endpoint = &e6;
  AccessRecord none = Record();
  none.endpoint = nullptr;
  none.outcome = "denied";
  net::Address unix_listen = net::Address::Unix("/a b/c");
  AccessRecord unix = Record();
  unix.listen = &unix_listen;
  for (const AccessRecord& r : {Record(), ipv6, none, unix}) {
    std::string line = Format(AccessLogFormat::kClf, r);
    std::smatch m;
    ASSERT_TRUE(std::regex_match(line, m, shape)) << line;
    EXPECT_EQ(m[13].str(), absl::StrCat(r.bytes_to_client));
    EXPECT_EQ(m[14].str(), absl::StrCat(r.bytes_from_client));
    EXPECT_EQ(m[12].str(), std::string(r.outcome));
  }
}

TEST(AccessLogFormatTest, Names) {
  for (auto format : {AccessLogFormat::kText, AccessLogFormat::kJson, AccessLogFormat::kClf}) {
    auto parsed = ParseAccessLogFormat(AccessLogFormatName(format));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, format);
  }
  auto bad = ParseAccessLogFormat("xml");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(),
            "unknown access log format \"xml\" (expected text, json or clf)");
  EXPECT_FALSE(ParseAccessLogFormat("none").ok());
  EXPECT_FALSE(ParseAccessLogFormat("").ok());
}

TEST(AccessLogFormatTest, FromProto) {
  using config::v1::AccessLog;
  EXPECT_EQ(AccessLogFormatFromProto(AccessLog::FORMAT_TEXT), AccessLogFormat::kText);
  EXPECT_EQ(AccessLogFormatFromProto(AccessLog::FORMAT_JSON), AccessLogFormat::kJson);
  EXPECT_EQ(AccessLogFormatFromProto(AccessLog::FORMAT_CLF), AccessLogFormat::kClf);
  EXPECT_EQ(AccessLogFormatFromProto(AccessLog::FORMAT_NONE), std::nullopt);
  EXPECT_EQ(AccessLogFormatFromProto(AccessLog::FORMAT_UNSPECIFIED), std::nullopt);
}

// ---- Writing ----

// A fresh directory, removed with its files at the end.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string tmpl = absl::StrCat(base != nullptr ? base : "/tmp", "/ferry_access_log.XXXXXX");
    char* made = ::mkdtemp(tmpl.data());
    EXPECT_NE(made, nullptr) << std::strerror(errno);
    path_ = tmpl;
  }
  ~TempDir() { RemoveTree(path_); }
  const std::string& path() const { return path_; }
  std::string File(absl::string_view name) const { return absl::StrCat(path_, "/", name); }

 private:
  static void RemoveTree(const std::string& path) {
    DIR* d = ::opendir(path.c_str());
    if (d != nullptr) {
      while (dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name == "." || name == "..") continue;
        std::string child = absl::StrCat(path, "/", name);
        struct stat st {};
        if (::lstat(child.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
          RemoveTree(child);
        } else {
          ::unlink(child.c_str());
        }
      }
      ::closedir(d);
    }
    ::rmdir(path.c_str());
  }
  std::string path_;
};

std::string ReadAll(const std::string& path) {
  std::string out;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return out;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

// The lines of `data`; fails the test if the last one lacks its '\n'.
std::vector<std::string> Lines(const std::string& data) {
  std::vector<std::string> lines;
  if (data.empty()) return lines;
  EXPECT_EQ(data.back(), '\n') << "a torn last line";
  for (absl::string_view l : absl::StrSplit(absl::string_view(data).substr(0, data.size() - 1),
                                            '\n')) {
    lines.emplace_back(l);
  }
  return lines;
}

int OpenFdCount() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
  ::closedir(d);
  return n - 1;  // the directory's own fd
}

// Records whose rule is "tT" and whose bytes_from_client is the sequence
// number, so a line says which thread wrote it and when.
class WriterTest : public ::testing::Test {
 protected:
  void Write(AccessLog& log, int thread, uint64_t seq) {
    std::string rule = absl::StrCat("t", thread);
    AccessRecord r;
    r.start_unix_nanos = kStart;
    r.rule = rule;
    r.client = &client_;
    r.listen = &listen_;
    r.endpoint = &endpoint_;
    r.bytes_from_client = seq;
    r.outcome = "ok";
    log.Write(r);
  }

  // Parses a text line written by Write(): false if it is not whole.
  static bool Parse(const std::string& line, int* thread, uint64_t* seq) {
    static const std::regex shape(
        R"(^ts=2024-05-01T12:34:56\.789Z rule=t(\d+) client=10\.1\.2\.3:51234 )"
        R"(listen=0\.0\.0\.0:8080 endpoint=10\.0\.0\.7:80 bytes_from_client=(\d+) )"
        R"(bytes_to_client=0 duration_ms=0 outcome=ok$)");
    std::smatch m;
    if (!std::regex_match(line, m, shape)) return false;
    return absl::SimpleAtoi(m[1].str(), thread) && absl::SimpleAtoi(m[2].str(), seq);
  }

  net::Address client_ = Addr("10.1.2.3:51234");
  net::Address listen_ = Addr("0.0.0.0:8080");
  net::Address endpoint_ = Addr("10.0.0.7:80");
  TempDir dir_;
};

TEST_F(WriterTest, WritesLinesToAFileCreated0640) {
  mode_t old_umask = ::umask(022);
  auto log = AccessLog::Open(dir_.File("access.log"), AccessLogFormat::kText);
  ::umask(old_umask);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->path(), dir_.File("access.log"));
  EXPECT_EQ((*log)->format(), AccessLogFormat::kText);
  Write(**log, 0, 1);
  Write(**log, 0, 2);
  std::vector<std::string> lines = Lines(ReadAll(dir_.File("access.log")));
  ASSERT_EQ(lines.size(), 2u);
  int t;
  uint64_t seq;
  ASSERT_TRUE(Parse(lines[0], &t, &seq)) << lines[0];
  EXPECT_EQ(seq, 1u);
  ASSERT_TRUE(Parse(lines[1], &t, &seq)) << lines[1];
  EXPECT_EQ(seq, 2u);
  struct stat st {};
  ASSERT_EQ(::stat(dir_.File("access.log").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  EXPECT_EQ((*log)->write_errors(), 0u);
  EXPECT_EQ((*log)->dropped_lines(), 0u);
}

TEST_F(WriterTest, AppendsToAnExistingFile) {
  {
    FILE* f = std::fopen(dir_.File("a.log").c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("earlier line\n", f);
    std::fclose(f);
  }
  auto log = AccessLog::Open(dir_.File("a.log"), AccessLogFormat::kJson);
  ASSERT_TRUE(log.ok()) << log.status();
  Write(**log, 0, 7);
  std::vector<std::string> lines = Lines(ReadAll(dir_.File("a.log")));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "earlier line");
  EXPECT_THAT(lines[1], HasSubstr("\"bytes_from_client\":7,"));
}

TEST_F(WriterTest, WriteLinesWritesPreformattedBytes) {
  auto log = AccessLog::Open(dir_.File("a.log"), AccessLogFormat::kText);
  ASSERT_TRUE(log.ok()) << log.status();
  (*log)->WriteLines("one\ntwo\n");
  (*log)->WriteLines("");
  EXPECT_EQ(ReadAll(dir_.File("a.log")), "one\ntwo\n");
}

TEST_F(WriterTest, MissingDirectoryNamesThePath) {
  std::string path = dir_.File("no/such/dir/access.log");
  auto log = AccessLog::Open(path, AccessLogFormat::kText);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(log.status().message(),
            absl::StrCat("access log \"", path, "\": cannot open: No such file or directory"));
}

TEST_F(WriterTest, DirectoryIsRefused) {
  auto log = AccessLog::Open(dir_.path(), AccessLogFormat::kText);
  ASSERT_FALSE(log.ok());
  EXPECT_THAT(log.status().message(), HasSubstr(absl::StrCat("access log \"", dir_.path(), "\"")));
  EXPECT_THAT(log.status().message(), HasSubstr("directory"));
}

TEST_F(WriterTest, FifoWithoutReaderFailsInsteadOfHanging) {
  std::string path = dir_.File("fifo");
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0) << std::strerror(errno);
  auto log = AccessLog::Open(path, AccessLogFormat::kText);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().message(),
            absl::StrCat("access log \"", path, "\": cannot open: No such device or address"));
}

TEST_F(WriterTest, WriteErrorIsCounted) {
  auto log = AccessLog::Open("/dev/full", AccessLogFormat::kText);
  ASSERT_TRUE(log.ok()) << log.status();
  Write(**log, 0, 1);
  EXPECT_EQ((*log)->write_errors(), 1u);
  EXPECT_EQ((*log)->dropped_lines(), 1u);
  (*log)->WriteLines("a\nb\n");
  EXPECT_EQ((*log)->write_errors(), 2u);
  EXPECT_EQ((*log)->dropped_lines(), 3u);
  ASSERT_TRUE((*log)->Reopen().ok());
  Write(**log, 0, 2);
  EXPECT_EQ((*log)->write_errors(), 3u);
}

// logrotate: move the file, then SIGUSR1.
TEST_F(WriterTest, ReopenAfterRenameStartsANewFile) {
  std::string path = dir_.File("access.log");
  auto log = AccessLog::Open(path, AccessLogFormat::kText);
  ASSERT_TRUE(log.ok()) << log.status();
  for (int i = 0; i < 100; ++i) Write(**log, 0, i);
  ASSERT_EQ(::rename(path.c_str(), dir_.File("access.log.1").c_str()), 0);
  for (int i = 100; i < 150; ++i) Write(**log, 0, i);  // still the renamed file
  ASSERT_TRUE((*log)->Reopen().ok());
  for (int i = 150; i < 200; ++i) Write(**log, 0, i);

  std::vector<std::string> old_lines = Lines(ReadAll(dir_.File("access.log.1")));
  std::vector<std::string> new_lines = Lines(ReadAll(path));
  ASSERT_EQ(old_lines.size(), 150u);
  ASSERT_EQ(new_lines.size(), 50u);
  for (size_t i = 0; i < old_lines.size(); ++i) {
    int t;
    uint64_t seq;
    ASSERT_TRUE(Parse(old_lines[i], &t, &seq)) << old_lines[i];
    EXPECT_EQ(seq, i);
  }
  for (size_t i = 0; i < new_lines.size(); ++i) {
    int t;
    uint64_t seq;
    ASSERT_TRUE(Parse(new_lines[i], &t, &seq)) << new_lines[i];
    EXPECT_EQ(seq, 150 + i);
  }
  EXPECT_EQ((*log)->dropped_lines(), 0u);
}

TEST_F(WriterTest, ReopenKeepsTheFdNumberAndClosesTheOldFile) {
  std::string path = dir_.File("access.log");
  auto log = AccessLog::Open(path, AccessLogFormat::kText);
  ASSERT_TRUE(log.ok()) << log.status();
  int before = OpenFdCount();
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(::rename(path.c_str(), dir_.File(absl::StrCat("access.log.", i)).c_str()), 0);
    ASSERT_TRUE((*log)->Reopen().ok());
  }
  EXPECT_EQ(OpenFdCount(), before);  // no retired fd kept open
}

TEST_F(WriterTest, ReopenFailureKeepsWritingToTheOldFile) {
  ASSERT_EQ(::mkdir(dir_.File("logs").c_str(), 0700), 0);
  std::string path = dir_.File("logs/access.log");
  auto log = AccessLog::Open(path, AccessLogFormat::kText);
  ASSERT_TRUE(log.ok()) << log.status();
  Write(**log, 0, 1);
  ASSERT_EQ(::rename(dir_.File("logs").c_str(), dir_.File("moved").c_str()), 0);
  absl::Status s = (*log)->Reopen();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(),
            absl::StrCat("access log \"", path, "\": cannot open: No such file or directory"));
  Write(**log, 0, 2);
  EXPECT_EQ(Lines(ReadAll(dir_.File("moved/access.log"))).size(), 2u);
  EXPECT_EQ((*log)->dropped_lines(), 0u);
}

// Writers running while the file is moved and reopened: every line lands whole
// in exactly one file, each thread's lines split into a prefix in the old file
// and the rest in the new one, and what a thread writes after Reopen()
// returned is in the new file.
TEST_F(WriterTest, ReopenWhileThreadsWriteLosesNoLine) {
  constexpr int kThreads = 4;
  constexpr int kBefore = 500;  // lines each thread writes before the rotation may start
  constexpr int kAfter = 200;   // lines each thread writes after it saw the reopen done
  std::string path = dir_.File("access.log");
  auto opened = AccessLog::Open(path, AccessLogFormat::kText);
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::shared_ptr<AccessLog> log = *opened;
  std::atomic<int> threads_ready{0};
  std::atomic<bool> reopened{false};
  std::vector<int> total(kThreads, 0);
  std::vector<int> first_after(kThreads, -1);  // first seq written after seeing `reopened`
  std::vector<std::thread> threads;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      int i = 0;
      for (; std::chrono::steady_clock::now() < deadline; ++i) {
        if (first_after[t] < 0 && reopened.load()) first_after[t] = i;
        if (first_after[t] >= 0 && i >= first_after[t] + kAfter) break;
        Write(*log, t, i);
        if (i + 1 == kBefore) threads_ready.fetch_add(1);
      }
      total[t] = i;
    });
  }
  while (threads_ready.load() < kThreads && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  ASSERT_EQ(::rename(path.c_str(), dir_.File("access.log.1").c_str()), 0);
  absl::Status s = log->Reopen();
  reopened.store(true);
  for (auto& th : threads) th.join();
  ASSERT_TRUE(s.ok()) << s;

  std::vector<std::vector<uint64_t>> old_seqs(kThreads), new_seqs(kThreads);
  using Seqs = std::vector<std::vector<uint64_t>>;
  for (const auto& [name, seqs] :
       std::vector<std::pair<std::string, Seqs*>>{{"access.log.1", &old_seqs},
                                                  {"access.log", &new_seqs}}) {
    for (const std::string& line : Lines(ReadAll(dir_.File(name)))) {
      int t;
      uint64_t seq;
      ASSERT_TRUE(Parse(line, &t, &seq)) << "torn or mixed line: " << line;
      ASSERT_LT(t, kThreads);
      (*seqs)[t].push_back(seq);
    }
  }
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_GE(first_after[t], kBefore) << "thread " << t << " timed out";
    std::vector<uint64_t> all = old_seqs[t];
    all.insert(all.end(), new_seqs[t].begin(), new_seqs[t].end());
    ASSERT_EQ(all.size(), static_cast<size_t>(total[t])) << "thread " << t;
    for (int i = 0; i < total[t]; ++i) ASSERT_EQ(all[i], static_cast<uint64_t>(i));
    EXPECT_LE(old_seqs[t].size(), static_cast<size_t>(first_after[t])) << "thread " << t;
    EXPECT_GE(new_seqs[t].size(), static_cast<size_t>(kAfter)) << "thread " << t;
  }
  EXPECT_EQ(log->dropped_lines(), 0u);
}

TEST_F(WriterTest, ConcurrentWritersNeverInterleave) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 1000;
  auto opened = AccessLog::Open(dir_.File("access.log"), AccessLogFormat::kText);
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::shared_ptr<AccessLog> log = *opened;
  // All threads start at once, so their writes really overlap.
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ready.fetch_add(1);
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (ready.load() < kThreads && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::yield();
      }
      for (int i = 0; i < kPerThread; ++i) Write(*log, t, i);
    });
  }
  for (auto& th : threads) th.join();
  std::vector<std::string> lines = Lines(ReadAll(dir_.File("access.log")));
  ASSERT_EQ(lines.size(), static_cast<size_t>(kThreads * kPerThread));
  std::vector<uint64_t> next(kThreads, 0);
  for (const std::string& line : lines) {
    int t;
    uint64_t seq;
    ASSERT_TRUE(Parse(line, &t, &seq)) << "torn or mixed line: " << line;
    ASSERT_LT(t, kThreads);
    EXPECT_EQ(seq, next[t]) << "thread " << t;  // each thread's lines in its order
    next[t] = seq + 1;
  }
}

// A FIFO whose reader is not reading: lines are dropped and counted, the
// writer never waits, and what did go through is whole lines.
TEST_F(WriterTest, FullFifoDropsLinesWithoutBlocking) {
  std::string path = dir_.File("fifo");
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0) << std::strerror(errno);
  int reader = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reader, 0) << std::strerror(errno);
  auto log = AccessLog::Open(path, AccessLogFormat::kText);
  ASSERT_TRUE(log.ok()) << log.status();
  constexpr int kLines = 2000;  // ~300 KB: several times a pipe's 64 KiB
  for (int i = 0; i < kLines; ++i) Write(**log, 0, i);
  std::string got;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(reader, buf, sizeof(buf))) > 0) got.append(buf, n);
  ::close(reader);
  std::vector<std::string> lines = Lines(got);
  for (size_t i = 0; i < lines.size(); ++i) {
    int t;
    uint64_t seq;
    ASSERT_TRUE(Parse(lines[i], &t, &seq)) << lines[i];
    EXPECT_EQ(seq, i);  // the first lines fit; the rest were dropped
  }
  EXPECT_GT((*log)->dropped_lines(), 0u);
  EXPECT_EQ(lines.size() + (*log)->dropped_lines(), static_cast<size_t>(kLines));
  EXPECT_EQ((*log)->write_errors(), 0u);
}

// Puts `fd` in place of stdout until destroyed.
class StdoutSwap {
 public:
  explicit StdoutSwap(int fd) {
    std::fflush(stdout);
    saved_ = ::dup(STDOUT_FILENO);
    ::dup2(fd, STDOUT_FILENO);
  }
  ~StdoutSwap() {
    ::dup2(saved_, STDOUT_FILENO);
    ::close(saved_);
  }

 private:
  int saved_;
};

bool KernelHasPipeNowait() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return false;
  char c = 'x';
  iovec iov{&c, 1};
  bool ok = ::pwritev2(p[1], &iov, 1, -1, RWF_NOWAIT) == 1;
  ::close(p[0]);
  ::close(p[1]);
  return ok;
}

// stdout a blocking pipe nobody drains (a stalled log collector): its flags
// are the process's and stay as they are, yet a write never waits.
TEST_F(WriterTest, StdoutFullPipeDropsLinesWithoutBlocking) {
  if (!KernelHasPipeNowait()) GTEST_SKIP() << "this kernel has no RWF_NOWAIT for pipes";
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  constexpr int kLines = 2000;
  uint64_t dropped = 0, errors = 0;
  std::string path;
  absl::Status reopen;
  {
    StdoutSwap swap(p[1]);
    auto log = AccessLog::Open("stdout", AccessLogFormat::kText);
    if (log.ok()) {
      for (int i = 0; i < kLines; ++i) Write(**log, 0, i);
      dropped = (*log)->dropped_lines();
      errors = (*log)->write_errors();
      path = (*log)->path();
      reopen = (*log)->Reopen();
    }
  }
  ::close(p[1]);
  EXPECT_EQ(::fcntl(p[0], F_GETFL) & O_NONBLOCK, 0);
  std::string got;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof(buf))) > 0) got.append(buf, n);
  ::close(p[0]);
  EXPECT_EQ(path, "stdout");
  EXPECT_TRUE(reopen.ok()) << reopen;
  std::vector<std::string> lines = Lines(got);
  for (const std::string& line : lines) {
    int t;
    uint64_t seq;
    ASSERT_TRUE(Parse(line, &t, &seq)) << line;
  }
  EXPECT_GT(dropped, 0u);
  EXPECT_EQ(lines.size() + dropped, static_cast<size_t>(kLines));
  EXPECT_EQ(errors, 0u);
}

// stdout a socket (journald's stdout stream) whose reader stalls.
TEST_F(WriterTest, StdoutFullSocketDropsLinesWithoutBlocking) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  int small = 16 * 1024;
  ::setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  constexpr int kLines = 2000;
  uint64_t dropped = 0, errors = 0;
  {
    StdoutSwap swap(sv[1]);
    auto log = AccessLog::Open("", AccessLogFormat::kText);  // "" is stdout
    if (log.ok()) {
      for (int i = 0; i < kLines; ++i) Write(**log, 0, i);
      dropped = (*log)->dropped_lines();
      errors = (*log)->write_errors();
    }
  }
  ::shutdown(sv[1], SHUT_WR);
  ::close(sv[1]);
  std::string got;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(sv[0], buf, sizeof(buf))) > 0) got.append(buf, n);
  ::close(sv[0]);
  std::vector<std::string> lines = Lines(got);
  for (const std::string& line : lines) {
    int t;
    uint64_t seq;
    ASSERT_TRUE(Parse(line, &t, &seq)) << line;
  }
  EXPECT_GT(dropped, 0u);
  EXPECT_EQ(lines.size() + dropped, static_cast<size_t>(kLines));
  EXPECT_EQ(errors, 0u);
}

TEST_F(WriterTest, StdoutAndStderrAreNeverClosed) {
  int before = OpenFdCount();
  {
    auto out = AccessLog::Open("stdout", AccessLogFormat::kText);
    auto err = AccessLog::Open("stderr", AccessLogFormat::kJson);
    ASSERT_TRUE(out.ok() && err.ok());
    EXPECT_EQ((*err)->path(), "stderr");
    EXPECT_TRUE((*out)->Reopen().ok());
  }
  EXPECT_EQ(OpenFdCount(), before);
  EXPECT_NE(::fcntl(STDOUT_FILENO, F_GETFD), -1);
  EXPECT_NE(::fcntl(STDERR_FILENO, F_GETFD), -1);
}

// ---- The registry ----

TEST_F(WriterTest, RegistrySharesOneFilePerPath) {
  AccessLogs logs;
  std::string path = dir_.File("shared.log");
  auto text = logs.Get(path, AccessLogFormat::kText);
  ASSERT_TRUE(text.ok()) << text.status();
  int fds = OpenFdCount();
  auto json = logs.Get(path, AccessLogFormat::kJson);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(OpenFdCount(), fds);  // not opened twice
  EXPECT_EQ(logs.open_files(), 1u);
  EXPECT_NE(text->get(), json->get());
  Write(**text, 0, 1);
  Write(**json, 0, 2);
  std::vector<std::string> lines = Lines(ReadAll(path));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines[0], ::testing::StartsWith("ts="));
  EXPECT_THAT(lines[1], ::testing::StartsWith("{\"ts\":"));
}

TEST_F(WriterTest, RegistrySharesOtherSpellingsOfOneFile) {
  AccessLogs logs;
  std::string path = dir_.File("real.log");
  ASSERT_EQ(::symlink(path.c_str(), dir_.File("link.log").c_str()), 0);
  auto a = logs.Get(path, AccessLogFormat::kText);
  ASSERT_TRUE(a.ok()) << a.status();
  int fds = OpenFdCount();
  auto b = logs.Get(dir_.File("link.log"), AccessLogFormat::kText);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(OpenFdCount(), fds);
  EXPECT_EQ(logs.open_files(), 1u);
  EXPECT_EQ((*b)->path(), path);
  // One file: a reopen through either moves both.
  ASSERT_EQ(::rename(path.c_str(), dir_.File("real.log.1").c_str()), 0);
  ASSERT_TRUE(logs.ReopenAll().ok());
  Write(**b, 0, 1);
  EXPECT_EQ(Lines(ReadAll(path)).size(), 1u);
}

TEST_F(WriterTest, RegistryClosesAFileNoRuleUses) {
  AccessLogs logs;
  int before = OpenFdCount();
  {
    auto log = logs.Get("/dev/full", AccessLogFormat::kText);
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_EQ(OpenFdCount(), before + 1);
    Write(**log, 0, 1);
  }
  EXPECT_EQ(OpenFdCount(), before);
  EXPECT_EQ(logs.open_files(), 0u);
  // The totals keep what the closed file counted and go on from there.
  EXPECT_EQ(logs.write_errors(), 1u);
  EXPECT_EQ(logs.dropped_lines(), 1u);
  auto again = logs.Get("/dev/full", AccessLogFormat::kText);
  ASSERT_TRUE(again.ok()) << again.status();
  Write(**again, 0, 2);
  EXPECT_EQ((*again)->write_errors(), 2u);
  EXPECT_EQ(logs.write_errors(), 2u);
  EXPECT_EQ(logs.dropped_lines(), 2u);
}

TEST_F(WriterTest, RegistryGetErrorNamesThePath) {
  AccessLogs logs;
  std::string path = dir_.File("missing/a.log");
  auto log = logs.Get(path, AccessLogFormat::kText);
  ASSERT_FALSE(log.ok());
  EXPECT_THAT(log.status().message(), HasSubstr(absl::StrCat("access log \"", path, "\"")));
  EXPECT_EQ(logs.open_files(), 0u);
}

TEST_F(WriterTest, ReopenAllMovesEveryFileAndNamesEveryFailure) {
  AccessLogs logs;
  ASSERT_EQ(::mkdir(dir_.File("a").c_str(), 0700), 0);
  ASSERT_EQ(::mkdir(dir_.File("b").c_str(), 0700), 0);
  auto a = logs.Get(dir_.File("a/x.log"), AccessLogFormat::kText);
  auto b = logs.Get(dir_.File("b/x.log"), AccessLogFormat::kClf);
  auto out = logs.Get("stdout", AccessLogFormat::kJson);
  ASSERT_TRUE(a.ok() && b.ok() && out.ok());
  ASSERT_EQ(::rename(dir_.File("a/x.log").c_str(), dir_.File("a/x.log.1").c_str()), 0);
  ASSERT_EQ(::rename(dir_.File("b").c_str(), dir_.File("b-moved").c_str()), 0);
  absl::Status s = logs.ReopenAll();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("access log \"", dir_.File("b/x.log"),
                                                  "\": cannot open: No such file or directory")));
  EXPECT_THAT(s.message(), ::testing::Not(HasSubstr("a/x.log")));
  Write(**a, 0, 1);
  Write(**b, 0, 2);
  EXPECT_EQ(Lines(ReadAll(dir_.File("a/x.log"))).size(), 1u);        // reopened
  EXPECT_EQ(Lines(ReadAll(dir_.File("b-moved/x.log"))).size(), 1u);  // kept the old file
}

}  // namespace
}  // namespace ferry::proxy
