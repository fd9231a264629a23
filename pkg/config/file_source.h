#pragma once

// FileSource: tells its owner when the content of one config file changed.
// It reads and hashes the file; it does not parse it (the owner parses,
// validates and applies, and decides what a bad file means).
//
// Why it watches the DIRECTORY and not the file: a Kubernetes ConfigMap volume
// holds `config.yaml -> ..data/config.yaml` and `..data -> ..<TIMESTAMP>`, and
// kubelet updates it by writing a new `..<TIMESTAMP>` directory, pointing a
// `..data_tmp` symlink at it, renaming `..data_tmp` over `..data` and removing
// the old directory. Editors do the same on a small scale (vim writes a new
// file and renames it over the old one). A watch on the file would follow the
// old inode and see nothing; a watch on the directory sees every one of these
// renames, and also in-place writes (`echo ... > file`). When the path resolves
// (through symlinks) to a file in another directory, that directory is watched
// too, so in-place edits of the target are seen; a change to an intermediate
// symlink in a third directory is only seen by the poll.
//
// Every event arms a debounce timer; when it fires the file is read (following
// symlinks) and its ContentHash compared with the last one reported. A periodic
// poll does the same compare without any event, for filesystems where inotify
// reports nothing (NFS, FUSE) and as a safety net.

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "pkg/base/clock.h"
#include "pkg/base/fd.h"
#include "pkg/event/loop.h"

namespace ferry::config {

// The config "version" of file content, shown in ferry_config_version_info:
// the FNV-1a 64-bit hash of the bytes as 16 lowercase hex digits.
// ContentHash("") == "cbf29ce484222325".
std::string ContentHash(absl::string_view bytes);

// Watches one config file for content changes (see the file comment).
//
// Owned by its user (the server); borrows `loop`, which must outlive it. Every
// method, the constructor, the destructor and `on_change` run on the loop's
// thread. Do not destroy it from inside `on_change` or another handler of the
// same loop iteration: hand it to loop.DeferDelete() instead (its inotify fd is
// registered on the loop until the destructor).
//
// Reads are synchronous on the loop thread; config files are small. A file
// larger than kMaxFileBytes, or one that is not a regular file (a FIFO, a
// directory), is a read error.
class FileSource final : public event::Deletable {
 public:
  struct Options {
    // Events within this window after the first one become one read, so a
    // kubelet swap or an editor's save (several events) costs one read.
    int64_t debounce_nanos = 100 * base::kNanosPerMilli;
    // A re-read every this often even without events; 0 = off. A change it
    // finds is reported with Trigger::kPoll.
    int64_t poll_nanos = 10 * base::kNanosPerSecond;
    // false: no inotify at all, only the poll (which must then be on). For
    // filesystems where inotify never reports changes.
    bool watch = true;
  };

  // Why on_change was called.
  enum class Trigger {
    kWatch,   // a directory event or a re-established watch led to the read
    kPoll,    // the periodic poll, or the check one debounce after Start()
    kSignal,  // Reload() (SIGHUP): called even when the content is unchanged
  };

  // `text`: the whole file; `version`: ContentHash(text).
  using Callback =
      std::function<void(const std::string& text, const std::string& version, Trigger trigger)>;

  static constexpr int64_t kMaxFileBytes = 64 << 20;
  // While the directory cannot be watched (it does not exist), adding the
  // watch is retried this often (or at the poll interval, if shorter).
  static constexpr int64_t kRewatchNanos = base::kNanosPerSecond;

  // on_change(text, version, trigger) runs on the loop's thread, only after
  // Start(): once each time a read finds content whose version differs from the
  // last one reported (at first: from Start()'s `initial_version`), and once
  // on every Reload() whose read succeeds, even if unchanged. A read that fails
  // (the file is missing mid-swap, EACCES, not a regular file) is logged at
  // kWarn with the path and the error (once per run of identical errors, and
  // on every Reload()), is retried at the next event or poll, and does not call
  // the owner.
  // on_change may call Reload() or version(); it must not destroy this object.
  FileSource(event::Loop& loop, std::string path, Options options, Callback on_change);
  ~FileSource() override;
  FileSource(const FileSource&) = delete;
  FileSource& operator=(const FileSource&) = delete;

  // Starts watching and polling. `initial_version` is the ContentHash of the
  // content the owner already runs ("" if none). One debounce after Start()
  // the file is checked once (Trigger::kPoll), so a change made between the
  // owner's read and Start() is reported; on_change never runs inside Start().
  // A directory that cannot be watched yet is not an error: it is logged and
  // retried (see kRewatchNanos) while the poll runs.
  // Errors: InvalidArgument for an empty path, a path ending in '/', negative
  // intervals, or watch and poll both off; FailedPrecondition if already
  // started; Unavailable if inotify cannot be set up and the poll is off.
  absl::Status Start(std::string initial_version);

  // Re-reads the file now (SIGHUP: "apply now") and calls on_change with
  // Trigger::kSignal even when the content is unchanged. Does nothing but log
  // on a read error, or if called before Start().
  void Reload();

  const std::string& path() const { return path_; }
  // The version last reported to the owner (or Start()'s initial_version).
  const std::string& version() const { return version_; }
  // True while the inotify watch on the file's directory is in place.
  bool watching() const { return dir_wd_ >= 0; }

 private:
  class InotifyHandler final : public event::Handler {
   public:
    explicit InotifyHandler(FileSource& source) : source_(source) {}
    void OnEvents(uint32_t events) override;

   private:
    FileSource& source_;
  };

  void DrainInotify();
  // Adds the directory watch; on failure logs (once per error) and arms the
  // rewatch timer. Returns true when the watch is in place.
  bool AddDirWatch();
  // Watches the directory of the file the path resolves to, when that is not
  // the watched directory; drops the previous such watch.
  void UpdateTargetWatch();
  // Arms the debounce timer unless armed; the read it leads to reports `trigger`.
  void ArmDebounce(Trigger trigger);
  void OnDebounce();
  void OnPoll();
  void OnRewatch();
  // Reads the file; reports it when its version changed or `always`.
  void Check(Trigger trigger, bool always);

  event::Loop& loop_;
  const std::string path_;
  const std::string dir_;  // the directory of path_ ("." for a bare name)
  const Options options_;
  const Callback on_change_;

  bool started_ = false;
  std::string version_;
  std::string last_read_error_;   // "" after a successful read
  std::string last_watch_error_;  // "" while the watch is in place

  base::Fd inotify_;
  InotifyHandler handler_{*this};
  int dir_wd_ = -1;
  int target_wd_ = -1;      // the resolved file's directory, when elsewhere
  std::string target_dir_;  // the path that target_wd_ watches

  Trigger debounce_trigger_ = Trigger::kWatch;
  event::Timer debounce_timer_;
  event::Timer poll_timer_;
  event::Timer rewatch_timer_;
};

absl::string_view TriggerName(FileSource::Trigger trigger);

}  // namespace ferry::config
