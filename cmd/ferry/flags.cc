#include "cmd/ferry/flags.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"

namespace ferry::cli {

bool ParseRate(absl::string_view text, uint64_t* rate) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  uint64_t n = 0;
  if (digits == 0 || digits > 18 || !absl::SimpleAtoi(text.substr(0, digits), &n)) return false;
  std::string suffix = absl::AsciiStrToLower(text.substr(digits));
  if (suffix.size() >= 2 && suffix.compare(suffix.size() - 2, 2, "/s") == 0) {
    suffix.resize(suffix.size() - 2);
  }
  int shift = 0;
  if (!suffix.empty()) {
    switch (suffix[0]) {
      case 'k':
        shift = 10;
        break;
      case 'm':
        shift = 20;
        break;
      case 'g':
        shift = 30;
        break;
      case 'b':
        shift = 0;
        break;
      default:
        return false;
    }
    absl::string_view rest = absl::string_view(suffix).substr(1);
    if (suffix[0] == 'b' ? !rest.empty() : !(rest.empty() || rest == "i" || rest == "ib")) {
      return false;
    }
  }
  if (n == 0 || n > (uint64_t{1} << (62 - shift))) return false;
  *rate = n << shift;
  return true;
}

}  // namespace ferry::cli
