#include "cmd/ferry/import.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "pkg/base/fd.h"
#include "pkg/config/rinetd.h"

namespace ferry::cli {
namespace {

constexpr int kUsageError = 2;
constexpr size_t kMaxInputBytes = 16 << 20;

constexpr const char* kImportUsage = R"(Usage: ferry import rinetd FILE

Prints FILE, a rinetd.conf (rinetd 0.62 or 0.70+ syntax), as a ferry config
in YAML on stdout; FILE "-" reads stdin. Forwarding rules become rules (service
names become port numbers), allow/deny patterns become the CIDRs they match,
logfile/logcommon become each rule's access_log.

Lines that cannot be translated are printed on stderr as FILE:LINE: message
and the exit status is 1; the YAML then holds what could be translated
without admitting clients rinetd would refuse (a rule whose deny pattern has
no exact CIDR form is left out). Exit status 2 is a usage error.
)";

int Usage(std::ostream& err, const std::string& message) {
  err << "ferry import: " << message << "\n";
  return kUsageError;
}

// Reads all of `fd`; on failure returns false with the reason in `error`.
bool ReadAll(int fd, std::string* text, std::string* error) {
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *error = std::strerror(errno);
      return false;
    }
    if (n == 0) return true;
    text->append(buf, static_cast<size_t>(n));
    if (text->size() > kMaxInputBytes) {
      *error = absl::StrCat("larger than ", kMaxInputBytes >> 20, " MiB");
      return false;
    }
  }
}

}  // namespace

int Import(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  std::vector<std::string> positional;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      out << kImportUsage;
      return 0;
    }
    if (a == "--") {
      positional.insert(positional.end(), args.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                        args.end());
      break;
    }
    if (a.size() > 1 && a[0] == '-') return Usage(err, "unknown flag " + a.substr(0, a.find('=')));
    positional.push_back(a);
  }
  if (positional.empty()) return Usage(err, "needs FORMAT FILE, e.g. 'ferry import rinetd FILE'");
  if (positional[0] != "rinetd") {
    return Usage(err, absl::StrCat("unknown format \"", positional[0], "\" (formats: rinetd)"));
  }
  if (positional.size() < 2) return Usage(err, "needs the rinetd.conf FILE");
  if (positional.size() > 2) {
    return Usage(err, absl::StrCat("unexpected argument \"", positional[2], "\""));
  }
  const std::string& path = positional[1];
  const std::string shown = path == "-" ? "stdin" : path;

  std::string text, error;
  if (path == "-") {
    if (!ReadAll(STDIN_FILENO, &text, &error)) {
      err << "ferry import: cannot read stdin: " << error << "\n";
      return 1;
    }
  } else {
    base::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd || !ReadAll(fd.get(), &text, &error)) {
      if (!fd) error = std::strerror(errno);
      err << "ferry import: cannot read \"" << path << "\": " << error << "\n";
      return 1;
    }
  }

  config::RinetdImport result = config::ImportRinetd(text, shown);
  out << result.yaml;
  out.flush();
  for (const config::Diagnostic& d : result.problems) {
    // "line 12" -> "FILE:12: message", like a compiler.
    std::string where = shown;
    if (d.path.rfind("line ", 0) == 0) where += ":" + d.path.substr(5);
    err << where << ": " << d.message << "\n";
  }
  return result.ok() ? 0 : 1;
}

}  // namespace ferry::cli
