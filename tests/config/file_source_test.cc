#include "pkg/config/file_source.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pkg/base/clock.h"
#include "pkg/event/loop.h"

namespace ferry::config {
namespace {

using ::testing::HasSubstr;
using Trigger = FileSource::Trigger;
using Clock = std::chrono::steady_clock;

constexpr int64_t kMs = base::kNanosPerMilli;
constexpr auto kWait = std::chrono::seconds(5);

// A fresh directory under /tmp, removed with everything in it at the end.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/ferry_file_source_XXXXXX";
    char* dir = ::mkdtemp(tmpl);
    EXPECT_NE(dir, nullptr) << std::strerror(errno);
    path_ = dir != nullptr ? dir : "/tmp";
  }
  ~TempDir() {
    std::error_code ec;
    if (path_ != "/tmp") std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// In place: truncate, then write (what `echo text > file` does).
void WriteFile(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  ::close(fd);
}

// What vim and most editors do: write a new file, rename it over the old one.
void ReplaceFile(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".swp";
  WriteFile(tmp, text);
  ASSERT_EQ(::rename(tmp.c_str(), path.c_str()), 0) << std::strerror(errno);
}

// A ConfigMap volume, laid out and updated the way kubelet's AtomicWriter does.
class ConfigMapDir {
 public:
  explicit ConfigMapDir(std::string dir) : dir_(std::move(dir)) {}

  // ..TS/config.yaml, ..data -> ..TS, config.yaml -> ..data/config.yaml.
  void Init(const std::string& text) {
    current_ = WriteTimestampDir(text);
    ASSERT_EQ(::symlink(current_.c_str(), (dir_ + "/..data").c_str()), 0);
    ASSERT_EQ(::symlink("..data/config.yaml", path().c_str()), 0);
  }

  // New ..TS dir, ..data_tmp -> ..TS, rename ..data_tmp over ..data, remove the old ..TS.
  void Swap(const std::string& text) {
    std::string next = WriteTimestampDir(text);
    const std::string tmp = dir_ + "/..data_tmp";
    ASSERT_EQ(::symlink(next.c_str(), tmp.c_str()), 0) << std::strerror(errno);
    ASSERT_EQ(::rename(tmp.c_str(), (dir_ + "/..data").c_str()), 0) << std::strerror(errno);
    std::filesystem::remove_all(dir_ + "/" + current_);
    current_ = next;
  }

  std::string path() const { return dir_ + "/config.yaml"; }

 private:
  std::string WriteTimestampDir(const std::string& text) {
    std::string name = "..2026_11_22_03_04_05." + std::to_string(100000000 + serial_++);
    std::string full = dir_ + "/" + name;
    EXPECT_EQ(::mkdir(full.c_str(), 0755), 0) << std::strerror(errno);
    WriteFile(full + "/config.yaml", text);
    return name;
  }

  std::string dir_;
  std::string current_;
  int serial_ = 0;
};

struct Change {
  std::string text;
  std::string version;
  Trigger trigger;
};

// Collects callbacks; locked because one test runs the loop on another thread.
class Recorder {
 public:
  FileSource::Callback callback() {
    return [this](const std::string& text, const std::string& version, Trigger trigger) {
      std::lock_guard<std::mutex> lock(mu_);
      changes_.push_back({text, version, trigger});
      cv_.notify_all();
    };
  }
  // For a loop running on another thread: waits until `text` was reported.
  bool WaitFor(const std::string& text, Clock::duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] {
      for (const Change& c : changes_) {
        if (c.text == text) return true;
      }
      return false;
    });
  }
  std::vector<Change> changes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return changes_;
  }
  size_t size() const { return changes().size(); }
  bool Saw(const std::string& text) const {
    for (const Change& c : changes()) {
      if (c.text == text) return true;
    }
    return false;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Change> changes_;
};

// Runs `loop` until `done` or `timeout`; returns done().
bool RunUntil(event::Loop& loop, const std::function<bool()>& done,
              Clock::duration timeout = kWait) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() >= deadline) return false;
    loop.RunOnce(10);
  }
  return true;
}

