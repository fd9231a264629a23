// `ferry history show|set|reset FILE [ENDPOINT [BYTES]]`: reads and edits the
// byte-history files the least_bytes balancer persists (tcppipe-least). show
// only reads (a save is an atomic rename, so it never sees half a file); set
// and reset take the file's lock first, so they refuse while a running ferry
// owns the file and a ferry starting meanwhile waits for no half-done edit.

#include "cmd/ferry/history.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <functional>

#include "absl/strings/str_cat.h"
#include "pkg/balance/history.h"

namespace ferry::cli {
namespace {

constexpr int kUsageError = 2;

constexpr const char* kHistoryUsage = R"(Usage: ferry history show FILE
       ferry history set FILE ENDPOINT BYTES
       ferry history reset FILE [ENDPOINT]

Reads and edits a byte-history file (history.file of a least_bytes rule,
tcp-pf's host-file format): one "ENDPOINT BYTES" per line, where ENDPOINT is
IP:PORT, [IPv6]:PORT or unix:/path, or a bare host (IP or name) that stands
for every endpoint on it; '#' starts a comment.

  show FILE                  print "ENDPOINT BYTES" lines, fewest bytes first
                             (the next endpoint least_bytes picks); bad lines
                             go to stderr as FILE:LINE: message, exit status 1
  set FILE ENDPOINT BYTES    record BYTES (0 to 18446744073709551615) for
                             ENDPOINT; creates FILE if missing
  reset FILE [ENDPOINT]      set every entry, or ENDPOINT's, to 0

set and reset rewrite FILE atomically and refuse (exit status 1) while a
running ferry holds it (its lock is FILE.lock), or while FILE has bad lines
(they would be lost). Exit status 2 is a usage error.
)";

int Usage(std::ostream& err, const std::string& message) {
  err << "ferry history: " << message << "\n";
  return kUsageError;
}

int Fail(std::ostream& err, const std::string& message) {
  err << "ferry history: " << message << "\n";
  return 1;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 || errno != ENOENT;
}

void PrintProblems(const std::string& file, const balance::ParsedHistory& history,
                   std::ostream& err) {
  for (const balance::HistoryProblem& p : history.problems) {
    err << file << ":" << p.line << ": " << p.message << "\n";
  }
}

int Show(const std::string& file, std::ostream& out, std::ostream& err) {
  if (!Exists(file)) return Fail(err, absl::StrCat("\"", file, "\" does not exist"));
  auto history = balance::HistoryFile::Load(file);
  if (!history.ok()) return Fail(err, std::string(history.status().message()));
  std::vector<balance::HistoryEntry> entries = history->entries;
  std::sort(entries.begin(), entries.end(),
            [](const balance::HistoryEntry& a, const balance::HistoryEntry& b) {
              return a.bytes != b.bytes ? a.bytes < b.bytes : a.endpoint < b.endpoint;
            });
  for (const balance::HistoryEntry& e : entries) out << e.endpoint << " " << e.bytes << "\n";
  PrintProblems(file, *history, err);
  return history->problems.empty() ? 0 : 1;
}

// Loads `file` under its lock, lets `edit` change the entries (it returns an
// error message, or "" to save), and saves it atomically.
int Edit(const std::string& file, std::ostream& err,
         const std::function<std::string(std::vector<balance::HistoryEntry>&)>& edit) {
  auto lock = balance::HistoryLock::TryLock(file);
  if (!lock.ok()) return Fail(err, std::string(lock.status().message()));
  auto history = balance::HistoryFile::Load(file);
  if (!history.ok()) return Fail(err, std::string(history.status().message()));
  if (!history->problems.empty()) {
    PrintProblems(file, *history, err);
    return Fail(err, absl::StrCat("\"", file,
                                  "\" has bad lines (above); fix or remove them first, a rewrite "
                                  "would lose them"));
  }
  std::string problem = edit(history->entries);
  if (!problem.empty()) return Fail(err, problem);
  absl::Status saved = balance::HistoryFile::SaveAtomically(file, history->entries);
  if (!saved.ok()) return Fail(err, std::string(saved.message()));
  return 0;
}

}  // namespace

int History(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  std::vector<std::string> positional;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      out << kHistoryUsage;
      return 0;
    }
    if (a == "--") {
      positional.insert(positional.end(), args.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                        args.end());
      break;
    }
    if (a.size() > 1 && a[0] == '-' && (a[1] == '-' || positional.size() < 2)) {
      // "-5" after FILE is data: reported as a negative byte count.
      return Usage(err, "unknown flag " + a.substr(0, a.find('=')));
    }
    positional.push_back(a);
  }
  if (positional.empty())
    return Usage(err, "needs show, set or reset (see 'ferry history --help')");
  const std::string& verb = positional[0];
  if (verb != "show" && verb != "set" && verb != "reset") {
    return Usage(err, absl::StrCat("unknown subcommand \"", verb, "\" (show, set or reset)"));
  }
  if (positional.size() < 2) return Usage(err, absl::StrCat(verb, " needs the history FILE"));
  const std::string& file = positional[1];
  if (file.empty()) return Usage(err, "empty FILE");

  if (verb == "show") {
    if (positional.size() > 2) {
      return Usage(err, absl::StrCat("show takes only FILE, not \"", positional[2], "\""));
    }
    return Show(file, out, err);
  }

  if (verb == "set") {
    if (positional.size() < 4) return Usage(err, "set needs FILE ENDPOINT BYTES");
    if (positional.size() > 4) {
      return Usage(err,
                   absl::StrCat("set takes FILE ENDPOINT BYTES, not also \"", positional[4], "\""));
    }
    auto key = balance::CanonicalHistoryKey(positional[2]);
    if (!key.ok()) {
      return Usage(err,
                   absl::StrCat("bad endpoint \"", positional[2], "\": ", key.status().message()));
    }
    auto bytes = balance::ParseByteCount(positional[3]);
    if (!bytes.ok()) return Usage(err, std::string(bytes.status().message()));
    return Edit(file, err, [&](std::vector<balance::HistoryEntry>& entries) {
      for (balance::HistoryEntry& e : entries) {
        if (e.endpoint == *key) {
          e.bytes = *bytes;
          return std::string();
        }
      }
      entries.push_back({*key, *bytes});
      return std::string();
    });
  }

  // reset
  if (positional.size() > 3) {
    return Usage(err,
                 absl::StrCat("reset takes FILE [ENDPOINT], not also \"", positional[3], "\""));
  }
  std::string key;
  if (positional.size() == 3) {
    auto canonical = balance::CanonicalHistoryKey(positional[2]);
    if (!canonical.ok()) {
      return Usage(err, absl::StrCat("bad endpoint \"", positional[2],
                                     "\": ", canonical.status().message()));
    }
    key = *canonical;
  }
  // Checked before the lock, which would leave FILE.lock beside a typo.
  if (!Exists(file)) return Fail(err, absl::StrCat("\"", file, "\" does not exist"));
  return Edit(file, err, [&](std::vector<balance::HistoryEntry>& entries) {
    if (key.empty()) {
      for (balance::HistoryEntry& e : entries) e.bytes = 0;
      return std::string();
    }
    for (balance::HistoryEntry& e : entries) {
      if (e.endpoint == key) {
        e.bytes = 0;
        return std::string();
      }
    }
    return absl::StrCat("no entry for \"", key, "\" in \"", file, "\"");
  });
}

}  // namespace ferry::cli
