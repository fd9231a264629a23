#include <iostream>
#include <string>
#include <vector>

#include "cmd/ferry/cli.h"

int main(int argc, char** argv) {
  return ferry::cli::Main(std::vector<std::string>(argv + 1, argv + argc), std::cout, std::cerr);
}
