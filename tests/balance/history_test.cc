#include "pkg/balance/history.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::balance {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr int64_t kSecond = 1'000'000'000;
constexpr int64_t kMinute = 60 * kSecond;
constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

// ---- DecayingCounter -------------------------------------------------------

TEST(DecayingCounterTest, NoDecayIsAPlainSum) {
  DecayingCounter c(0);
  c.Add(100, 0);
  c.Add(250, 10 * kMinute);
  c.Add(1, 1000 * kMinute);
  EXPECT_EQ(c.Value(1000 * kMinute), 351.0);
  EXPECT_EQ(c.Value(int64_t{1} << 62), 351.0);
}

TEST(DecayingCounterTest, NoDecayIsExactUpTo2To53) {
  DecayingCounter c(0);
  const uint64_t big = (uint64_t{1} << 53) - 1000;
  c.Add(big, 0);
  for (int i = 0; i < 1000; ++i) c.Add(1, i);
  EXPECT_EQ(ToByteCount(c.Value(1000)), uint64_t{1} << 53);
}

TEST(DecayingCounterTest, HalvesAfterOneHalfLife) {
  DecayingCounter c(10 * kMinute);
  c.Add(1000, 5 * kSecond);
  EXPECT_DOUBLE_EQ(c.Value(5 * kSecond), 1000.0);
  EXPECT_DOUBLE_EQ(c.Value(5 * kSecond + 10 * kMinute), 500.0);
  EXPECT_DOUBLE_EQ(c.Value(5 * kSecond + 20 * kMinute), 250.0);
  EXPECT_DOUBLE_EQ(c.Value(5 * kSecond + 5 * kMinute), 1000.0 / std::sqrt(2.0));
}

TEST(DecayingCounterTest, AddsAtDifferentTimesDecayEachFromItsOwnTime) {
  DecayingCounter c(kMinute);
  c.Add(800, 0);            // at 3 minutes: 100
  c.Add(400, kMinute);      // at 3 minutes: 100
  c.Add(100, 3 * kMinute);  // at 3 minutes: 100
  EXPECT_DOUBLE_EQ(c.Value(3 * kMinute), 300.0);
  EXPECT_DOUBLE_EQ(c.Value(4 * kMinute), 150.0);
}

TEST(DecayingCounterTest, ValueDoesNotChangeTheCounter) {
  DecayingCounter c(kMinute);
  c.Add(1024, 0);
  EXPECT_DOUBLE_EQ(c.Value(10 * kMinute), 1.0);
  EXPECT_DOUBLE_EQ(c.Value(kMinute), 512.0);
}

TEST(DecayingCounterTest, EarlierNowCountsAsTheLastTime) {
  DecayingCounter c(kMinute);
  c.Add(100, 10 * kMinute);
  c.Add(100, 5 * kMinute);  // a clock read before the last Add
  EXPECT_DOUBLE_EQ(c.Value(10 * kMinute), 200.0);
  EXPECT_DOUBLE_EQ(c.Value(0), 200.0);
  EXPECT_DOUBLE_EQ(c.Value(11 * kMinute), 100.0);
}

TEST(DecayingCounterTest, StableOverAMillionAddsAcrossAYear) {
  // A steady load of B bytes every step with decay converges to
  // B / (1 - 2^(-step/half_life)); a year of steps must land on it.
  const int64_t half_life = 10 * kMinute;
  const int64_t step = 31 * kSecond;
  DecayingCounter c(half_life);
  int64_t now = 0;
  for (int i = 0; i < 1'000'000; ++i) {
    now += step;
    c.Add(1000, now);
  }
  double expected = 1000.0 / (1.0 - std::exp2(-static_cast<double>(step) / half_life));
  EXPECT_NEAR(c.Value(now), expected, expected * 1e-9);
}

