#include "pkg/config/file_source.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "pkg/base/log.h"

namespace ferry::config {
namespace {

// Everything that can mean "the file behind the path may have changed":
// in-place writes (IN_MODIFY, IN_CLOSE_WRITE), renames over it (IN_MOVED_*,
// kubelet's ..data swap, vim's save), creation and removal, permission
// changes (IN_ATTRIB), and the directory itself going away.
constexpr uint32_t kDirMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE |
                              IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_MODIFY | IN_ONLYDIR;

// Bounds one readiness callback; the fd is level-triggered, so what is left
// is read in the next iteration.
constexpr int kMaxReadsPerWakeup = 64;

std::string Dirname(absl::string_view path) {
  size_t slash = path.rfind('/');
  if (slash == absl::string_view::npos) return ".";
  size_t end = slash;
  while (end > 0 && path[end - 1] == '/') --end;
  if (end == 0) return "/";
  return std::string(path.substr(0, end));
}

// Reads all of `path` (following symlinks) into `text`. Returns "" or the
// error. O_NONBLOCK so that a FIFO at the path cannot block the loop; it is
// then rejected as not a regular file.
std::string ReadWholeFile(const std::string& path, std::string* text) {
  base::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd.valid()) return std::strerror(errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return std::strerror(errno);
  if (S_ISDIR(st.st_mode)) return "is a directory, not a file";
  if (!S_ISREG(st.st_mode)) return "not a regular file";
  if (st.st_size > FileSource::kMaxFileBytes) {
    return absl::StrCat("larger than ", FileSource::kMaxFileBytes, " bytes");
  }
  text->clear();
  text->reserve(static_cast<size_t>(st.st_size));
  constexpr size_t kChunk = 64 * 1024;
  // The size may change while we read (a writer mid-save), so read to EOF
  // rather than trusting st_size, but never past the cap.
  for (;;) {
    size_t old = text->size();
    text->resize(old + kChunk);
    ssize_t n = ::read(fd.get(), &(*text)[old], kChunk);
    if (n < 0) {
      int err = errno;
      text->resize(old);
      if (err == EINTR) continue;
      return std::strerror(err);
    }
    text->resize(old + static_cast<size_t>(n));
    if (n == 0) return "";
    if (static_cast<int64_t>(text->size()) > FileSource::kMaxFileBytes) {
      return absl::StrCat("larger than ", FileSource::kMaxFileBytes, " bytes");
    }
  }
}

}  // namespace

std::string ContentHash(absl::string_view bytes) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3ULL;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i) {
    out[static_cast<size_t>(i)] = kHex[hash & 0xf];
    hash >>= 4;
  }
  return out;
}

absl::string_view TriggerName(FileSource::Trigger trigger) {
  switch (trigger) {
    case FileSource::Trigger::kWatch:
      return "watch";
    case FileSource::Trigger::kPoll:
      return "poll";
    case FileSource::Trigger::kSignal:
      return "signal";
  }
  return "unknown";
}

FileSource::FileSource(event::Loop& loop, std::string path, Options options, Callback on_change)
    : loop_(loop),
      path_(std::move(path)),
      dir_(Dirname(path_)),
      options_(options),
      on_change_(std::move(on_change)),
      debounce_timer_(loop, [this] { OnDebounce(); }),
      poll_timer_(loop, [this] { OnPoll(); }),
      rewatch_timer_(loop, [this] { OnRewatch(); }) {}

FileSource::~FileSource() {
  if (inotify_.valid()) loop_.Remove(inotify_.get());
  // Closing the inotify fd drops every watch with it.
}

