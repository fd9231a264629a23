#pragma once

// Listener handoff: how a new ferry takes over the listening sockets of the
// one it replaces, so an upgrade never closes a listening socket and so never
// resets a client waiting in an accept queue (what HAProxy's `-x` with
// `expose-fd listeners` and Envoy's hot restart do).
//
// The running ferry serves its listeners on a unix socket (`--handoff PATH`,
// mode 0600, only to a peer of the same user or root). A new ferry started
// with the same PATH connects first, receives every listener as its key
// (server::ListenerKey) and its sockets (SCM_RIGHTS, one message each), uses
// them instead of binding where the key matches, then serves PATH itself.
// Both accept from the same sockets until the old one, on SIGTERM, stops
// accepting and drains; the sockets stay open in the new one throughout.
//
// Wire format on a SOCK_SEQPACKET connection, old -> new: one message per
// listener, "L" + key as the payload with its fds attached; then "E" (end).

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "pkg/base/fd.h"

namespace ferry::server {

// The sockets of one listener: one per worker (SO_REUSEPORT), or one shared
// unix socket.
struct HandedListener {
  std::string key;
  std::vector<base::Fd> fds;
};

// Connects to the ferry serving `path` and takes its listeners. No ferry
// there (no socket file, or nobody listening) is an empty list, not an error.
// Errors name the path: a peer of another user, a malformed message, a
// timeout (5 s).
absl::StatusOr<std::vector<HandedListener>> TakeListeners(const std::string& path);

// Serves this ferry's listeners on `path` to a successor, from a thread of
// its own. `snapshot` runs on that thread for each successor and returns
// duplicates of the current listening sockets (the caller's lock makes them
// consistent with reloads). Stop() and the destructor may run on any thread.
class HandoffServer {
 public:
  using Snapshot = std::function<std::vector<HandedListener>()>;

  // Binds `path` (replacing a predecessor's socket file there), mode 0600.
  static absl::StatusOr<std::unique_ptr<HandoffServer>> Start(std::string path, Snapshot snapshot);
  ~HandoffServer();
  HandoffServer(const HandoffServer&) = delete;
  HandoffServer& operator=(const HandoffServer&) = delete;

  // Refuses successors from now on (the drain is about to close the
  // sockets); waits for a handoff in progress. Idempotent.
  void Stop();
  // True once a successor took the listeners: the unix socket files then
  // belong to it, and this ferry must not remove them at exit.
  bool handed_over() const;
  const std::string& path() const { return path_; }

 private:
  HandoffServer(std::string path, base::Fd listener, Snapshot snapshot);
  void Run();
  void Serve(int conn);

  const std::string path_;
  base::Fd listener_;
  base::Fd stop_;  // eventfd: wakes Run() to stop
  const Snapshot snapshot_;
  mutable std::mutex mu_;     // held while a successor is served
  bool stopped_ = false;      // guarded by mu_
  bool handed_over_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace ferry::server