TEST(DecayingCounterTest, LongIdleDecaysToZeroNotNan) {
  DecayingCounter c(kSecond);
  c.Add(kMax, 0);
  double v = c.Value(std::numeric_limits<int64_t>::max());
  EXPECT_EQ(v, 0.0);
  c.Add(7, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(c.Value(std::numeric_limits<int64_t>::max()), 7.0);
  // Time from far in the past to far in the future does not overflow.
  DecayingCounter d(kSecond);
  d.Add(5, std::numeric_limits<int64_t>::min());
  EXPECT_EQ(d.Value(std::numeric_limits<int64_t>::max()), 0.0);
}

TEST(DecayingCounterTest, SetReplacesTheValueAtThatTime) {
  DecayingCounter c(kMinute);
  c.Add(999, 0);
  c.Set(64, 2 * kMinute);
  EXPECT_DOUBLE_EQ(c.Value(2 * kMinute), 64.0);
  EXPECT_DOUBLE_EQ(c.Value(3 * kMinute), 32.0);
  c.Set(-5, 3 * kMinute);
  EXPECT_EQ(c.Value(3 * kMinute), 0.0);
  c.Set(std::nan(""), 3 * kMinute);
  EXPECT_EQ(c.Value(4 * kMinute), 0.0);
  c.Set(INFINITY, 3 * kMinute);
  EXPECT_FALSE(std::isnan(c.Value(std::numeric_limits<int64_t>::max())));
}

TEST(DecayingCounterTest, NegativeHalfLifeMeansNoDecay) {
  DecayingCounter c(-kSecond);
  EXPECT_EQ(c.half_life_nanos(), 0);
  c.Add(10, 0);
  EXPECT_EQ(c.Value(kMinute), 10.0);
}

// ---- StartValue, ToByteCount -----------------------------------------------

TEST(StartValueTest, LowestAmongPresent) {
  EXPECT_EQ(StartValue({}), 0.0);
  EXPECT_EQ(StartValue({500.0}), 500.0);
  EXPECT_EQ(StartValue({900.0, 120.5, 4000.0}), 120.5);
  EXPECT_EQ(StartValue({0.0, 10.0}), 0.0);
  EXPECT_EQ(StartValue({std::nan(""), 30.0}), 30.0);
}

TEST(StartValueTest, NewEndpointJoinsAtTheLowestDecayedValue) {
  DecayingCounter a(kMinute), b(kMinute);
  a.Add(4000, 0);
  b.Add(1000, 0);
  DecayingCounter joined(kMinute);
  joined.Set(StartValue({a.Value(kMinute), b.Value(kMinute)}), kMinute);
  EXPECT_DOUBLE_EQ(joined.Value(kMinute), 500.0);
  EXPECT_DOUBLE_EQ(joined.Value(2 * kMinute), b.Value(2 * kMinute));
}

TEST(ToByteCountTest, RoundsAndClamps) {
  EXPECT_EQ(ToByteCount(0.0), 0u);
  EXPECT_EQ(ToByteCount(-3.0), 0u);
  EXPECT_EQ(ToByteCount(std::nan("")), 0u);
  EXPECT_EQ(ToByteCount(2.4), 2u);
  EXPECT_EQ(ToByteCount(2.6), 3u);
  EXPECT_EQ(ToByteCount(9007199254740992.0), uint64_t{1} << 53);
  EXPECT_EQ(ToByteCount(18446744073709551616.0), kMax);
  EXPECT_EQ(ToByteCount(1e300), kMax);
  EXPECT_EQ(ToByteCount(INFINITY), kMax);
}

// ---- Keys and byte counts --------------------------------------------------

struct KeyCase {
  std::string text;
  std::string canonical;  // empty: an error containing `error`
  std::string error;
};

TEST(CanonicalHistoryKeyTest, Table) {
  const std::vector<KeyCase> cases = {
      {"10.0.0.7:80", "10.0.0.7:80", ""},
      {"[::1]:443", "[::1]:443", ""},
      {"[2001:DB8:0:0::1]:80", "[2001:db8::1]:80", ""},
      {"[::ffff:10.0.0.7]:80", "10.0.0.7:80", ""},
      {"unix:/run/app.sock", "unix:/run/app.sock", ""},
      {"10.0.0.7", "10.0.0.7", ""},
      {"::1", "::1", ""},
      {"[::1]", "::1", ""},
      {"2001:DB8::0:1", "2001:db8::1", ""},
      {"Web.Example.COM", "web.example.com", ""},
      {"web.example.com.", "web.example.com", ""},
      {"", "", "empty endpoint"},
      {"10.0.0.7:70000", "", "port 70000 out of range"},
      {"10.0.0.7:", "", "missing port"},
      {"10.0.0.7:http", "", "bad port \"http\""},
      {":80", "", "missing host in \":80\""},
      {"web.example.com:80", "", "is not an endpoint key (IP:PORT)"},
      {"10.0.0.300", "", "bad IPv4 address \"10.0.0.300\""},
      {"10.0.0.300:80", "", "bad IPv4 address \"10.0.0.300\""},
      {"::g", "", "bad IPv6 address \"::g\""},
      {"[::g]", "", "bad IPv6 address \"::g\""},
      {"[::1]80", "", "missing port"},
      {"[::1", "", "missing ']'"},
      {"bad_host!", "", "bad host name \"bad_host!\""},
      {"-web", "", "bad host name"},
      {"unix:", "", "empty unix socket path"},
      {"unix:/a b", "", "holds a space or '#'"},
      {std::string("10.0.0.7\0junk:80", 16), "", "control character"},
  };
  for (const KeyCase& c : cases) {
    auto got = CanonicalHistoryKey(c.text);
    if (c.canonical.empty()) {
      ASSERT_FALSE(got.ok()) << c.text << " gave " << *got;
      EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
      EXPECT_THAT(std::string(got.status().message()), HasSubstr(c.error)) << c.text;
    } else {
      ASSERT_TRUE(got.ok()) << c.text << ": " << got.status();
      EXPECT_EQ(*got, c.canonical) << c.text;
    }
  }
}

TEST(ParseByteCountTest, Table) {
  EXPECT_EQ(*ParseByteCount("0"), 0u);
  EXPECT_EQ(*ParseByteCount("007"), 7u);
  EXPECT_EQ(*ParseByteCount("18446744073709551615"), kMax);
  EXPECT_EQ(ParseByteCount("18446744073709551616").status().message(),
            "byte count \"18446744073709551616\" larger than 18446744073709551615");
  EXPECT_EQ(ParseByteCount("99999999999999999999999").status().message(),
            "byte count \"99999999999999999999999\" larger than 18446744073709551615");
  EXPECT_EQ(ParseByteCount("-5").status().message(), "negative byte count \"-5\"");
  EXPECT_EQ(ParseByteCount("+5").status().message(), "bad byte count \"+5\" (decimal digits only)");
  EXPECT_EQ(ParseByteCount("12x").status().message(),
            "bad byte count \"12x\" (decimal digits only)");
  EXPECT_EQ(ParseByteCount("0x10").status().message(),
            "bad byte count \"0x10\" (decimal digits only)");
  EXPECT_EQ(ParseByteCount("1.5").status().message(),
            "bad byte count \"1.5\" (decimal digits only)");
  EXPECT_EQ(ParseByteCount("").status().message(), "missing byte count");
}

// ---- ParseHistoryFile --------------------------------------------------------

TEST(ParseHistoryFileTest, ValidLinesCommentsBlanksAndCrlf) {
  ParsedHistory h = ParseHistoryFile(
      "# written by tcp-pf\r\n"
      "\r\n"
      "10.0.0.7:80 1234\r\n"
      "  [2001:db8::1]:443\t\t99   # a trailing comment\n"
      "unix:/run/app.sock 0\n"
      "10.0.0.9 18446744073709551615\n"
      "web.example.com 5#no space before the comment\n"
      "   \t \n"
      "[::1] 6");  // no newline at the end
  EXPECT_THAT(h.problems, IsEmpty());
  EXPECT_THAT(h.entries,
              ElementsAre(HistoryEntry{"10.0.0.7:80", 1234}, HistoryEntry{"[2001:db8::1]:443", 99},
                          HistoryEntry{"unix:/run/app.sock", 0}, HistoryEntry{"10.0.0.9", kMax},
                          HistoryEntry{"web.example.com", 5}, HistoryEntry{"::1", 6}));
}

TEST(ParseHistoryFileTest, EmptyText) {
  ParsedHistory h = ParseHistoryFile("");
  EXPECT_THAT(h.entries, IsEmpty());
  EXPECT_THAT(h.problems, IsEmpty());
}

TEST(ParseHistoryFileTest, EveryCorruptFormIsReportedWithItsLineAndSkipped) {
  ParsedHistory h = ParseHistoryFile(
      "10.0.0.1:80 100\n"                   // 1 ok
      "10.0.0.2:80\n"                       // 2 no bytes
      "10.0.0.3:80 -5\n"                    // 3 negative
      "10.0.0.4:80 18446744073709551616\n"  // 4 overflow
      "10.0.0.5:80 12abc\n"                 // 5 trailing garbage
      "10.0.0.6:80 1 2\n"                   // 6 extra field
      "10.0.0.7:99999 1\n"                  // 7 bad port
      "web.example.com:80 1\n"              // 8 host name with port
      "10.0.0.300 1\n"                      // 9 bad IPv4
      "[::zz]:80 1\r\n"                     // 10 bad IPv6, CRLF
      "bad!host 1\n"                        // 11 bad name
      "10.0.0.8:80 0x10\n"                  // 12 hex
      "10.0.0.9:80 100\n");                 // 13 ok
  EXPECT_THAT(h.entries,
              ElementsAre(HistoryEntry{"10.0.0.1:80", 100}, HistoryEntry{"10.0.0.9:80", 100}));
  std::vector<std::string> problems;
  for (const HistoryProblem& p : h.problems) problems.push_back(p.ToString());
  EXPECT_THAT(problems,
              ElementsAre("line 2: missing byte count after \"10.0.0.2:80\"",
                          "line 3: negative byte count \"-5\"",
                          "line 4: byte count \"18446744073709551616\" larger than "
                          "18446744073709551615",
                          "line 5: bad byte count \"12abc\" (decimal digits only)",
                          "line 6: unexpected \"2\" after the byte count",
                          "line 7: bad endpoint \"10.0.0.7:99999\": port 99999 out of range",
                          "line 8: bad endpoint \"web.example.com:80\": \"web.example.com:80\" is "
                          "not an endpoint key (IP:PORT); a host name stands alone, without a "
                          "port",
                          "line 9: bad endpoint \"10.0.0.300\": bad IPv4 address \"10.0.0.300\"",
                          "line 10: bad endpoint \"[::zz]:80\": bad IPv6 address \"::zz\"",
                          "line 11: bad endpoint \"bad!host\": bad host name \"bad!host\"",
                          "line 12: bad byte count \"0x10\" (decimal digits only)"));
}

TEST(ParseHistoryFileTest, BinaryGarbageNeverCrashes) {
  std::string junk;
  for (int i = 0; i < 4096; ++i) junk.push_back(static_cast<char>((i * 131 + 7) % 256));
  ParsedHistory h = ParseHistoryFile(junk);
  EXPECT_FALSE(h.problems.empty());
  for (const HistoryProblem& p : h.problems) EXPECT_GT(p.line, 0);
}

TEST(ParseHistoryFileTest, DuplicateLastWinsAndIsReported) {
  ParsedHistory h = ParseHistoryFile(
      "10.0.0.1:80 100\n"
      "10.0.0.2:80 7\n"
      "[::ffff:10.0.0.1]:80 300\n");  // the same endpoint, written differently
  EXPECT_THAT(h.entries,
              ElementsAre(HistoryEntry{"10.0.0.1:80", 300}, HistoryEntry{"10.0.0.2:80", 7}));
  ASSERT_EQ(h.problems.size(), 1u);
  EXPECT_EQ(h.problems[0].ToString(),
            "line 3: duplicate \"10.0.0.1:80\" (also on line 1); the last one counts");
}

TEST(ParseHistoryFileTest, HostLineAppliesToEveryEndpointOnTheHost) {
  ParsedHistory h = ParseHistoryFile(
      "10.0.0.7 5000\n"
      "10.0.0.7:443 20\n"
      "::1 70\n"
      "web.example.com 900\n"
      "unix:/run/a.sock 3\n");
  EXPECT_EQ(h.Lookup("10.0.0.7:80"), 5000u);
  EXPECT_EQ(h.Lookup("10.0.0.7:8080"), 5000u);
  EXPECT_EQ(h.Lookup("10.0.0.7:443"), 20u);  // the more specific line
  EXPECT_EQ(h.Lookup("[::1]:80"), 70u);
  EXPECT_EQ(h.Lookup("10.0.0.8:80"), std::nullopt);
  EXPECT_EQ(h.Lookup("10.0.0.8:80", "Web.Example.com."), 900u);  // resolved from the name
  EXPECT_EQ(h.Lookup("10.0.0.7:80", "web.example.com"), 5000u);  // the IP line is closer
  EXPECT_EQ(h.Lookup("unix:/run/a.sock"), 3u);
  EXPECT_EQ(h.Lookup("unix:/run/b.sock"), std::nullopt);
}

// ---- FormatHistoryFile -------------------------------------------------------

TEST(FormatHistoryFileTest, HeaderThenSortedLines) {
  std::string text = FormatHistoryFile({{"10.0.0.9:80", 5}, {"10.0.0.10:80", kMax}, {"::1", 0}});
  EXPECT_EQ(text.substr(0, 2), "# ");
  EXPECT_THAT(text, HasSubstr("\n10.0.0.10:80 18446744073709551615\n10.0.0.9:80 5\n::1 0\n"));
  EXPECT_EQ(text.back(), '\n');
}

TEST(FormatHistoryFileTest, RoundTripIsExact) {
  std::vector<HistoryEntry> entries = {
      {"[2001:db8::1]:443", 1},     {"10.0.0.1:80", 0},          {"10.0.0.1", 42},
      {"unix:/run/app.sock", kMax}, {"web.example.com", 123456}, {"::1", 9007199254740993u},
  };
  std::string text = FormatHistoryFile(entries);
  ParsedHistory parsed = ParseHistoryFile(text);
  EXPECT_THAT(parsed.problems, IsEmpty());
  std::vector<HistoryEntry> sorted = entries;
  std::sort(sorted.begin(), sorted.end(),
            [](const HistoryEntry& a, const HistoryEntry& b) { return a.endpoint < b.endpoint; });
  EXPECT_EQ(parsed.entries, sorted);
  EXPECT_EQ(FormatHistoryFile(parsed.entries), text);
}

// ---- HistoryFile ----------------------------------------------------------------

class HistoryFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ferry_history_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/web.history";
  }
  void TearDown() override {
    ::chmod(dir_.c_str(), 0755);
    std::string cmd = "rm -rf '" + dir_ + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }
  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  static void Write(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
  }
  std::vector<std::string> DirEntries() const {
    std::vector<std::string> names;
    DIR* d = ::opendir(dir_.c_str());
    if (d == nullptr) return names;
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    return names;
  }

  std::string dir_;
  std::string path_;
};

