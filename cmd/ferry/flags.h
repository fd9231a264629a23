#pragma once

// Flag values shared by the commands.

#include <cstdint>

#include "absl/strings/string_view.h"

namespace ferry::cli {

// A rate in bytes per second: "1048576", "512K", "1M", "2GiB", "10MiB/s"
// (IEC multiples: K = 1024). False for 0, garbage or more than 2^62.
bool ParseRate(absl::string_view text, uint64_t* rate);

}  // namespace ferry::cli