absl::Status FileSource::Start(std::string initial_version) {
  if (started_) {
    return absl::FailedPreconditionError(
        absl::StrCat("config file source for \"", path_, "\" already started"));
  }
  if (path_.empty()) return absl::InvalidArgumentError("config file path is empty");
  if (path_.back() == '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("config file path \"", path_, "\" ends in '/': it names a directory"));
  }
  if (options_.debounce_nanos < 0 || options_.poll_nanos < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("config file source for \"", path_, "\": negative interval (debounce_nanos=",
                     options_.debounce_nanos, ", poll_nanos=", options_.poll_nanos, ")"));
  }
  if (!options_.watch && options_.poll_nanos == 0) {
    return absl::InvalidArgumentError(absl::StrCat("config file source for \"", path_,
                                                   "\": watch and poll are both off, so no change "
                                                   "could ever be seen"));
  }
  if (options_.watch) {
    int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    int err = fd < 0 ? errno : 0;
    if (fd >= 0) {
      inotify_.Reset(fd);
      err = loop_.Add(fd, EPOLLIN, &handler_);
      if (err != 0) inotify_.Reset();
    }
    if (err != 0) {
      // Typically EMFILE: fs.inotify.max_user_instances reached.
      if (options_.poll_nanos == 0) {
        return absl::UnavailableError(absl::StrCat("cannot watch config file \"", path_,
                                                   "\": inotify: ", std::strerror(err),
                                                   " (and polling is off)"));
      }
      FERRY_LOG(kWarn, "cannot watch config file, polling only",
                {{"path", path_},
                 {"error", std::strerror(err)},
                 {"poll_seconds", static_cast<double>(options_.poll_nanos) / 1e9}});
    } else {
      AddDirWatch();
    }
  }
  started_ = true;
  version_ = std::move(initial_version);
  if (options_.poll_nanos > 0) poll_timer_.ArmAfter(options_.poll_nanos);
  // Not caused by any event: a change it finds counts as found by polling.
  ArmDebounce(Trigger::kPoll);
  return absl::OkStatus();
}

void FileSource::Reload() {
  if (!started_) {
    FERRY_LOG(kWarn, "config reload before the file source started, ignored", {{"path", path_}});
    return;
  }
  Check(Trigger::kSignal, /*always=*/true);
}

void FileSource::InotifyHandler::OnEvents(uint32_t) { source_.DrainInotify(); }

void FileSource::DrainInotify() {
  // Records are variable-length (a header plus a NUL-padded name); the kernel
  // returns only whole records, and EINVAL if the buffer cannot hold the next
  // one, which this size (>= sizeof(inotify_event) + NAME_MAX + 1) rules out.
  alignas(inotify_event) char buf[16 * 1024];
  static_assert(sizeof(buf) >= sizeof(inotify_event) + NAME_MAX + 1);
  bool any = false;
  bool overflow = false;
  bool rewatch = false;
  for (int i = 0; i < kMaxReadsPerWakeup; ++i) {
    ssize_t n = ::read(inotify_.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) {
        FERRY_LOG(kWarn, "cannot read config watch events",
                  {{"path", path_}, {"error", std::strerror(errno)}});
      }
      break;
    }
    if (n == 0) break;
    size_t off = 0;
    const size_t len = static_cast<size_t>(n);
    while (len - off >= sizeof(inotify_event)) {
      inotify_event ev;
      std::memcpy(&ev, buf + off, sizeof(ev));
      const size_t record = sizeof(inotify_event) + ev.len;
      if (record > len - off) break;  // never split by the kernel; do not trust it blindly
      off += record;
      any = true;
      if (ev.mask & IN_Q_OVERFLOW) {
        overflow = true;  // events were lost; wd is -1
        continue;
      }
      if (ev.wd < 0) continue;
      if (ev.mask & IN_IGNORED) {
        // The kernel dropped the watch: the directory was removed or its
        // filesystem unmounted (or we removed it ourselves: wd no longer ours).
        if (ev.wd == dir_wd_) {
          dir_wd_ = -1;
          rewatch = true;
        } else if (ev.wd == target_wd_) {
          target_wd_ = -1;
          target_dir_.clear();
        }
      } else if (ev.mask & IN_MOVE_SELF) {
        // A watch follows the inode, so after a rename of the directory it no
        // longer watches the path; start again from the path.
        if (ev.wd == dir_wd_) {
          ::inotify_rm_watch(inotify_.get(), dir_wd_);
          dir_wd_ = -1;
          rewatch = true;
        } else if (ev.wd == target_wd_) {
          ::inotify_rm_watch(inotify_.get(), target_wd_);
          target_wd_ = -1;
          target_dir_.clear();
        }
      }
    }
  }
  if (rewatch) {
    target_dir_.clear();  // it may have been the same directory
    AddDirWatch();        // on failure the rewatch timer retries
  }
  if (overflow) {
    FERRY_LOG(kInfo, "config watch lost events, re-reading", {{"path", path_}});
    debounce_timer_.Disarm();
    Check(Trigger::kWatch, /*always=*/false);
    return;
  }
  if (any) ArmDebounce(Trigger::kWatch);
}