TEST_F(HistoryFileTest, MissingFileIsEmpty) {
  auto h = HistoryFile::Load(path_);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_THAT(h->entries, IsEmpty());
  EXPECT_THAT(h->problems, IsEmpty());
}

TEST_F(HistoryFileTest, CorruptFileGivesProblemsAndTheGoodLines) {
  Write(path_, "10.0.0.1:80 5\ngarbage here\n10.0.0.2:80 x\n");
  auto h = HistoryFile::Load(path_);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_THAT(h->entries, ElementsAre(HistoryEntry{"10.0.0.1:80", 5}));
  ASSERT_EQ(h->problems.size(), 2u);
  EXPECT_EQ(h->problems[0].line, 2);
  EXPECT_EQ(h->problems[1].line, 3);
}

TEST_F(HistoryFileTest, UnreadableIsAnErrorNamingThePath) {
  ASSERT_EQ(::mkdir(path_.c_str(), 0755), 0);  // a directory where the file should be
  auto h = HistoryFile::Load(path_);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(std::string(h.status().message()),
            "cannot read history file \"" + path_ + "\": Is a directory");
}

TEST_F(HistoryFileTest, SaveWritesExactContentAndLeavesNoTempFile) {
  std::vector<HistoryEntry> entries = {{"10.0.0.2:80", 20}, {"10.0.0.1:80", 10}};
  ASSERT_TRUE(HistoryFile::SaveAtomically(path_, entries).ok());
  EXPECT_EQ(Read(path_), FormatHistoryFile(entries));
  EXPECT_THAT(DirEntries(), ElementsAre("web.history"));
  auto loaded = HistoryFile::Load(path_);
  ASSERT_TRUE(loaded.ok());
  EXPECT_THAT(loaded->entries,
              ElementsAre(HistoryEntry{"10.0.0.1:80", 10}, HistoryEntry{"10.0.0.2:80", 20}));
  // A second save replaces the file (a new inode: the rename, not a rewrite).
  struct stat before, after;
  ASSERT_EQ(::stat(path_.c_str(), &before), 0);
  ASSERT_TRUE(HistoryFile::SaveAtomically(path_, {{"10.0.0.1:80", 11}}).ok());
  ASSERT_EQ(::stat(path_.c_str(), &after), 0);
  EXPECT_NE(before.st_ino, after.st_ino);
  EXPECT_EQ(Read(path_), FormatHistoryFile({{"10.0.0.1:80", 11}}));
  EXPECT_THAT(DirEntries(), ElementsAre("web.history"));
}