// Runs `loop` for `duration`, to show that something does NOT happen in it.
void RunFor(event::Loop& loop, Clock::duration duration) {
  const auto deadline = Clock::now() + duration;
  while (Clock::now() < deadline) loop.RunOnce(10);
}

// Sends this process's stderr (where logs go) to a file while alive.
class StderrCapture {
 public:
  StderrCapture() {
    char tmpl[] = "/tmp/ferry_file_source_log_XXXXXX";
    fd_ = ::mkstemp(tmpl);
    ::unlink(tmpl);
    saved_ = ::dup(STDERR_FILENO);
    ::dup2(fd_, STDERR_FILENO);
  }
  ~StderrCapture() {
    ::dup2(saved_, STDERR_FILENO);
    ::close(saved_);
    ::close(fd_);
  }
  std::string Text() const {
    std::string out;
    char buf[4096];
    for (off_t off = 0;;) {
      ssize_t n = ::pread(fd_, buf, sizeof(buf), off);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
      off += n;
    }
    return out;
  }

 private:
  int fd_ = -1;
  int saved_ = -1;
};

int CountOpenFds() {
  int n = 0;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  while (::readdir(dir) != nullptr) ++n;
  ::closedir(dir);
  return n - 3;  // ".", "..", and the fd of the listing itself
}

// Watches held by every inotify instance of this process ("inotify wd:" lines
// of /proc/self/fdinfo/N).
int CountInotifyWatches() {
  int watches = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(entry.path(), ec);
    if (ec || target.string() != "anon_inode:inotify") continue;
    std::ifstream info("/proc/self/fdinfo/" + entry.path().filename().string());
    std::string line;
    while (std::getline(info, line)) {
      if (line.rfind("inotify wd:", 0) == 0) ++watches;
    }
  }
  return watches;
}

FileSource::Options Fast(int64_t poll_nanos = 0) {
  FileSource::Options options;
  options.debounce_nanos = 20 * kMs;
  options.poll_nanos = poll_nanos;
  return options;
}

// A source on `path` whose owner runs `text` already, started.
struct Started {
  Started(event::Loop& loop, const std::string& path, const std::string& text,
          FileSource::Options options)
      : source(loop, path, options, recorder.callback()) {
    absl::Status status = source.Start(ContentHash(text));
    EXPECT_TRUE(status.ok()) << status;
  }
  Recorder recorder;
  FileSource source;
};

TEST(ContentHashTest, KnownFnv1a64Vectors) {
  EXPECT_EQ(ContentHash(""), "cbf29ce484222325");
  EXPECT_EQ(ContentHash("a"), "af63dc4c8601ec8c");
  EXPECT_EQ(ContentHash("foobar"), "85944171f73967e8");
  EXPECT_EQ(ContentHash(std::string("\0", 1)), "af63bd4c8601b7df");
  EXPECT_NE(ContentHash("workers: 1\n"), ContentHash("workers: 2\n"));
}

TEST(FileSourceTest, InPlaceRewriteReportsNewTextOnce) {
  TempDir tmp;
  event::Loop loop;
  const std::string path = tmp / "ferry.yaml";
  WriteFile(path, "workers: 1\n");
  Started s(loop, path, "workers: 1\n", Fast());

  WriteFile(path, "workers: 2\n");
  ASSERT_TRUE(RunUntil(loop, [&] { return s.recorder.size() >= 1; }));
  RunFor(loop, std::chrono::milliseconds(200));  // later events of the same write

  auto changes = s.recorder.changes();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].text, "workers: 2\n");
  EXPECT_EQ(changes[0].version, ContentHash("workers: 2\n"));
  EXPECT_EQ(changes[0].trigger, Trigger::kWatch);
  EXPECT_EQ(s.source.version(), ContentHash("workers: 2\n"));
}

TEST(FileSourceTest, SameContentWrittenAgainReportsNothing) {
  TempDir tmp;
  event::Loop loop;
  const std::string path = tmp / "ferry.yaml";
  WriteFile(path, "workers: 1\n");
  // A short poll too, so that both the event path and the poll get to compare.
  Started s(loop, path, "workers: 1\n", Fast(/*poll_nanos=*/50 * kMs));

  WriteFile(path, "workers: 1\n");
  ReplaceFile(path, "workers: 1\n");
  RunFor(loop, std::chrono::milliseconds(400));
  EXPECT_EQ(s.recorder.size(), 0u);
}

