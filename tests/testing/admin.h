#pragma once

// Reading ferry's admin endpoint as a scraper does: a bounded HTTP/1.0 GET,
// and the samples of a Prometheus text exposition.

#include <map>
#include <string>

#include "pkg/net/address.h"

namespace ferry::testing {

struct HttpResult {
  int status = 0;  // 0: no response
  std::string body;
};

// GET `path` from `address` (HTTP/1.0, read to EOF, bounded by the socket timeouts).
HttpResult HttpGet(const net::Address& address, const std::string& path);

// Every sample line of a text exposition: "name{labels}" -> value.
std::map<std::string, double> Samples(const std::string& text);

}  // namespace ferry::testing
