#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "pkg/net/address.h"

struct mg_context;
struct mg_connection;

namespace ferry::metrics {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// AdminServer serves ferry's admin HTTP endpoints with civetweb, on
// civetweb's own threads: a slow scraper never touches a worker loop.
// Handlers run on those threads, concurrently, so they may only read
// thread-safe state (atomics, snapshots).
class AdminServer {
 public:
  using Handler = std::function<HttpResponse()>;
  struct Route {
    std::string path;  // exact path, e.g. "/metrics"
    Handler handler;
  };

  // Binds `listen` (IPv4 or IPv6, port 0 allowed) and starts serving.
  // A busy port is FailedPrecondition naming the address.
  static absl::StatusOr<std::unique_ptr<AdminServer>> Start(const net::Address& listen,
                                                            std::vector<Route> routes);
  // Stops serving and waits for running handlers.
  ~AdminServer();

  const net::Address& address() const { return address_; }

 private:
  AdminServer() = default;
  static int Dispatch(mg_connection* conn, void* route);

  mg_context* ctx_ = nullptr;
  std::vector<Route> routes_;
  net::Address address_;
};

}  // namespace ferry::metrics