TEST_F(HistoryFileTest, RelativePathSavesInTheWorkingDirectory) {
  char cwd[4096];
  ASSERT_NE(::getcwd(cwd, sizeof(cwd)), nullptr);
  ASSERT_EQ(::chdir(dir_.c_str()), 0);
  absl::Status status = HistoryFile::SaveAtomically("rel.history", {{"10.0.0.1:80", 1}});
  ASSERT_EQ(::chdir(cwd), 0);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(Read(dir_ + "/rel.history"), FormatHistoryFile({{"10.0.0.1:80", 1}}));
}

TEST_F(HistoryFileTest, FailedSaveLeavesTheOldFileIntact) {
  const std::string old_text = "10.0.0.1:80 5\n";
  Write(path_, old_text);
  // The temporary file's name is taken by a directory: the create fails (for
  // root too, unlike a read-only directory).
  const std::string tmp = absl::StrCat(path_, ".tmp.", ::getpid());
  ASSERT_EQ(::mkdir(tmp.c_str(), 0755), 0);
  absl::Status status = HistoryFile::SaveAtomically(path_, {{"10.0.0.1:80", 6}});
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(std::string(status.message()), "cannot create \"" + tmp + "\": Is a directory");
  EXPECT_EQ(Read(path_), old_text);
  struct stat st;
  EXPECT_EQ(::stat(tmp.c_str(), &st), 0) << "not ours to remove";
}

