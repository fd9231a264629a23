#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace ferry::cli {

// Runs the ferry command line: `args` excludes the program name. Returns the
// process exit status: 0 success, 1 failure (bad config, bind error), 2 usage
// error. Usage errors are one line on `err` naming the flag or argument.
int Main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace ferry::cli
