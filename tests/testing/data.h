#pragma once

// Random payloads and SHA-256 digests, streamed so a 64 MiB transfer never
// sits in memory: the sender generates and hashes chunk by chunk, the
// receiver hashes what it reads, and the test compares the hex digests.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"

namespace ferry::testing {

// A deterministic byte stream (splitmix64) seeded by `seed`; not for crypto.
class RandomStream {
 public:
  explicit RandomStream(uint64_t seed) : state_(seed) {}
  void Fill(char* out, size_t n);

 private:
  uint64_t Next();
  uint64_t state_;
  uint64_t pending_ = 0;
  int pending_bytes_ = 0;
};

std::string RandomBytes(size_t n, uint64_t seed);

// Incremental SHA-256 (OpenSSL EVP).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(const void* data, size_t n);
  void Update(absl::string_view data) { Update(data.data(), data.size()); }
  // Lowercase hex; ends the hash.
  std::string HexDigest();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

std::string Sha256Hex(absl::string_view data);

// What a streaming transfer did: bytes moved and their digest, then how it
// ended (eof for a reader that saw EOF; err = errno, EAGAIN for a timeout).
struct Transfer {
  uint64_t bytes = 0;
  std::string sha256;
  bool eof = false;
  int err = 0;
};

// Sends `total` bytes of RandomStream(seed) in chunks of `chunk`.
Transfer SendRandom(int fd, uint64_t total, uint64_t seed, size_t chunk = 256 * 1024);
// Reads and hashes until EOF, an error or `max` bytes.
Transfer ReceiveAndHash(int fd, uint64_t max = UINT64_MAX);
// The digest of the first `total` bytes of RandomStream(seed).
std::string RandomSha256(uint64_t total, uint64_t seed);

// $FERRY_TEST_SCALE (a factor in (0, 1], default 1) applied to `full`, at
// least `min`. Sanitizer runs may shrink bulk transfers; the default is full size.
uint64_t Scaled(uint64_t full, uint64_t min = 1 << 20);

}  // namespace ferry::testing
