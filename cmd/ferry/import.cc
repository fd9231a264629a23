#include "cmd/ferry/import.h"

namespace ferry::cli {

int Import(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  err << "ferry import: not built\n";
  return 2;
}

}  // namespace ferry::cli
