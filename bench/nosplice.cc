// nosplice: runs a command under a seccomp filter that makes splice(2) fail
// with EINVAL, the error a socket type without splice support gives. ferry's
// pump then falls back to copy mode for good on that direction, which lets
// the benchmark compare copy and splice in the same binary. No tracer is
// involved: the kernel answers the syscall itself.
//
//   nosplice [--control] -- COMMAND [ARGS...]
//
// --control installs the same kind of filter on a syscall nobody here makes
// (acct), to measure what a seccomp filter itself costs per syscall.
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>

#if defined(__x86_64__)
#define BENCH_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define BENCH_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "nosplice: unknown architecture"
#endif

int main(int argc, char** argv) {
  int i = 1;
  bool control = false;
  if (i < argc && std::string(argv[i]) == "--control") {
    control = true;
    ++i;
  }
  if (i < argc && std::string(argv[i]) == "--") ++i;
  if (i >= argc) {
    std::fprintf(stderr, "usage: nosplice [--control] -- COMMAND [ARGS...]\n");
    return 2;
  }
  const unsigned nr = control ? __NR_acct : __NR_splice;
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, BENCH_AUDIT_ARCH, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EINVAL & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof(filter) / sizeof(filter[0])), filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    std::perror("prctl(PR_SET_NO_NEW_PRIVS)");
    return 1;
  }
  if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
    std::perror("seccomp");
    return 1;
  }
  execvp(argv[i], argv + i);
  std::fprintf(stderr, "nosplice: exec %s: %s\n", argv[i], std::strerror(errno));
  return 127;
}
