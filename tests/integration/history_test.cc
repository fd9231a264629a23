// `ferry history show|set|reset`, run as the real binary on files in a fresh
// temporary directory: output and file content checked line by line, exit
// status 0 (done), 1 (a file problem or a held lock) or 2 (usage), and the
// refusal while another process holds FILE.lock (this test process, the way
// a running ferry would).

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/child_process.h"
#include "tests/testing/sockets.h"

namespace ferry::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

using Result = FerryRun;

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> out = absl::StrSplit(s, '\n');
  if (!out.empty() && out.back().empty()) out.pop_back();
  return out;
}

// The lines of a history file that are not comments.
std::vector<std::string> DataLines(const std::string& s) {
  std::vector<std::string> out;
  for (const std::string& line : Lines(s)) {
    if (!line.empty() && line[0] != '#') out.push_back(line);
  }
  return out;
}

class HistoryCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ferry_history_cmd.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    file_ = dir_ + "/web.history";
  }
  void TearDown() override {
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
  static bool Exists(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0;
  }

  std::string dir_;
  std::string file_;
};

TEST_F(HistoryCommandTest, SetCreatesTheFileAndShowListsFewestBytesFirst) {
  Result r = RunFerry({"history", "set", file_, "10.0.0.1:80", "500"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  ASSERT_EQ(RunFerry({"history", "set", file_, "[2001:DB8::1]:443", "18446744073709551615"}).code,
            0);
  ASSERT_EQ(RunFerry({"history", "set", file_, "10.0.0.2", "20"}).code, 0);
  ASSERT_EQ(RunFerry({"history", "set", file_, "unix:/run/app.sock", "7"}).code, 0);
  ASSERT_EQ(RunFerry({"history", "set", file_, "10.0.0.1:80", "600"}).code, 0);  // replaces

  EXPECT_THAT(DataLines(Read(file_)),
              ElementsAre("10.0.0.1:80 600", "10.0.0.2 20",
                          "[2001:db8::1]:443 18446744073709551615", "unix:/run/app.sock 7"));
  EXPECT_FALSE(Exists(file_ + ".tmp." + std::to_string(::getpid())));

  r = RunFerry({"history", "show", file_});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_THAT(Lines(r.out), ElementsAre("unix:/run/app.sock 7", "10.0.0.2 20", "10.0.0.1:80 600",
                                        "[2001:db8::1]:443 18446744073709551615"));
}

TEST_F(HistoryCommandTest, ResetOneEndpointThenAll) {
  Write(file_, "# tcp-pf hosts\r\n10.0.0.1:80 100\r\n10.0.0.2:80 200\r\n10.0.0.3 300\r\n");
  Result r = RunFerry({"history", "reset", file_, "10.0.0.2:80"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(DataLines(Read(file_)),
              ElementsAre("10.0.0.1:80 100", "10.0.0.2:80 0", "10.0.0.3 300"));
  r = RunFerry({"history", "reset", file_});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(DataLines(Read(file_)), ElementsAre("10.0.0.1:80 0", "10.0.0.2:80 0", "10.0.0.3 0"));
}

TEST_F(HistoryCommandTest, ResetOfAnEndpointNotInTheFileFails) {
  Write(file_, "10.0.0.1:80 100\n");
  Result r = RunFerry({"history", "reset", file_, "10.0.0.9:80"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err,
            absl::StrCat("ferry history: no entry for \"10.0.0.9:80\" in \"", file_, "\"\n"));
  EXPECT_EQ(Read(file_), "10.0.0.1:80 100\n");
}

TEST_F(HistoryCommandTest, ShowReportsBadLinesWithTheirNumbers) {
  Write(file_,
        "10.0.0.1:80 100\n"
        "10.0.0.2:80 -5\n"
        "# a comment\n"
        "10.0.0.3:80 99999999999999999999\n"
        "10.0.0.4:80 40 # fine\n");
  Result r = RunFerry({"history", "show", file_});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(Lines(r.out), ElementsAre("10.0.0.4:80 40", "10.0.0.1:80 100"));
  EXPECT_THAT(Lines(r.err),
              ElementsAre(file_ + ":2: negative byte count \"-5\"",
                          file_ + ":4: byte count \"99999999999999999999\" larger than "
                                  "18446744073709551615"));
}

TEST_F(HistoryCommandTest, SetRefusesAFileWithBadLinesAndLeavesIt) {
  const std::string text = "10.0.0.1:80 100\nnot-a-line\n";
  Write(file_, text);
  Result r = RunFerry({"history", "set", file_, "10.0.0.1:80", "5"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr(file_ + ":2: missing byte count after \"not-a-line\"\n"));
  EXPECT_THAT(r.err, HasSubstr("\"" + file_ + "\" has bad lines"));
  EXPECT_EQ(Read(file_), text);
}

TEST_F(HistoryCommandTest, SetAndResetRefuseWhileTheLockIsHeld) {
  const std::string text = "10.0.0.1:80 100\n";
  Write(file_, text);
  // Hold the lock the way a running ferry does: flock on FILE.lock, pid inside.
  int fd = ::open((file_ + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  std::string pid = absl::StrCat(::getpid(), "\n");
  ASSERT_EQ(::write(fd, pid.data(), pid.size()), static_cast<ssize_t>(pid.size()));
  const std::string held = absl::StrCat("ferry history: history file \"", file_,
                                        "\" is held by another process (pid ", ::getpid(), ")\n");

  Result set = RunFerry({"history", "set", file_, "10.0.0.1:80", "5"});
  Result reset_one = RunFerry({"history", "reset", file_, "10.0.0.1:80"});
  Result reset_all = RunFerry({"history", "reset", file_});
  Result show = RunFerry({"history", "show", file_});  // reading needs no lock
  ::close(fd);

  EXPECT_EQ(set.code, 1);
  EXPECT_EQ(set.err, held);
  EXPECT_EQ(reset_one.code, 1);
  EXPECT_EQ(reset_one.err, held);
  EXPECT_EQ(reset_all.code, 1);
  EXPECT_EQ(reset_all.err, held);
  EXPECT_EQ(Read(file_), text);
  EXPECT_EQ(show.code, 0) << show.err;
  EXPECT_EQ(show.out, "10.0.0.1:80 100\n");

  // Released: the same edit goes through.
  Result again = RunFerry({"history", "set", file_, "10.0.0.1:80", "5"});
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_THAT(DataLines(Read(file_)), ElementsAre("10.0.0.1:80 5"));
}

TEST_F(HistoryCommandTest, MissingAndUnreadableFiles) {
  Result show = RunFerry({"history", "show", file_});
  EXPECT_EQ(show.code, 1);
  EXPECT_EQ(show.err, "ferry history: \"" + file_ + "\" does not exist\n");
  Result reset = RunFerry({"history", "reset", file_});
  EXPECT_EQ(reset.code, 1);
  EXPECT_EQ(reset.err, "ferry history: \"" + file_ + "\" does not exist\n");
  EXPECT_FALSE(Exists(file_ + ".lock")) << "a typo leaves no lock file behind";

  ASSERT_EQ(::mkdir(file_.c_str(), 0755), 0);
  show = RunFerry({"history", "show", file_});
  EXPECT_EQ(show.code, 1);
  EXPECT_EQ(show.err,
            "ferry history: cannot read history file \"" + file_ + "\": Is a directory\n");

  Result set = RunFerry({"history", "set", dir_ + "/no/such/dir/h", "10.0.0.1:80", "1"});
  EXPECT_EQ(set.code, 1);
  EXPECT_EQ(set.err, "ferry history: cannot open lock file \"" + dir_ +
                         "/no/such/dir/h.lock\": No such file or directory\n");
}

TEST_F(HistoryCommandTest, UsageErrorsExit2NamingTheProblem) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"history"}, "needs show, set or reset"},
      {{"history", "list", file_}, "unknown subcommand \"list\" (show, set or reset)"},
      {{"history", "show"}, "show needs the history FILE"},
      {{"history", "show", file_, "10.0.0.1:80"}, "show takes only FILE, not \"10.0.0.1:80\""},
      {{"history", "set", file_, "10.0.0.1:80"}, "set needs FILE ENDPOINT BYTES"},
      {{"history", "set", file_, "10.0.0.1:80", "1", "2"},
       "set takes FILE ENDPOINT BYTES, not also \"2\""},
      {{"history", "set", file_, "10.0.0.1:99999", "1"},
       "bad endpoint \"10.0.0.1:99999\": port 99999 out of range"},
      {{"history", "set", file_, "web.example.com:80", "1"},
       "bad endpoint \"web.example.com:80\": \"web.example.com:80\" is not an endpoint key"},
      {{"history", "set", file_, "10.0.0.1:80", "-5"}, "negative byte count \"-5\""},
      {{"history", "set", file_, "10.0.0.1:80", "12k"},
       "bad byte count \"12k\" (decimal digits only)"},
      {{"history", "set", file_, "10.0.0.1:80", "18446744073709551616"},
       "byte count \"18446744073709551616\" larger than 18446744073709551615"},
      {{"history", "reset", file_, "10.0.0.1:80", "0"},
       "reset takes FILE [ENDPOINT], not also \"0\""},
      {{"history", "reset", file_, "[::1"}, "bad endpoint \"[::1\": missing ']'"},
      {{"history", "--bogus"}, "unknown flag --bogus"},
      {{"history", "show", file_, "--bogus=1"}, "unknown flag --bogus"},
  };
  for (const Case& c : cases) {
    Result r = RunFerry(c.args);
    EXPECT_EQ(r.code, 2) << c.args.back() << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr("ferry history: " + c.message)) << c.args.back();
    EXPECT_EQ(r.out, "");
  }
  EXPECT_FALSE(Exists(file_)) << "no usage error writes anything";
  EXPECT_FALSE(Exists(file_ + ".lock"));
}

TEST_F(HistoryCommandTest, HelpPrintsUsage) {
  Result r = RunFerry({"history", "--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("Usage: ferry history show FILE"));
  EXPECT_THAT(r.out, HasSubstr("reset FILE [ENDPOINT]"));
  EXPECT_EQ(r.err, "");
  r = RunFerry({"history", "set", file_, "-h"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("Usage: ferry history"));
}

}  // namespace
}  // namespace ferry::testing