TEST(FileSourceTest, RenameOverIsSeen) {
  TempDir tmp;
  event::Loop loop;
  const std::string path = tmp / "ferry.yaml";
  WriteFile(path, "a\n");
  Started s(loop, path, "a\n", Fast());

  ReplaceFile(path, "b\n");
  ASSERT_TRUE(RunUntil(loop, [&] { return s.recorder.size() >= 1; }));
  auto changes = s.recorder.changes();
  EXPECT_EQ(changes.back().text, "b\n");
  EXPECT_EQ(changes.back().trigger, Trigger::kWatch);
}

TEST(FileSourceTest, KubeletSwapReportsExactlyOnce) {
  TempDir tmp;
  event::Loop loop;
  ConfigMapDir cm(tmp.path());
  cm.Init("v1\n");
  Started s(loop, cm.path(), "v1\n", Fast());   // no poll: the watch alone must see it
  RunFor(loop, std::chrono::milliseconds(60));  // past the check after Start()
  ASSERT_EQ(s.recorder.size(), 0u);

  cm.Swap("v2\n");
  ASSERT_TRUE(RunUntil(loop, [&] { return s.recorder.size() >= 1; }));
  RunFor(loop, std::chrono::milliseconds(200));

  auto changes = s.recorder.changes();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].text, "v2\n");
  EXPECT_EQ(changes[0].version, ContentHash("v2\n"));
  EXPECT_EQ(changes[0].trigger, Trigger::kWatch);
}

TEST(FileSourceTest, TwoSwapsWithinDebounceEndWithTheLast) {
  TempDir tmp;
  event::Loop loop;
  ConfigMapDir cm(tmp.path());
  cm.Init("v1\n");
  FileSource::Options options = Fast();
  options.debounce_nanos = 200 * kMs;
  Started s(loop, cm.path(), "v1\n", options);

  cm.Swap("v2\n");
  cm.Swap("v3\n");
  ASSERT_TRUE(RunUntil(loop, [&] { return s.recorder.Saw("v3\n"); }));
  RunFor(loop, std::chrono::milliseconds(400));

  auto changes = s.recorder.changes();
  ASSERT_GE(changes.size(), 1u);
  EXPECT_LE(changes.size(), 2u);
  EXPECT_EQ(changes.back().text, "v3\n");
  EXPECT_EQ(s.source.version(), ContentHash("v3\n"));
}

TEST(FileSourceTest, EventsWithinTheDebounceWindowBecomeOneRead) {
  TempDir tmp;
  event::Loop loop;
  ConfigMapDir cm(tmp.path());
  cm.Init("v1\n");
  FileSource::Options options = Fast();
  options.debounce_nanos = 600 * kMs;
  Started s(loop, cm.path(), "v1\n", options);
  RunFor(loop, std::chrono::milliseconds(700));  // past the check after Start()

  cm.Swap("v2\n");
  RunFor(loop, std::chrono::milliseconds(50));  // its events are read: the window opens
  ASSERT_EQ(s.recorder.size(), 0u);
  cm.Swap("v3\n");
  ASSERT_TRUE(RunUntil(loop, [&] { return s.recorder.size() >= 1; }));
  RunFor(loop, std::chrono::milliseconds(100));

  auto changes = s.recorder.changes();
  ASSERT_EQ(changes.size(), 1u) << "v2 was read on its own: " << changes[0].text;
  EXPECT_EQ(changes[0].text, "v3\n");
}

