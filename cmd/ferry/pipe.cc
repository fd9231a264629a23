#include "cmd/ferry/pipe.h"

namespace ferry::cli {

int Pipe(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  err << "ferry pipe: not built\n";
  return 2;
}

}  // namespace ferry::cli
