#include "tests/testing/admin.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/testing/sockets.h"

namespace ferry::testing {

HttpResult HttpGet(const net::Address& address, const std::string& path) {
  HttpResult r;
  Connected c = Connect(address);
  if (!c.fd.valid()) return r;
  if (!SendAll(c.fd.get(), absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: x\r\n\r\n"))) return r;
  std::string raw;
  ReadToEof(c.fd.get(), &raw);
  size_t sp = raw.find(' ');
  if (sp != std::string::npos) (void)absl::SimpleAtoi(raw.substr(sp + 1, 3), &r.status);
  size_t body = raw.find("\r\n\r\n");
  if (body != std::string::npos) r.body = raw.substr(body + 4);
  return r;
}

std::map<std::string, double> Samples(const std::string& text) {
  std::map<std::string, double> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    double v = 0;
    if (sp == absl::string_view::npos || !absl::SimpleAtod(line.substr(sp + 1), &v)) continue;
    out[std::string(line.substr(0, sp))] = v;
  }
  return out;
}

}  // namespace ferry::testing
