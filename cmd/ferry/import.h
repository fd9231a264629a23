#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace ferry::cli {

// `ferry import rinetd FILE` (args[0] is "import"). Returns the exit status.
int Import(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace ferry::cli
