#pragma once

// A black hole for connect timeouts: two network namespaces of our own,
// "client" and "target", joined by a veth pair (10.213.77.1/30 in the client
// namespace, 10.213.77.2/30 in the target one), where the target namespace
// drops every incoming TCP SYN (iptables, else nft). A connect from the client
// namespace to 10.213.77.2 never gets an answer. Nothing is added to the
// namespace the test runs in. The destructor deletes both namespaces (which
// removes the veth pair) — also when the test failed.

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace ferry::testing {

class BlackholeNetns {
 public:
  // Why this cannot run here ("not root", "no ip command"), or "" if it can.
  static std::string Unsupported();
  static absl::StatusOr<std::unique_ptr<BlackholeNetns>> Create();
  ~BlackholeNetns();

  // The address whose SYNs are dropped, as seen from the client namespace.
  std::string target_ip() const { return "10.213.77.2"; }

  // Runs `fn` on a new thread that has entered the client namespace, and
  // waits for it. Sockets it creates, and threads it starts (a Server's
  // workers), live in that namespace.
  absl::Status RunInClientNs(const std::function<void()>& fn);

 private:
  BlackholeNetns() = default;
  std::string ip_;
  std::string client_;
  std::string target_;
};

}  // namespace ferry::testing