bool FileSource::AddDirWatch() {
  if (!inotify_.valid()) return false;
  int wd = ::inotify_add_watch(inotify_.get(), dir_.c_str(), kDirMask);
  if (wd < 0) {
    std::string err = std::strerror(errno);
    if (err != last_watch_error_) {
      FERRY_LOG(kWarn, "cannot watch config directory, retrying",
                {{"path", path_}, {"dir", dir_}, {"error", err}});
      last_watch_error_ = err;
    }
    if (!rewatch_timer_.armed()) {
      int64_t every = kRewatchNanos;
      if (options_.poll_nanos > 0) every = std::min(every, options_.poll_nanos);
      rewatch_timer_.ArmAfter(every);
    }
    return false;
  }
  dir_wd_ = wd;
  if (wd == target_wd_) {
    // The same inode as the resolved file's directory: one watch serves both.
    target_wd_ = -1;
    target_dir_.clear();
  }
  if (!last_watch_error_.empty()) {
    FERRY_LOG(kInfo, "watching config directory again", {{"path", path_}, {"dir", dir_}});
    last_watch_error_.clear();
  }
  rewatch_timer_.Disarm();
  return true;
}

void FileSource::UpdateTargetWatch() {
  if (!inotify_.valid()) return;
  char* real = ::realpath(path_.c_str(), nullptr);
  if (real == nullptr) return;
  std::string target = Dirname(real);
  std::free(real);
  if (target == target_dir_) return;
  int wd = ::inotify_add_watch(inotify_.get(), target.c_str(), kDirMask);
  if (wd < 0) return;  // the directory watch and the poll still cover most changes
  if (target_wd_ >= 0 && target_wd_ != wd) ::inotify_rm_watch(inotify_.get(), target_wd_);
  // inotify returns the existing wd for an inode already watched: when the
  // file sits in the watched directory itself, there is nothing extra to hold.
  target_wd_ = wd == dir_wd_ ? -1 : wd;
  target_dir_ = std::move(target);
}

void FileSource::ArmDebounce(Trigger trigger) {
  // An event outranks the check after Start(): the read it causes is the watch's.
  if (trigger == Trigger::kWatch) debounce_trigger_ = Trigger::kWatch;
  if (!debounce_timer_.armed()) {
    debounce_trigger_ = trigger;
    debounce_timer_.ArmAfter(options_.debounce_nanos);
  }
}

void FileSource::OnDebounce() { Check(debounce_trigger_, /*always=*/false); }

void FileSource::OnPoll() {
  Check(Trigger::kPoll, /*always=*/false);
  // Re-armed after the check so that a slow owner cannot make polls pile up.
  poll_timer_.ArmAfter(options_.poll_nanos);
}

void FileSource::OnRewatch() {
  // Whatever happened while nothing watched is unknown: read once the
  // watch is back.
  if (AddDirWatch()) ArmDebounce(Trigger::kWatch);
}

void FileSource::Check(Trigger trigger, bool always) {
  std::string text;
  std::string err = ReadWholeFile(path_, &text);
  if (!err.empty()) {
    // Dedup so that a file gone for a while does not log at every event;
    // an explicit reload always gets an answer.
    if (always || err != last_read_error_) {
      FERRY_LOG(kWarn, "cannot read config file",
                {{"path", path_}, {"error", err}, {"trigger", TriggerName(trigger)}});
      last_read_error_ = err;
    }
    return;
  }
  last_read_error_.clear();
  if (inotify_.valid()) {
    // The file is readable, so its directory exists again: no need to wait
    // for the rewatch timer.
    if (dir_wd_ < 0) AddDirWatch();
    UpdateTargetWatch();
  }
  std::string version = ContentHash(text);
  const bool changed = version != version_;
  if (!changed && !always) return;
  version_ = version;
  FERRY_LOG(kInfo, changed ? "config file changed" : "config file reload, content unchanged",
            {{"path", path_}, {"version", version}, {"trigger", TriggerName(trigger)}});
  on_change_(text, version, trigger);
}

}  // namespace ferry::config