TEST_F(HistoryFileTest, FailedSaveInReadOnlyDirectory) {
  if (::geteuid() == 0) GTEST_SKIP() << "root writes into read-only directories";
  const std::string old_text = "10.0.0.1:80 5\n";
  Write(path_, old_text);
  ASSERT_EQ(::chmod(dir_.c_str(), 0555), 0);
  absl::Status status = HistoryFile::SaveAtomically(path_, {{"10.0.0.1:80", 6}});
  ::chmod(dir_.c_str(), 0755);
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr("Permission denied"));
  EXPECT_THAT(std::string(status.message()), HasSubstr(path_ + ".tmp."));
  EXPECT_EQ(Read(path_), old_text);
  EXPECT_THAT(DirEntries(), ElementsAre("web.history"));
}

TEST_F(HistoryFileTest, SaveIntoMissingDirectoryNamesThePath) {
  std::string path = dir_ + "/no/such/dir/h";
  absl::Status status = HistoryFile::SaveAtomically(path, {});
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr(dir_ + "/no/such/dir/h.tmp."));
  EXPECT_THAT(std::string(status.message()), HasSubstr("No such file or directory"));
}

TEST_F(HistoryFileTest, SaveRefusesKeysTheFileCannotHold) {
  EXPECT_EQ(HistoryFile::SaveAtomically(path_, {{"10.0.0.1:80 extra", 1}}).message(),
            "history entry \"10.0.0.1:80 extra\": endpoint \"10.0.0.1:80 extra\" holds a space "
            "or '#' (not writable in the file)");
  EXPECT_EQ(HistoryFile::SaveAtomically(path_, {{"[::ffff:10.0.0.1]:80", 1}}).message(),
            "history entry \"[::ffff:10.0.0.1]:80\" is not canonical (\"10.0.0.1:80\")");
  EXPECT_EQ(HistoryFile::SaveAtomically(path_, {{"10.0.0.1:80", 1}, {"10.0.0.1:80", 2}}).message(),
            "history entry \"10.0.0.1:80\" given twice");
  EXPECT_THAT(DirEntries(), IsEmpty());
}

