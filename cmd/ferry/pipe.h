#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace ferry::cli {

// `ferry pipe SOURCE DEST` (args[0] is "pipe"). Returns the exit status.
int Pipe(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace ferry::cli
