#include "tests/testing/data.h"

#include <openssl/evp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "tests/testing/sockets.h"

namespace ferry::testing {

uint64_t RandomStream::Next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void RandomStream::Fill(char* out, size_t n) {
  size_t i = 0;
  // Finish a word left over from the last call so the stream does not depend
  // on how it is cut into chunks.
  while (i < n && pending_bytes_ > 0) {
    out[i++] = static_cast<char>(pending_ & 0xff);
    pending_ >>= 8;
    --pending_bytes_;
  }
  for (; i + 8 <= n; i += 8) {
    uint64_t v = Next();
    std::memcpy(out + i, &v, 8);  // little endian: byte k is (v >> 8k)
  }
  if (i < n) {
    pending_ = Next();
    pending_bytes_ = 8;
    while (i < n) {
      out[i++] = static_cast<char>(pending_ & 0xff);
      pending_ >>= 8;
      --pending_bytes_;
    }
  }
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  RandomStream(seed).Fill(s.data(), n);
  return s;
}

struct Sha256::Ctx {
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  ~Ctx() { EVP_MD_CTX_free(md); }
};

Sha256::Sha256() : ctx_(std::make_unique<Ctx>()) {
  EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr);
}

Sha256::~Sha256() = default;

void Sha256::Update(const void* data, size_t n) { EVP_DigestUpdate(ctx_->md, data, n); }

std::string Sha256::HexDigest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_->md, digest, &len);
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 15]);
  }
  return out;
}

std::string Sha256Hex(absl::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.HexDigest();
}

Transfer SendRandom(int fd, uint64_t total, uint64_t seed, size_t chunk) {
  Transfer t;
  RandomStream rng(seed);
  Sha256 hash;
  std::vector<char> buf(chunk);
  while (t.bytes < total) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, total - t.bytes));
    rng.Fill(buf.data(), n);
    hash.Update(buf.data(), n);
    size_t off = 0;
    while (off < n) {
      ssize_t r = ::send(fd, buf.data() + off, n - off, MSG_NOSIGNAL);
      if (r < 0) {
        if (errno == EINTR) continue;
        t.err = errno == EWOULDBLOCK ? EAGAIN : errno;
        t.bytes += off;
        t.sha256 = hash.HexDigest();  // of what was generated, for diagnostics only
        return t;
      }
      off += static_cast<size_t>(r);
    }
    t.bytes += n;
  }
  t.sha256 = hash.HexDigest();
  return t;
}

Transfer ReceiveAndHash(int fd, uint64_t max) {
  Transfer t;
  Sha256 hash;
  std::vector<char> buf(256 * 1024);
  while (t.bytes < max) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), max - t.bytes));
    ssize_t r = ::recv(fd, buf.data(), want, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      t.err = errno == EWOULDBLOCK ? EAGAIN : errno;
      break;
    }
    if (r == 0) {
      t.eof = true;
      break;
    }
    hash.Update(buf.data(), static_cast<size_t>(r));
    t.bytes += static_cast<uint64_t>(r);
  }
  t.sha256 = hash.HexDigest();
  return t;
}

std::string RandomSha256(uint64_t total, uint64_t seed) {
  RandomStream rng(seed);
  Sha256 hash;
  std::vector<char> buf(256 * 1024);
  for (uint64_t done = 0; done < total;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), total - done));
    rng.Fill(buf.data(), n);
    hash.Update(buf.data(), n);
    done += n;
  }
  return hash.HexDigest();
}

uint64_t Scaled(uint64_t full, uint64_t min) {
  const char* env = std::getenv("FERRY_TEST_SCALE");
  if (env == nullptr || *env == '\0') return full;
  double f = std::strtod(env, nullptr);
  if (!(f > 0) || f >= 1) return full;
  uint64_t n = static_cast<uint64_t>(static_cast<double>(full) * f);
  return n < min ? std::min(min, full) : n;
}

}  // namespace ferry::testing
