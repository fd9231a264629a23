#include "cmd/ferry/history.h"

namespace ferry::cli {

int History(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  err << "ferry history: not built\n";
  return 2;
}

}  // namespace ferry::cli
