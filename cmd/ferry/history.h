#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace ferry::cli {

// `ferry history show|set|reset FILE [ENDPOINT [BYTES]]` (args[0] is "history").
int History(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace ferry::cli
