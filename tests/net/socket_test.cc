#include "pkg/net/socket.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "gtest/gtest.h"

namespace ferry::net {
namespace {

int GetInt(int fd, int level, int name) {
  int v = -1;
  socklen_t len = sizeof(v);
  ::getsockopt(fd, level, name, &v, &len);
  return v;
}

// The relay sets TCP_NODELAY on the listener only; every accepted socket
// must carry it, or small messages would wait for Nagle.
TEST(ListenSocketTest, AcceptedSocketsInheritNoDelay) {
  for (const char* literal : {"127.0.0.1:0", "[::1]:0"}) {
    auto address = Address::ParseLiteral(literal);
    ASSERT_TRUE(address.ok());
    auto listener = ListenSocket(*address, /*reuse_port=*/true, 16);
    if (!listener.ok() && std::string(literal) == "[::1]:0") continue;  // no IPv6 here
    ASSERT_TRUE(listener.ok()) << listener.status();
    auto bound = LocalAddress(listener->get());
    ASSERT_TRUE(bound.ok());
    base::Fd client;
    int err = StartConnect(*bound, nullptr, &client);
    ASSERT_TRUE(err == 0 || err == EINPROGRESS) << err;
    base::Fd accepted;
    for (int i = 0; i < 1000 && !accepted.valid(); ++i) {
      accepted.Reset(::accept4(listener->get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!accepted.valid()) ::usleep(1000);
    }
    ASSERT_TRUE(accepted.valid()) << literal;
    EXPECT_EQ(GetInt(accepted.get(), IPPROTO_TCP, TCP_NODELAY), 1) << literal;
  }
}

TEST(ListenSocketTest, SecondBindWithoutReusePortIsRefused) {
  auto address = Address::ParseLiteral("127.0.0.1:0");
  auto first = ListenSocket(*address, /*reuse_port=*/true, 16);
  ASSERT_TRUE(first.ok());
  auto bound = LocalAddress(first->get());
  auto second = ListenSocket(*bound, /*reuse_port=*/false, 16);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("Address already in use"), std::string::npos)
      << second.status();
}

}  // namespace
}  // namespace ferry::net