TEST(FileSourceTest, HundredSwapsWithLoopRunningEndWithTheLastAndLeakNothing) {
  TempDir tmp;
  ConfigMapDir cm(tmp.path());
  cm.Init("v0\n");
  auto loop = std::make_unique<event::Loop>();
  const int fds_before = CountOpenFds();
  Recorder recorder;
  std::unique_ptr<FileSource> source;
  std::thread thread([&] { loop->Run(); });

  std::promise<absl::Status> started;
  loop->Post([&] {
    FileSource::Options options = Fast();
    options.debounce_nanos = 5 * kMs;
    source = std::make_unique<FileSource>(*loop, cm.path(), options, recorder.callback());
    started.set_value(source->Start(ContentHash("v0\n")));
  });
  absl::Status status = started.get_future().get();
  ASSERT_TRUE(status.ok()) << status;

  constexpr int kSwaps = 100;
  for (int i = 1; i <= kSwaps; ++i) cm.Swap("v" + std::to_string(i) + "\n");
  const std::string last = "v" + std::to_string(kSwaps) + "\n";
  EXPECT_TRUE(recorder.WaitFor(last, kWait));
  const int watches = CountInotifyWatches();

  std::promise<void> stopped;
  loop->Post([&] {
    source.reset();
    stopped.set_value();
  });
  stopped.get_future().wait();
  loop->Stop();
  thread.join();

  auto changes = recorder.changes();
  ASSERT_FALSE(changes.empty());
  EXPECT_EQ(changes.back().text, last);
  // Reads are in order, so reported contents only move forward.
  int previous = 0;
  for (const Change& c : changes) {
    EXPECT_EQ(c.version, ContentHash(c.text));
    int n = std::atoi(c.text.c_str() + 1);
    EXPECT_GT(n, previous) << "stale content " << c.text << " reported after v" << previous;
    previous = n;
  }
  // The directory, plus the current ..TIMESTAMP directory the file resolves to.
  EXPECT_GE(watches, 1);
  EXPECT_LE(watches, 2);
  EXPECT_EQ(CountOpenFds(), fds_before);
}

TEST(FileSourceTest, ReloadReportsUnchangedContentAsSignal) {
  TempDir tmp;
  event::Loop loop;
  const std::string path = tmp / "ferry.yaml";
  WriteFile(path, "same\n");
  Started s(loop, path, "same\n", Fast());
  RunFor(loop, std::chrono::milliseconds(60));
  ASSERT_EQ(s.recorder.size(), 0u);

  s.source.Reload();
  s.source.Reload();
  auto changes = s.recorder.changes();
  ASSERT_EQ(changes.size(), 2u);
  for (const Change& c : changes) {
    EXPECT_EQ(c.text, "same\n");
    EXPECT_EQ(c.version, ContentHash("same\n"));
    EXPECT_EQ(c.trigger, Trigger::kSignal);
  }
}

TEST(FileSourceTest, ReloadOfUnreadableFileWarnsAndDoesNotCall) {
  TempDir tmp;
  event::Loop loop;
  const std::string path = tmp / "ferry.yaml";
  WriteFile(path, "x\n");
  Started s(loop, path, "x\n", Fast());
  ASSERT_EQ(::unlink(path.c_str()), 0);

  StderrCapture log;
  s.source.Reload();
  s.source.Reload();  // each reload gets an answer, even the same error
  EXPECT_EQ(s.recorder.size(), 0u);
  std::string text = log.Text();
  EXPECT_THAT(text, HasSubstr("cannot read config file"));
  EXPECT_THAT(text, HasSubstr(path));
  EXPECT_THAT(text, HasSubstr("No such file or directory"));
  EXPECT_NE(text.find("trigger=signal"), text.rfind("trigger=signal")) << text;
}

TEST(FileSourceTest, PollFindsChangeWithoutInotify) {
  TempDir tmp;
  event::Loop loop;
  const std::string path = tmp / "ferry.yaml";
  WriteFile(path, "old\n");
  const int fds_before = CountOpenFds();
  FileSource::Options options = Fast(/*poll_nanos=*/100 * kMs);
  options.watch = false;
  Started s(loop, path, "old\n", options);
  EXPECT_EQ(CountOpenFds(), fds_before) << "watch=false must not open an inotify fd";
  RunFor(loop, std::chrono::milliseconds(60));  // past the check after Start()
  ASSERT_EQ(s.recorder.size(), 0u);

  WriteFile(path, "new\n");
  ASSERT_TRUE(RunUntil(
      loop, [&] { return s.recorder.size() >= 1; }, std::chrono::seconds(2)));
  auto changes = s.recorder.changes();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].text, "new\n");
  EXPECT_EQ(changes[0].trigger, Trigger::kPoll);
}

