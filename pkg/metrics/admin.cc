#include "pkg/metrics/admin.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "civetweb.h"
#include "pkg/base/log.h"

namespace ferry::metrics {
namespace {

const char* StatusText(int status) {
  switch (status) {
    case 200: return "OK";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

int LogMessage(const mg_connection*, const char* message) {
  FERRY_LOG(kWarn, "admin server", {{"error", message}});
  return 1;  // handled: civetweb prints nothing itself
}

}  // namespace

int AdminServer::Dispatch(mg_connection* conn, void* data) {
  const Route& route = *static_cast<const Route*>(data);
  const mg_request_info* info = mg_get_request_info(conn);
  HttpResponse response;
  bool head = std::strcmp(info->request_method, "HEAD") == 0;
  if (std::strcmp(info->local_uri, route.path.c_str()) != 0) {
    response = {404, "text/plain; charset=utf-8", "not found\n"};
  } else if (!head && std::strcmp(info->request_method, "GET") != 0) {
    response = {405, "text/plain; charset=utf-8", "only GET and HEAD\n"};
  } else {
    response = route.handler();
  }
  mg_printf(conn,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            response.status, StatusText(response.status), response.content_type.c_str(),
            response.body.size());
  if (!head) mg_write(conn, response.body.data(), response.body.size());
  return response.status;
}

absl::StatusOr<std::unique_ptr<AdminServer>> AdminServer::Start(const net::Address& listen,
                                                                std::vector<Route> routes) {
  if (!listen.is_ip()) {
    return absl::InvalidArgumentError(
        absl::StrCat("admin address ", listen.ToString(), ": must be IP:PORT"));
  }
  std::unique_ptr<AdminServer> server(new AdminServer());
  server->routes_ = std::move(routes);
  std::string ports = listen.ToString();
  const char* options[] = {"listening_ports", ports.c_str(),
                           "num_threads", "2",
                           "request_timeout_ms", "10000",
                           "enable_keep_alive", "no",
                           nullptr};
  mg_callbacks callbacks{};
  callbacks.log_message = LogMessage;
  mg_init_data init{&callbacks, nullptr, options};
  char error_text[256] = {0};
  unsigned error_code = 0;
  mg_error_data error{&error_code, error_text, sizeof(error_text)};
  server->ctx_ = mg_start2(&init, &error);
  if (server->ctx_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("admin server on ", ports, ": ", error_text[0] ? error_text : "cannot start"));
  }
  for (Route& route : server->routes_) {
    mg_set_request_handler(server->ctx_, route.path.c_str(), &AdminServer::Dispatch, &route);
  }
  // Read the real port back (the config may say 0).
  mg_server_port bound[4];
  int n = mg_get_server_ports(server->ctx_, 4, bound);
  server->address_ = listen;
  if (n > 0) server->address_.set_port(static_cast<uint16_t>(bound[0].port));
  return server;
}

AdminServer::~AdminServer() {
  if (ctx_ != nullptr) mg_stop(ctx_);
}

}  // namespace ferry::metrics