// ---- HistoryLock ----------------------------------------------------------------

TEST_F(HistoryFileTest, SecondLockFailsUntilTheFirstIsReleased) {
  {
    auto first = HistoryLock::TryLock(path_);
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_EQ(first->lock_path(), path_ + ".lock");
    auto second = HistoryLock::TryLock(path_);
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(std::string(second.status().message()),
              absl::StrCat("history file \"", path_, "\" is held by another process (pid ",
                           ::getpid(), ")"));
    // Saving under the lock keeps the lock: it is on the sidecar, not the file.
    ASSERT_TRUE(HistoryFile::SaveAtomically(path_, {{"10.0.0.1:80", 1}}).ok());
    EXPECT_FALSE(HistoryLock::TryLock(path_).ok());
    HistoryLock moved = *std::move(first);
    EXPECT_FALSE(HistoryLock::TryLock(path_).ok());
  }
  EXPECT_TRUE(HistoryLock::TryLock(path_).ok());
}

TEST_F(HistoryFileTest, LockHeldByAnotherDescriptionWithoutPid) {
  // Another holder that wrote no pid (yet): the message just says held.
  int fd = ::open(HistoryLock::LockPath(path_).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  auto lock = HistoryLock::TryLock(path_);
  ::close(fd);
  ASSERT_FALSE(lock.ok());
  EXPECT_EQ(std::string(lock.status().message()),
            "history file \"" + path_ + "\" is held by another process");
}

TEST_F(HistoryFileTest, LockInMissingDirectoryNamesTheLockFile) {
  auto lock = HistoryLock::TryLock(dir_ + "/missing/h");
  ASSERT_FALSE(lock.ok());
  EXPECT_EQ(std::string(lock.status().message()),
            "cannot open lock file \"" + dir_ + "/missing/h.lock\": No such file or directory");
}

}  // namespace
}  // namespace ferry::balance