TEST(FileSourceTest, FileRemovedWarnsThenReturnsWithNewContent) {
  TempDir tmp;
  event::Loop loop;
  const std::string path = tmp / "ferry.yaml";
  WriteFile(path, "before\n");
  Started s(loop, path, "before\n", Fast());
  RunFor(loop, std::chrono::milliseconds(60));

  {
    StderrCapture log;
    ASSERT_EQ(::unlink(path.c_str()), 0);
    ASSERT_TRUE(RunUntil(loop, [&] {
      return log.Text().find("No such file or directory") != std::string::npos;
    })) << log.Text();
    std::string text = log.Text();
    EXPECT_THAT(text, HasSubstr("level=warn"));
    EXPECT_THAT(text, HasSubstr("cannot read config file"));
    EXPECT_THAT(text, HasSubstr(path));
  }
  EXPECT_EQ(s.recorder.size(), 0u);

  WriteFile(path, "after\n");
  ASSERT_TRUE(RunUntil(loop, [&] { return s.recorder.size() >= 1; }));
  auto changes = s.recorder.changes();
  EXPECT_EQ(changes.back().text, "after\n");
  EXPECT_EQ(changes.back().trigger, Trigger::kWatch);
}

TEST(FileSourceTest, DirectoryRemovedAndRecreatedIsWatchedAgain) {
  TempDir tmp;
  event::Loop loop;
  const std::string dir = tmp / "conf";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  const std::string path = dir + "/ferry.yaml";
  WriteFile(path, "one\n");
  // A poll far away, so that only re-adding the watch can bring the change.
  Started s(loop, path, "one\n", Fast(/*poll_nanos=*/600 * base::kNanosPerSecond));
  ASSERT_TRUE(s.source.watching());

  std::filesystem::remove_all(dir);
  ASSERT_TRUE(RunUntil(loop, [&] { return !s.source.watching(); }));
  // Past the read that the removal's events cause (it fails: no file), so
  // that only the retried watch can notice what comes next.
  RunFor(loop, std::chrono::milliseconds(100));
  EXPECT_EQ(s.recorder.size(), 0u);
  EXPECT_FALSE(s.source.watching());

  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  WriteFile(path, "two\n");
  ASSERT_TRUE(RunUntil(loop, [&] { return s.recorder.Saw("two\n"); }));
  EXPECT_TRUE(s.source.watching());

  // And the new directory's events are seen, not just the one re-read.
  WriteFile(path, "three\n");
  ASSERT_TRUE(RunUntil(loop, [&] { return s.recorder.Saw("three\n"); }));
  EXPECT_EQ(s.recorder.changes().back().trigger, Trigger::kWatch);
}

TEST(FileSourceTest, DirectoryRenamedAwayWatchesThePathNotTheOldDirectory) {
  TempDir tmp;
  event::Loop loop;
  const std::string dir = tmp / "conf";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  const std::string path = dir + "/ferry.yaml";
  WriteFile(path, "one\n");
  Started s(loop, path, "one\n", Fast());

  ASSERT_EQ(::rename(dir.c_str(), (tmp / "conf.old").c_str()), 0);
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  WriteFile(path, "two\n");
  ASSERT_TRUE(RunUntil(loop, [&] { return s.recorder.Saw("two\n"); }));
  RunFor(loop, std::chrono::milliseconds(60));
  const size_t seen = s.recorder.size();

  WriteFile(tmp / "conf.old/ferry.yaml", "stale\n");
  RunFor(loop, std::chrono::milliseconds(200));
  EXPECT_FALSE(s.recorder.Saw("stale\n"));
  EXPECT_EQ(s.recorder.size(), seen);

  WriteFile(path, "three\n");
  ASSERT_TRUE(RunUntil(loop, [&] { return s.recorder.Saw("three\n"); }));
}

TEST(FileSourceTest, SymlinkIntoAnotherDirectorySeesInPlaceEditOfTarget) {
  TempDir tmp;
  event::Loop loop;
  ASSERT_EQ(::mkdir((tmp / "etc").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((tmp / "srv").c_str(), 0755), 0);
  const std::string target = tmp / "srv/real.yaml";
  const std::string path = tmp / "etc/ferry.yaml";
  WriteFile(target, "one\n");
  ASSERT_EQ(::symlink(target.c_str(), path.c_str()), 0);
  Started s(loop, path, "one\n", Fast());       // no poll
  RunFor(loop, std::chrono::milliseconds(60));  // the check after Start() resolves the link

  WriteFile(target, "two\n");  // no event in etc/
  ASSERT_TRUE(RunUntil(loop, [&] { return s.recorder.Saw("two\n"); }));
  EXPECT_EQ(s.recorder.changes().back().trigger, Trigger::kWatch);
}

TEST(FileSourceTest, ChangeBeforeStartIsReportedAfterStart) {
  TempDir tmp;
  event::Loop loop;
  const std::string path = tmp / "ferry.yaml";
  WriteFile(path, "newer\n");
  Started s(loop, path, "older\n", Fast());  // the owner loaded "older\n"
  EXPECT_EQ(s.recorder.size(), 0u) << "no callback from inside Start()";
  ASSERT_TRUE(RunUntil(loop, [&] { return s.recorder.size() >= 1; }));
  EXPECT_EQ(s.recorder.changes()[0].text, "newer\n");
  EXPECT_EQ(s.recorder.changes()[0].trigger, Trigger::kPoll);
}

TEST(FileSourceTest, FifoAtThePathIsAReadErrorNotAHang) {
  TempDir tmp;
  event::Loop loop;
  const std::string path = tmp / "ferry.yaml";
  WriteFile(path, "x\n");
  Started s(loop, path, "x\n", Fast());
  ASSERT_EQ(::unlink(path.c_str()), 0);
  ASSERT_EQ(::mkfifo(path.c_str(), 0644), 0);

  StderrCapture log;
  s.source.Reload();  // would block forever on a FIFO without a writer
  EXPECT_THAT(log.Text(), HasSubstr("not a regular file"));
  EXPECT_EQ(s.recorder.size(), 0u);
}

TEST(FileSourceTest, DirectoryAtThePathIsAReadError) {
  TempDir tmp;
  event::Loop loop;
  const std::string path = tmp / "ferry.yaml";
  ASSERT_EQ(::mkdir(path.c_str(), 0755), 0);
  Started s(loop, path, "", Fast());

  StderrCapture log;
  s.source.Reload();
  EXPECT_THAT(log.Text(), HasSubstr("is a directory"));
  EXPECT_EQ(s.recorder.size(), 0u);
}

TEST(FileSourceTest, StartRejectsBadArguments) {
  event::Loop loop;
  Recorder recorder;
  auto start = [&](const std::string& path, FileSource::Options options) {
    FileSource source(loop, path, options, recorder.callback());
    return source.Start("");
  };
  absl::Status status = start("", Fast());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("path is empty"));

  status = start("/etc/ferry/", Fast());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("names a directory"));

  FileSource::Options neither = Fast(/*poll_nanos=*/0);
  neither.watch = false;
  status = start("/tmp/ferry.yaml", neither);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("watch and poll are both off"));

  FileSource::Options negative = Fast();
  negative.debounce_nanos = -1;
  status = start("/tmp/ferry.yaml", negative);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("negative interval"));

  TempDir tmp;
  FileSource source(loop, tmp / "ferry.yaml", Fast(), recorder.callback());
  ASSERT_TRUE(source.Start("").ok());
  status = source.Start("");
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("already started"));
  EXPECT_EQ(recorder.size(), 0u);
}

TEST(FileSourceTest, MissingDirectoryAtStartIsRetriedNotAnError) {
  TempDir tmp;
  event::Loop loop;
  const std::string dir = tmp / "later";
  const std::string path = dir + "/ferry.yaml";
  StderrCapture log;
  Started s(loop, path, "", Fast(/*poll_nanos=*/600 * base::kNanosPerSecond));
  EXPECT_FALSE(s.source.watching());
  EXPECT_THAT(log.Text(), HasSubstr("cannot watch config directory"));
  RunFor(loop, std::chrono::milliseconds(100));  // past the check after Start()
  EXPECT_FALSE(s.source.watching());

  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  WriteFile(path, "hello\n");
  ASSERT_TRUE(RunUntil(loop, [&] { return s.recorder.Saw("hello\n"); }));
  EXPECT_TRUE(s.source.watching());
}

}  // namespace
}  // namespace ferry::config
